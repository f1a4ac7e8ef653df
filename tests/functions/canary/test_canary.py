"""The canary function through functions-framework (a Pub/Sub push into it), against
real PostgreSQL, the Pub/Sub emulator (what it publishes), the Cloud Run stand-in and the
Cloud Monitoring stand-in read over gRPC (docs/canary.md, "The function")."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import text

from shared.canary import AnalysisConfig, manual_promote
from shared.events import CanaryResult, EventType, ReleaseResult
from shared.pubsub import Publisher
from shared.release import release_trace_id
from shared.rollback._store import lock_service
from tests.functions.canary.conftest import Env
from tests.helpers import envelope


def minutes(n: float) -> timedelta:
    return timedelta(minutes=n)


def test_canary_request_gives_the_new_revision_its_first_step_and_records_it(env: Env) -> None:
    env.request()
    assert env.serving() == {env.stable: 95, env.canary: 5}
    row = env.row()
    assert (row["status"], row["percent"], row["stable_revision"]) == ("running", 5, env.stable)
    assert row["steps"] == [5, 25, 50, 100] and row["step_started_at"] == env.t0
    [action] = env.actions()
    assert (action["status"], action["actor"], action["release_id"]) == (
        "started",
        "automation",
        env.release,
    )
    assert action["trace_id"] == release_trace_id(env.release), "in the release's trace"
    assert action["detail"]["percent_before"] == 0 and action["detail"]["percent_after"] == 5
    [(kind, result)] = env.events(1)
    assert kind is EventType.CANARY_STARTED
    assert isinstance(result, CanaryResult)
    assert (result.action, result.percent_after, result.stable_revision) == (
        "started",
        5,
        env.stable,
    )
    # the same request again (a retried deploy): nothing more
    env.request()
    assert env.patches() == 1 and len(env.actions()) == 1


def test_canary_steps_then_promotes_a_revision_the_evidence_finds_not_worse(env: Env) -> None:
    env.configure(steps=[50, 75, 100])
    env.request()
    env.traffic(range(3))
    env.tick(minutes(3) + timedelta(seconds=1))
    assert env.serving() == {env.canary: 75, env.stable: 25}
    [_, stepped] = env.actions()
    assert (stepped["status"], stepped["detail"]["percent_after"]) == ("step", 75)
    assert stepped["detail"]["evidence"]["verdict"] == "promote_step"
    assert stepped["detail"]["evidence"]["errors"]["outcome"] == "not_worse"
    env.traffic(range(4, 7), canary=(900, 9), stable=(300, 3))
    env.tick(minutes(7) + timedelta(seconds=1))
    assert env.serving() == {env.canary: 100}
    assert env.row()["status"] == "promoted"
    assert env.health() == {env.canary: "good"}
    kinds = [kind for kind, _ in env.events(4)]
    assert kinds == [
        EventType.CANARY_STARTED,
        EventType.CANARY_STEPPED,
        EventType.CANARY_PROMOTED,
        EventType.RELEASE_PROMOTED,
    ]
    release = env.events(4)[3][1]
    assert isinstance(release, ReleaseResult)
    assert (release.via, release.revision, release.previous_revision) == (
        "canary",
        env.canary,
        env.stable,
    )


def test_canary_rolls_back_a_revision_failing_thirty_percent_against_one(env: Env) -> None:
    env.configure(steps=[50, 100])
    env.request()
    env.traffic(range(2), canary=(200, 60), stable=(200, 2))
    env.tick(minutes(2) + timedelta(seconds=1))
    assert env.serving() == {env.stable: 100}
    assert env.row()["status"] == "rolled_back"
    assert env.health() == {env.canary: "bad"}
    [_, rolled] = env.actions()
    assert rolled["status"] == "rollback"
    assert rolled["trace_id"] == release_trace_id(env.release), "a tick joins the release's trace"
    assert rolled["detail"]["evidence"]["errors"]["outcome"] == "worse"
    assert "canary worse than stable on errors" in rolled["detail"]["reason"]
    events = env.events(3)
    assert [kind for kind, _ in events] == [
        EventType.CANARY_STARTED,
        EventType.CANARY_ROLLED_BACK,
        EventType.RELEASE_FAILED,
    ]
    result = events[1][1]
    assert isinstance(result, CanaryResult)
    assert [s.action for s in result.steps] == ["started", "rollback"]


def test_canary_rolls_back_a_slow_revision_on_latency(env: Env) -> None:
    env.configure(steps=[50, 100])
    env.request()
    env.traffic(range(3), canary=(200, 0), stable=(200, 0), canary_latency_ms=240.0)
    env.tick(minutes(3) + timedelta(seconds=1))
    assert env.serving() == {env.stable: 100}
    [_, rolled] = env.actions()
    assert rolled["status"] == "rollback"
    assert "canary worse than stable on latency" in rolled["detail"]["reason"]
    assert rolled["detail"]["evidence"]["latency"]["outcome"] == "worse"


def test_canary_stops_and_touches_nothing_when_someone_else_changed_the_traffic(
    env: Env,
) -> None:
    env.configure(steps=[50, 100])
    env.request()
    env.pin(env.stable)  # a human moved everything back by hand
    patches = env.patches()
    env.traffic(range(2), canary=(0, 0), stable=(400, 4))
    env.tick(minutes(2) + timedelta(seconds=1))
    assert env.patches() == patches
    assert env.serving() == {env.stable: 100}
    row = env.row()
    assert row["status"] == "stopped"
    assert "someone else changed it; nothing moved" in row["reason"]
    [_, stopped] = env.actions()
    assert stopped["status"] == "stop"
    assert env.events(2)[1][0] is EventType.CANARY_STOPPED


def test_canary_freezes_instead_of_rolling_back_after_a_breaking_migration(
    env: Env, breaking_migration: Callable[..., None]
) -> None:
    env.configure(steps=[50, 100])
    env.request()
    breaking_migration(env.t0 + timedelta(seconds=20), label="c0ffee000005")
    env.traffic(range(2), canary=(200, 60), stable=(200, 2))
    env.tick(minutes(2) + timedelta(seconds=1))
    assert env.serving() == {env.stable: 50, env.canary: 50}, "traffic untouched"
    row = env.row()
    assert row["status"] == "frozen"
    assert "breaking migration c0ffee000005 applied since the canary started" in row["reason"]
    assert env.health() == {env.canary: "bad"}
    kind, held = env.events(2)[1]
    assert kind is EventType.CANARY_HELD
    assert isinstance(held, CanaryResult) and held.action == "frozen"


def test_a_doubled_tick_decides_once(env: Env) -> None:
    env.configure(steps=[50, 100])
    env.request()
    env.traffic(range(1), canary=(40, 0), stable=(40, 0))
    env.tick(minutes(1) + timedelta(seconds=1))  # too little evidence: waits
    second = env.tick(minutes(1) + timedelta(seconds=2))  # Scheduler fired twice
    assert env.row()["last_analysis_at"] == env.t0 + minutes(1) + timedelta(seconds=1)
    assert second.status_code == 200
    env.traffic(range(1, 3), canary=(200, 60), stable=(200, 2))
    message = env.tick_message(minutes(3) + timedelta(seconds=1))
    env.deliver(message)
    env.deliver(message)  # Pub/Sub redelivered it
    env.tick(minutes(3) + timedelta(seconds=5))
    assert env.patches() == 2, "the first step and one rollback"
    assert [a["status"] for a in env.actions()] == ["started", "rollback"]


def test_an_id_less_scheduler_tick_is_analysed_once_per_run_and_dedupes_on_its_message_id(
    env: Env,
) -> None:
    """Cloud Scheduler's tick has attributes ``type`` and ``source`` only (terraform/
    canary.tf): it must be analysed, a redelivery of one run must not decide again, and
    the next run (a new Pub/Sub message id) must. (The data names this test's service:
    the session's database holds other tests' canaries.)"""
    env.configure(steps=[50, 100])
    env.request()
    attributes = {"type": EventType.CANARY_TICK.value, "source": "cloud-scheduler"}
    data = json.dumps({"service": env.service}).encode()

    def run(message_id: str, after: timedelta) -> None:
        env.clock.now = env.t0 + after
        env.deliver_raw(envelope(data, attributes, message_id, publish_time=env.clock.now))

    first, second = (str(uuid.uuid4().int)[:16] for _ in range(2))  # the receipts persist
    env.traffic(range(1), canary=(40, 0), stable=(40, 0))
    run(first, minutes(1) + timedelta(seconds=1))  # too little evidence: waits
    assert env.row()["last_analysis_at"] == env.t0 + minutes(1) + timedelta(seconds=1)
    env.traffic(range(1, 3), canary=(200, 60), stable=(200, 2))
    run(first, minutes(3) + timedelta(seconds=1))  # the same run, redelivered
    assert env.serving() == {env.stable: 50, env.canary: 50}, "a duplicate decides nothing"
    run(second, minutes(3) + timedelta(seconds=2))  # the next run
    assert env.serving() == {env.stable: 100}
    with env.deps.engine.connect() as conn:
        triggers = conn.execute(
            text(
                "SELECT status, trigger_event_id FROM ops.actions"
                " WHERE service = :s AND kind = 'canary' ORDER BY id"
            ),
            {"s": env.service},
        ).all()
    assert [tuple(t) for t in triggers][1] == ("rollback", second)


def test_each_step_is_analysed_with_its_own_share_of_the_false_rollback_budget(
    env: Env,
) -> None:
    """5 -> 25 -> 50 -> 100 analyses three steps; the first gets half the budget
    (docs/canary.md, "The false-rollback budget"), not the equal third of step=None."""
    env.request()
    env.traffic(range(1), canary=(20, 0), stable=(380, 4))
    env.tick(minutes(1) + timedelta(seconds=1))  # too little evidence: waits
    evidence = env.row()["evidence"]
    config = AnalysisConfig(analysed_steps=3)
    for test in ("errors", "latency"):
        assert evidence[test]["rollback_at"] == pytest.approx(
            config.rollback_at_of(test, 0), abs=1e-4
        )
        assert evidence[test]["rollback_at"] != pytest.approx(config.rollback_at_of(test), abs=1e-4)


def test_canary_holds_for_a_human_at_the_time_limit_without_a_verdict(env: Env) -> None:
    env.configure(steps=[50, 100], max_step_s=120)
    env.request()
    env.traffic(range(3), canary=(10, 0), stable=(10, 0))
    env.tick(minutes(3) + timedelta(seconds=1))
    assert env.serving() == {env.stable: 50, env.canary: 50}
    row = env.row()
    assert row["status"] == "held"
    assert "holding for a human" in row["reason"]
    kind, held = env.events(2)[1]
    assert kind is EventType.CANARY_HELD
    assert isinstance(held, CanaryResult) and held.action == "hold"


def test_dry_run_decides_and_publishes_but_never_moves_traffic(env: Env) -> None:
    env.configure(dry_run=True)
    env.request()
    assert env.patches() == 0
    assert env.serving() == {env.stable: 100}
    [(kind, result)] = env.events(1)
    assert kind is EventType.CANARY_STARTED
    assert isinstance(result, CanaryResult) and result.dry_run
    assert result.reason.startswith("dry run: would route")


def test_manual_promote_is_recorded_as_the_operator(env: Env) -> None:
    env.configure(steps=[50, 100])
    env.request()
    env.clock.now = env.t0 + minutes(1)
    report = manual_promote(env.deps, env.service, actor="manual:alice")
    assert [d.kind for d in report.decisions] == ["promote"]
    assert env.serving() == {env.canary: 100}
    [_, promoted] = env.actions()
    assert (promoted["status"], promoted["actor"]) == ("promote", "manual:alice")
    assert env.health() == {env.canary: "good"}
    _, result = env.events(2)[1]
    assert isinstance(result, CanaryResult) and result.manual and result.actor == "manual:alice"


def test_a_tick_leaves_a_service_whose_lock_rollback_holds_to_the_next_tick(env: Env) -> None:
    env.configure(steps=[50, 100], lock_wait_s=0.2)
    env.request()
    env.traffic(range(2), canary=(200, 60), stable=(200, 2))
    with env.deps.engine.begin() as conn:  # rollback is deciding about this service
        lock_service(conn, env.service, 1.0)
        env.tick(minutes(2) + timedelta(seconds=1))
        assert env.row()["status"] == "running" and env.patches() == 1
    env.tick(minutes(2) + timedelta(seconds=2))
    assert env.row()["status"] == "rolled_back"


def test_events_that_could_not_be_published_go_out_with_the_next_tick(env: Env) -> None:
    dead = Publisher(
        env.deps.settings.model_copy(update={"pubsub_emulator_host": "127.0.0.1:9"}),
        timeout_s=0.3,
    )
    env.configure(steps=[50, 100], publisher=dead)
    env.request()
    assert env.serving() == {env.stable: 50, env.canary: 50}, "the decision stands"
    assert len(env.row()["outbox"]) == 1
    env.configure(steps=[50, 100])
    env.tick(minutes(1))
    assert env.events(1)[0][0] is EventType.CANARY_STARTED
    assert env.row()["outbox"] == []
    with env.deps.engine.connect() as conn:
        [action] = conn.execute(
            text("SELECT detail FROM ops.actions WHERE service = :s"), {"s": env.service}
        ).all()
    assert action.detail["event_type"] == "sight.ops.canary.started"
