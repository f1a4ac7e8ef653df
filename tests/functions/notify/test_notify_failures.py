"""notify when things go wrong: poison messages, routes that can never succeed, a Slack
outage while groups are due, and a group whose webhook dies while alerts keep coming."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from shared.notify import notifier_for
from shared.runtime import Deps
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.functions.notify.test_notify_events import BUILDS_PATH, actions, golden, incident_body
from tests.functions.notify.test_notify_grouping import alert
from tests.helpers import envelope, push

#: Posts slack_sdk makes for one message Slack keeps failing with 5xx: 1 + 2 retries.
ATTEMPTS_PER_MESSAGE = 3


def rejected(deps: Deps, message_id: str) -> Any:
    with deps.engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT reason, payload FROM ops.rejected_events"
                " WHERE consumer = 'notify' AND event_id = :id"
            ),
            {"id": message_id},
        ).one()


def failed_group_records(deps: Deps, policy: str) -> list[dict[str, Any]]:
    with deps.engine.connect() as conn:
        return [
            dict(d)
            for d in conn.execute(
                text(
                    "SELECT detail FROM ops.actions WHERE kind = 'notification'"
                    " AND status = 'failed' AND detail->'labels'->>'policy_name' = :p"
                ),
                {"p": policy},
            ).scalars()
        ]


def due_groups(make_notify: NotifyFactory, count: int, **notify: Any) -> tuple[Any, Deps]:
    """A notify app with ``count`` alert groups that are due and not yet flushed (with a
    scheduled flush, their holders acknowledge without waiting for them)."""
    client, deps = make_notify(
        group_wait_s=1.0, inline_wait_max_s=0, scheduled_flush=True, **notify
    )
    tag = uuid.uuid4().hex[:6]
    for n in range(count):
        body = alert(f"due {tag} {n}", f"0.due{n}-{tag}")
        assert push(client, "monitoring-alerts", body).status_code == 200
    time.sleep(1.1)  # past group_wait: every group is due now
    assert notifier_for(deps).store.pending_count() == count
    return client, deps


# ---- poison messages --------------------------------------------------------------------


def test_incident_with_an_out_of_range_start_time_is_rejected_and_kept(
    make_notify: NotifyFactory, sink: Any
) -> None:
    client, deps = make_notify()
    data = incident_body(incident_id=f"0.range-{uuid.uuid4().hex[:6]}", started_at=1e300)
    body = envelope(data)
    assert push(client, "monitoring-alerts", body).status_code == 200
    row = rejected(deps, body["message"]["messageId"])
    assert "field 'incident.started_at': epoch seconds out of range" in row.reason
    assert bytes(row.payload) == data
    assert sink[0].received() == []


def test_incident_id_with_a_nul_character_is_rejected_and_kept(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """NUL cannot be stored or grouped on: an id carrying one is invalid (tests/functions/
    notify/test_poison_notify.py has the other cases); the kept row escapes it."""
    state, _ = sink
    client, deps = make_notify(group_wait_s=0.1)
    incident_id = f"0.nul\x00{uuid.uuid4().hex[:6]}"
    body = envelope(incident_body(incident_id=incident_id, state="open\x00"))
    assert push(client, "monitoring-alerts", body).status_code == 200
    assert state.messages() == []
    assert "incident.incident_id" in rejected(deps, body["message"]["messageId"]).reason


# ---- a route that can never succeed -------------------------------------------------------


def test_a_route_whose_secret_cannot_be_read_fails_alone_and_healthy_routes_post_once(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """SecretError is not retryable: the failing route is recorded as failed and the
    delivery acknowledged, so the healthy route is not posted to again on redelivery."""
    from shared.secrets import Secrets
    from standins import secretmanager, serve

    state, _ = sink
    with serve(secretmanager.create_app(secretmanager.SecretManagerState())) as sm_server:
        client, deps = make_notify(
            {
                "routes": [
                    {"name": "everything", "webhook": "default", "continue": True},
                    {
                        "name": "oncall",
                        "match": {"types": ["sight.ops.rollback.f*"]},
                        "webhook": "projects/sight-local/secrets/no-such-hook/versions/latest",
                    },
                ]
            },
            settings_update={"secret_manager_endpoint": sm_server.url},
        )
        deps.__dict__["secrets"] = Secrets(deps.settings)
        data, attributes = golden("ops", "rollback_failed")
        body = envelope(data, attributes)
        assert push(client, "ops-events", body).status_code == 200
        assert push(client, "ops-events", body).status_code == 200  # a redelivery: duplicate
    assert len(state.messages(WEBHOOK_PATH)) == 1
    recorded = {a["route"]: a for a in actions(deps, event_id=attributes["id"])}
    assert recorded["everything"]["status"] == "sent"
    assert recorded["oncall"]["status"] == "failed"
    assert "cannot access secret" in recorded["oncall"]["error"]


# ---- Slack down while groups are due ------------------------------------------------------


def test_during_a_slack_outage_a_delivery_tries_only_its_own_message(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, deps = due_groups(make_notify, 3)
    state.inject_fault(503, count=1000)
    response = push(client, "cloud-builds", envelope(*golden("cloudbuild", "failure")))
    assert response.status_code == 503  # its own message: Pub/Sub redelivers it
    assert len(state.received()) == ATTEMPTS_PER_MESSAGE
    assert notifier_for(deps).store.pending_count() == 3  # nothing lost


def test_flushing_other_groups_stops_at_the_first_transient_failure(
    make_notify: NotifyFactory, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Builds go to a healthy webhook, the groups' webhook is down: one group is tried,
    the rest wait, and the next delivery does not try again at once."""
    state, running = sink
    monkeypatch.setenv("TEST_BUILDS_WEBHOOK", running.url + BUILDS_PATH)
    routes = {
        "routes": [
            {"name": "builds", "match": {"kinds": ["build"]}, "webhook": "env:TEST_BUILDS_WEBHOOK"}
        ]
    }
    client, deps = due_groups(make_notify, 3, config=routes)
    state.inject_fault(503, count=1000, path=WEBHOOK_PATH)
    for _ in range(2):
        response = push(client, "cloud-builds", envelope(*golden("cloudbuild", "failure")))
        assert response.status_code == 200
    assert len(state.messages(BUILDS_PATH)) == 2
    assert len(state.received(WEBHOOK_PATH)) == ATTEMPTS_PER_MESSAGE  # one group, once
    assert notifier_for(deps).store.pending_count() == 3


def test_flushing_other_groups_starts_none_once_the_budget_is_used(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """With a zero budget a delivery flushes one other group (a backlog still drains)."""
    state, _ = sink
    client, deps = due_groups(make_notify, 3, flush_due_budget_s=0)
    response = push(client, "cloud-builds", envelope(*golden("cloudbuild", "failure")))
    assert response.status_code == 200
    texts = [m.body["text"] for m in state.messages()]
    assert sum("FAILURE" in t for t in texts) == 1
    assert sum("[FIRING:1]" in t for t in texts) == 1
    assert notifier_for(deps).store.pending_count() == 2


# ---- a group whose webhook dies -----------------------------------------------------------


def test_alerts_appended_while_a_group_message_fails_permanently_are_recorded(
    make_notify: NotifyFactory, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Slack answers 410 to the group's message; an alert of the same group arrives while
    that post is in flight. The group is dropped, and the late alert is in the record."""
    state, _ = sink
    client, deps = make_notify(group_wait_s=0.2, group_interval_s=30)
    policy = f"archived {uuid.uuid4().hex[:6]}"
    state.inject_fault(error="channel_is_archived")
    late: list[int] = []
    receive = state.receive

    def append_late_alert_while_posting(path: str, raw: bytes, content_type: str) -> Any:
        if not late:
            late.append(push(client, "monitoring-alerts", alert(policy, "0.late")).status_code)
        return receive(path, raw, content_type)

    monkeypatch.setattr(state, "receive", append_late_alert_while_posting)
    assert push(client, "monitoring-alerts", alert(policy, "0.first")).status_code == 200
    assert late == [200]
    [record] = failed_group_records(deps, policy)
    assert record["firing"] == ["0.first"]
    assert record["dropped_unsent"] == ["0.late"]
    assert notifier_for(deps).store.pending_count() == 0
    assert json.dumps(record).count("channel_is_archived") == 1
