"""Alert grouping, Alertmanager-style, in a push-triggered function (docs/notify.md)."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import functions_framework
import pytest

from shared.notify import needs_update
from tests.functions.notify.conftest import SOURCE, NotifyFactory
from tests.functions.notify.test_notify_events import incident_body
from tests.helpers import envelope, push


def alert(policy: str, incident_id: str, state: str = "open", **changes: Any) -> dict[str, Any]:
    name = "incident_1_2_open" if state == "open" else "incident_1_2_closed"
    return envelope(incident_body(name, incident_id=incident_id, policy_name=policy, **changes))


def mentioned(messages: list[Any], incident_id: str) -> bool:
    return any(incident_id in json.dumps(m.body) for m in messages)


def test_a_burst_in_one_group_becomes_one_message_after_group_wait(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=1.0, group_interval_s=5)
    policy = f"burst {uuid.uuid4().hex[:6]}"
    ids = [f"0.burst{n}" for n in range(6)]
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        codes = list(
            pool.map(lambda i: push(client, "monitoring-alerts", alert(policy, i)).status_code, ids)
        )
    assert codes == [200] * 6
    [message] = state.messages()
    assert message.body["blocks"][0]["text"]["text"] == f"[FIRING:6] {policy}"
    assert all(mentioned([message], i) for i in ids)
    assert time.monotonic() - started >= 1.0


def test_groups_are_keyed_by_policy_and_service(make_notify: NotifyFactory, sink: Any) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=0.3)
    tag = uuid.uuid4().hex[:6]
    bodies = [
        alert(f"a {tag}", "0.a1"),
        alert(f"b {tag}", "0.b1"),
        alert(f"a {tag}", "0.a2", policy_user_labels={"service": "sight-worker"}),
    ]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda b: push(client, "monitoring-alerts", b), bodies))
    headers = sorted(m.body["blocks"][0]["text"]["text"] for m in state.messages())
    assert headers == [f"[FIRING:1] a {tag}", f"[FIRING:1] a {tag}", f"[FIRING:1] b {tag}"]


def test_closing_every_incident_sends_one_resolved_message(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=0.2, group_interval_s=0.6)
    policy = f"close {uuid.uuid4().hex[:6]}"
    push(client, "monitoring-alerts", alert(policy, "0.c1"))
    push(client, "monitoring-alerts", alert(policy, "0.c2"))
    push(client, "monitoring-alerts", alert(policy, "0.c1", "closed"))
    push(client, "monitoring-alerts", alert(policy, "0.c2", "closed"))
    titles = [m.body["blocks"][0]["text"]["text"] for m in state.messages()]
    assert titles[0] == f"[FIRING:1] {policy}"
    assert titles[-1] == f"[RESOLVED] {policy}"
    assert len(titles) <= 4
    assert mentioned(state.messages()[-1:], "0.c2")


def test_a_late_open_after_close_does_not_reopen_the_alert(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """Pub/Sub does not order: the open may arrive after the close of the same incident."""
    state, _ = sink
    client, _ = make_notify(group_wait_s=0.2, group_interval_s=0.3)
    policy = f"late {uuid.uuid4().hex[:6]}"
    assert push(client, "monitoring-alerts", alert(policy, "0.l1", "closed")).status_code == 200
    assert push(client, "monitoring-alerts", alert(policy, "0.l1")).status_code == 200
    assert state.messages() == []


def test_a_group_due_beyond_the_inline_wait_uses_redelivery_as_its_timer(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """503 while the group is pending; Pub/Sub's redelivery comes back and flushes it."""
    state, _ = sink
    client, _ = make_notify(group_wait_s=1.5, inline_wait_max_s=0.5)
    body = alert(f"timer {uuid.uuid4().hex[:6]}", "0.t1")
    assert push(client, "monitoring-alerts", body).status_code == 503
    assert state.messages() == []
    time.sleep(1.1)  # Pub/Sub's backoff
    assert push(client, "monitoring-alerts", body).status_code == 200
    assert len(state.messages()) == 1


def test_with_a_scheduled_flush_a_far_group_is_acknowledged_and_flushed_by_it(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=1.0, inline_wait_max_s=0.2, scheduled_flush=True)
    body = alert(f"scheduled {uuid.uuid4().hex[:6]}", "0.s1")
    assert push(client, "monitoring-alerts", body).status_code == 200
    assert state.messages() == []
    flush = functions_framework.create_app(
        target="notify_flush", source=str(SOURCE), signature_type="http"
    ).test_client()
    time.sleep(1.0)
    assert flush.post("/").get_json() == {"flushed": 1}
    assert len(state.messages()) == 1


def test_throttled_slack_leaves_the_group_pending_until_redelivery(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    state.rate_limit(count=3, retry_after=1)  # more than the in-process retries absorb
    client, _ = make_notify(group_wait_s=0.1)
    body = alert(f"throttled {uuid.uuid4().hex[:6]}", "0.r1")
    assert push(client, "monitoring-alerts", body).status_code == 503
    assert push(client, "monitoring-alerts", body).status_code == 200
    assert len(state.messages()) == 1


def test_an_unchanged_firing_group_is_repeated_by_the_scheduled_flush(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=0.1, repeat_interval_s=0.5)
    policy = f"repeat {uuid.uuid4().hex[:6]}"
    assert push(client, "monitoring-alerts", alert(policy, "0.p1")).status_code == 200
    flush = functions_framework.create_app(
        target="notify_flush", source=str(SOURCE), signature_type="http"
    ).test_client()
    assert flush.post("/").get_json() == {"flushed": 0}
    time.sleep(0.6)
    assert flush.post("/").get_json() == {"flushed": 1}
    reasons = [m.body["blocks"][-1]["elements"][0]["text"] for m in state.messages()]
    assert len(reasons) == 2 and "repeat interval elapsed" in reasons[1]


@pytest.mark.parametrize(
    ("firing", "resolved", "notified", "last", "expected"),
    [
        ({"a"}, set(), frozenset(), 0.0, "first notification"),
        (set(), {"a"}, frozenset(), 0.0, None),
        ({"a", "b"}, set(), frozenset({"a"}), 100.0, "new alerts in group"),
        (set(), {"a"}, frozenset({"a"}), 100.0, "all alerts resolved"),
        ({"a"}, {"b"}, frozenset({"a", "b"}), 100.0, "alerts resolved"),
        ({"a"}, set(), frozenset({"a"}), 100.0, None),
        ({"a"}, set(), frozenset({"a"}), 10.0, "repeat interval elapsed"),
    ],
)
def test_flush_decisions_follow_alertmanagers_dedup_stage(
    firing: set[str],
    resolved: set[str],
    notified: frozenset[str],
    last: float,
    expected: str | None,
) -> None:
    assert needs_update(firing, resolved, notified, last, repeat_interval=50, now=110.0) == expected
