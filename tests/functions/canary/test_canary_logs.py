"""The canary's first step read from Cloud Run's request logs every 10 s (docs/canary.md,
"Reading the request logs" and "Ten-second ticks"): pushed into the function, against
real PostgreSQL, the Pub/Sub emulator, and the Cloud Run, Monitoring and Logging
stand-ins over their real wire protocols."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from shared.events import CanaryTick, EventType, OpsEvent
from tests.functions.canary.conftest import Env
from tests.helpers import envelope


def seconds(n: float) -> timedelta:
    return timedelta(seconds=n)


def ticks(env: Env) -> list[OpsEvent[CanaryTick]]:
    return [e for e in env.published.seen if e.type is EventType.CANARY_TICK]  # type: ignore[misc]


def test_a_failing_canary_is_rolled_back_on_its_request_logs_within_seconds(env: Env) -> None:
    env.configure(logs_steps=1)
    env.request()
    # 30 s of traffic in the logs only: Monitoring has no point for this service at all
    env.log_requests(range(3), stable=(95, 1), canary=(25, 8))
    env.tick(seconds(31))
    assert env.serving() == {env.stable: 100}
    assert env.row()["status"] == "rolled_back"
    [_, rolled] = env.actions()
    evidence = rolled["detail"]["evidence"]
    assert evidence["errors"]["outcome"] == "worse"
    # decided on its second 10-second period (a sequential test stops at its verdict),
    # long before Monitoring's first one-minute point could exist
    assert evidence["intervals"] == 2
    assert (evidence["errors"]["canary_requests"], evidence["errors"]["canary_events"]) == (50, 16)
    assert env.health() == {env.canary: "bad"}


def test_later_steps_are_read_from_monitoring(env: Env) -> None:
    env.configure(logs_steps=1, steps=[5, 50, 100])
    env.request()
    env.log_requests(range(12), stable=(400, 8), canary=(100, 2))
    env.tick(seconds(121))
    assert env.row()["percent"] == 50, env.row()["reason"]
    # the 50 % step: healthy request logs, but Monitoring shows the canary failing
    env.clock.now = None
    step_start = env.row()["step_started_at"]
    env.log_requests(range(13, 30), stable=(50, 0), canary=(50, 0))
    env.traffic(range(3, 6), canary=(300, 90), stable=(300, 3))
    assert step_start <= env.t0 + timedelta(minutes=3)
    env.tick(timedelta(minutes=6, seconds=1))
    assert env.row()["status"] == "rolled_back", env.row()["reason"]


def test_a_canary_on_a_log_step_sends_itself_the_next_tick_due_at_the_next_period(
    env: Env,
) -> None:
    env.configure(logs_steps=1)
    env.request()  # at t0, on the 10 s grid
    [first] = [t for t in ticks_after(env, 2)]
    due = first.data.not_before
    assert first.data.service == env.service
    assert due == env.t0 + seconds(10)
    env.log_requests(range(1), stable=(95, 1), canary=(5, 0))
    # the tick arrives at its time and analyses; it sends the next one, 10 s on
    env.clock.now = due
    env.deliver(first.to_pubsub())
    assert env.row()["last_analysis_at"] == due
    later = [t for t in ticks_after(env, 3) if t.data.not_before == due + seconds(10)]
    assert len(later) == 1
    # a scheduled tick within the same period sends a tick with the same id: one delivery
    env.tick(seconds(11))
    same = [t for t in ticks_after(env, 4) if t.data.not_before == due + seconds(10)]
    assert len({t.id for t in same}) == 1 and len(same) == 2


def ticks_after(env: Env, count: int) -> list[OpsEvent[CanaryTick]]:
    env.published.wait(count)
    return ticks(env)


def test_no_tick_is_sent_once_the_canary_leaves_its_log_steps(env: Env) -> None:
    env.configure(logs_steps=1, steps=[5, 100])
    env.request()
    env.log_requests(range(12), stable=(400, 8), canary=(100, 2))
    env.tick(seconds(121))
    assert env.row()["status"] == "promoted", env.row()["reason"]
    # started, its tick, promoted, release.promoted: the analysis that promoted sends none
    sent = ticks_after(env, 4)
    assert [t.data.not_before for t in sent] == [env.t0 + seconds(10)]


def test_a_tick_due_later_waits_for_its_time_before_it_is_handled(env: Env) -> None:
    env.configure(logs_steps=1)
    env.request()
    env.clock.now = None  # real time: the runtime waits against the deps' clock
    due = datetime.now(UTC) + seconds(0.6)
    tick = OpsEvent.new(
        EventType.CANARY_TICK,
        CanaryTick(service=env.service, region="europe-west1", not_before=due),
        source="canary",
    )
    started = time.monotonic()
    env.deliver_raw(envelope(*tick.to_pubsub()))
    assert time.monotonic() - started >= 0.5, "handled before it was due"
    assert env.row()["last_analysis_at"] >= due
