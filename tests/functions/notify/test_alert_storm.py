"""Acceptance: an alert storm becomes a handful of messages, and nothing is lost.

1,000 incidents over 20 policies arrive within ~10 s (15 of the policies then close all
their incidents), pushed concurrently into notify through functions-framework. The
Slack sink answers some posts 429. Like Pub/Sub, the test redelivers every 503 after a
backoff until it is acknowledged. Then:

- at most one message per group per group window (decision times in ops.actions);
- each closed group ends with one [RESOLVED] message, each open group is still FIRING;
- none lost: every incident is named in some message (closed ones in a resolved one);
- none unhandled: every delivery ends acknowledged (2xx), none left to redeliver.
"""

from __future__ import annotations

import itertools
import json
import random
import threading
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

from sqlalchemy import text

from shared.notify import notifier_for
from tests.functions.notify.conftest import NotifyFactory
from tests.functions.notify.test_notify_events import incident_body
from tests.helpers import envelope, push

POLICIES = 20
PER_POLICY = 50
CLOSED_POLICIES = 15
GROUP_WAIT = 1.0
GROUP_INTERVAL = 2.0
STORM_S = 8.0
CLOSE_S = 2.0
WORKERS = 32


def test_alert_storm_of_1000_incidents_becomes_a_handful_of_messages_with_none_lost(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, deps = make_notify(
        group_wait_s=GROUP_WAIT,
        group_interval_s=GROUP_INTERVAL,
        repeat_interval_s=3600,
        own_engine=True,
        settings_update={"db_pool_size": 30, "db_max_overflow": 10},
    )
    tag = uuid.uuid4().hex[:6]
    policy = [f"storm {tag} policy {p:02d}" for p in range(POLICIES)]
    ids = {p: [f"0.{tag}p{p:02d}i{n:02d}" for n in range(PER_POLICY)] for p in range(POLICIES)}
    opens = [
        envelope(incident_body(incident_id=i, policy_name=policy[p]))
        for p in range(POLICIES)
        for i in ids[p]
    ]
    random.Random(5).shuffle(opens)
    closes = [
        envelope(incident_body("incident_1_2_closed", incident_id=i, policy_name=policy[p]))
        for p in range(CLOSED_POLICIES)
        for i in ids[p]
    ]
    random.Random(6).shuffle(closes)

    attempts: dict[str, int] = defaultdict(int)
    answers: dict[str, int] = {}
    lock = threading.Lock()

    def deliver(body: dict[str, Any]) -> None:
        """Pub/Sub's behaviour: redeliver a non-2xx answer after an exponential backoff."""
        key = body["message"]["messageId"]
        backoff = 0.25
        while True:
            status = push(client, "monitoring-alerts", body).status_code
            with lock:
                attempts[key] += 1
                answers[key] = status
            if status < 300 or attempts[key] >= 12:
                return
            time.sleep(backoff)
            backoff = min(backoff * 2, 4.0)

    stop = threading.Event()

    def throttle() -> None:
        """Slack's edge during the storm: every so often, a couple of 429s."""
        while not stop.wait(1.3) and time.monotonic() - started < STORM_S + CLOSE_S:
            state.rate_limit(count=2, retry_after=1)

    throttler = threading.Thread(target=throttle, daemon=True)
    started = time.monotonic()
    throttler.start()
    futures = []
    with ThreadPoolExecutor(WORKERS) as pool:
        schedule = [(n * STORM_S / len(opens), b) for n, b in enumerate(opens)]
        schedule += [(STORM_S + n * CLOSE_S / len(closes), b) for n, b in enumerate(closes)]
        for at, body in schedule:
            delay = at - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(deliver, body))
        submitted_s = time.monotonic() - started
        done, _ = wait(futures, timeout=90)
        stop.set()
    for future in done:
        future.result()
    elapsed = time.monotonic() - started

    # none unhandled: every delivery acknowledged in the end
    assert len(answers) == len(opens) + len(closes)
    assert {k: v for k, v in answers.items() if v >= 300} == {}
    assert submitted_s < STORM_S + CLOSE_S + 3, "the storm itself took ~10 s"
    store = notifier_for(deps).store
    pending = store.r.zrange(store.due_key, 0, -1)
    assert pending == [], "a group left pending with nobody to flush it"

    messages = state.messages()
    by_policy: dict[int, list[Any]] = defaultdict(list)
    for message in messages:
        header = message.body["blocks"][0]["text"]["text"]
        for p in range(POLICIES):
            if header.endswith(policy[p]):
                by_policy[p].append(message)
    assert sum(len(v) for v in by_policy.values()) == len(messages)

    for p in range(POLICIES):
        group = by_policy[p]
        dumped = [json.dumps(m.body) for m in group]
        # none lost: every incident of the group is named in one of its messages
        assert all(any(i in d for d in dumped) for i in ids[p]), policy[p]
        last = group[-1].body["blocks"][0]["text"]["text"]
        if p < CLOSED_POLICIES:
            assert last == f"[RESOLVED] {policy[p]}"
            assert sum("[RESOLVED]" in m.body["blocks"][0]["text"]["text"] for m in group) == 1
            shown_resolved = "".join(
                d.split("*Resolved (", 1)[1] if "*Resolved (" in d else d
                for d in dumped
                if "*Resolved (" in d or "[RESOLVED]" in d
            )
            assert all(i in shown_resolved for i in ids[p]), "every close was shown as resolved"
        else:
            assert last == f"[FIRING:{PER_POLICY}] {policy[p]}"

    # at most one message per group per group window: flush decision times
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT detail FROM ops.actions WHERE kind = 'notification' AND status = 'sent'"
                " AND detail ? 'flushed_at' AND detail->'labels'->>'policy_name' LIKE :p"
            ),
            {"p": f"storm {tag} %"},
        ).scalars()
        flushes: dict[str, list[float]] = defaultdict(list)
        for detail in rows:
            flushes[detail["group"]].append(float(detail["flushed_at"]))
    assert len(flushes) == POLICIES
    assert sum(len(v) for v in flushes.values()) == len(messages)
    for times in flushes.values():
        times.sort()
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(g >= GROUP_INTERVAL - 0.001 for g in gaps), gaps

    # The same rule as a total: no group can have sent more than one message per window
    # of the time the storm actually took (a loaded machine stretches it past 10 s).
    windows = elapsed / GROUP_INTERVAL + 2
    assert len(messages) <= POLICIES * windows
    statuses = [m.status for m in state.received()]
    print(
        f"\nstorm: {len(opens) + len(closes)} notifications -> {len(messages)} Slack messages "
        f"({statuses.count(429)} answered 429), "
        f"{sum(attempts.values()) - len(attempts)} redeliveries, {elapsed:.1f}s"
    )
