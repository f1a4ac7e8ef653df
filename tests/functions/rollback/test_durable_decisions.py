"""A traffic move is durable on its own (docs/rollback.md, "Decisions are durable on their
own"): the intent and the ``bad`` mark are committed before Cloud Run is called and the
outcome after, in ops.rollback_decisions, so a failure of the delivery's own COMMIT after
the move neither loses the mark nor makes the redelivery decide again.

The COMMIT failure is real: a deferred constraint trigger on ops.event_receipts
(``commit_faults``) raises when the receipt transaction commits, after the handler ran.
"""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import text

from shared.events import EventType, RollbackResult
from tests.functions.rollback.conftest import CommitFaults, Env
from tests.helpers import envelope, push


def incident_key(body: bytes) -> str:
    return f"incident:{json.loads(body)['incident']['incident_id']}:open"


def test_a_failed_commit_after_the_move_keeps_the_mark_and_publishes_one_succeeded(
    env: Env, commit_faults: CommitFaults
) -> None:
    v1, v2, v3 = env.deploy(newest_age=timedelta(minutes=10))
    env.seed_health(**{v1: "good", v2: "good"})
    env.configure(max_per_window=2)
    body = env.incident(v3)
    delivery = envelope(body, {})
    commit_faults.arm("rollback", incident_key(body))

    assert push(env.client, "monitoring-alerts", delivery).status_code == 503
    assert env.serving() == {v2: 100}, "Cloud Run was updated before the COMMIT failed"
    commit_faults.disarm("rollback", incident_key(body))
    assert push(env.client, "monitoring-alerts", delivery).status_code == 200  # redelivered

    assert env.patches() == 1, "the redelivery resumed the decision, it did not act again"
    assert env.health()[v3] == "bad", "the revision we moved away from stays bad"
    [decision] = env.decisions()
    assert (decision["status"], decision["verdict"]) == ("done", "succeeded")
    assert (decision["from_revision"], decision["to_revision"]) == (v3, v2)
    [action] = env.actions("rollback")
    assert action["status"] == "succeeded"
    assert action["detail"]["event_id"] == decision["event_id"]

    # The anti-flap count is one rollback, not two: with a cap of 2 per window, a failure
    # of v2 now still moves traffic (v1) instead of escalating.
    assert push(env.client, "smoke-tests", envelope(*env.smoke(False, v2))).status_code == 200
    assert env.serving() == {v1: 100}
    first, second = env.published.wait(2)
    assert first.type is EventType.ROLLBACK_SUCCEEDED
    assert first.id == decision["event_id"]
    result = first.data_as(RollbackResult)
    assert (result.from_revision, result.to_revision) == (v3, v2)
    assert second.type is EventType.ROLLBACK_SUCCEEDED, "not frozen by a double count"
    assert second.data_as(RollbackResult).from_revision == v2


def test_an_unlabelled_incident_whose_commit_failed_does_not_publish_a_false_failed(
    env: Env, commit_faults: CommitFaults
) -> None:
    """The redelivery used to decide again, see the service changed after the incident
    started (our own move) and escalate: rollback.failed right after rollback.succeeded."""
    v1, v2, v3 = env.deploy(newest_age=timedelta(minutes=10))
    env.seed_health(**{v1: "good", v2: "good"})
    body = env.incident(None)
    delivery = envelope(body, {})
    commit_faults.arm("rollback", incident_key(body))
    assert push(env.client, "monitoring-alerts", delivery).status_code == 503
    commit_faults.disarm("rollback", incident_key(body))
    assert push(env.client, "monitoring-alerts", delivery).status_code == 200
    assert env.serving() == {v2: 100}
    assert env.health()[v3] == "bad"

    # Proven by order: whatever the redelivery published comes before this skip.
    assert push(env.client, "smoke-tests", envelope(*env.smoke(False, v1))).status_code == 200
    kinds = [e.type for e in env.published.wait(2)]
    assert kinds == [EventType.ROLLBACK_SUCCEEDED, EventType.ROLLBACK_SKIPPED]


def test_a_lost_outcome_is_reconciled_from_cloud_run_and_republished_under_the_same_id(
    env: Env,
) -> None:
    """The outcome's own transaction fails after the move (the intent is committed): the
    redelivery reads Cloud Run, finds traffic on the target, and records the success
    without a second update; the event keeps its id, so notify reports it once."""
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    with env.deps.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION public.test_lose_outcome() RETURNS trigger"
                " LANGUAGE plpgsql AS $$ BEGIN"
                " RAISE EXCEPTION 'injected: outcome of % lost', NEW.decision_id; END $$"
            )
        )
        conn.execute(
            text(
                "CREATE TRIGGER test_lose_outcome BEFORE UPDATE ON ops.rollback_decisions"
                " FOR EACH ROW WHEN (NEW.status = 'done' AND NEW.service = '"
                + env.service
                + "') EXECUTE FUNCTION public.test_lose_outcome()"
            )
        )
    delivery = envelope(*env.smoke(False, v3))
    try:
        assert push(env.client, "smoke-tests", delivery).status_code == 503
    finally:
        with env.deps.engine.begin() as conn:
            conn.execute(text("DROP TRIGGER test_lose_outcome ON ops.rollback_decisions"))
    assert env.serving() == {v1: 100}
    assert [d["status"] for d in env.decisions()] == ["intent"]

    assert push(env.client, "smoke-tests", delivery).status_code == 200
    assert env.patches() == 1
    [decision] = env.decisions()
    assert (decision["status"], decision["verdict"]) == ("done", "succeeded")
    assert len(env.actions("rollback")) == 1
    events = env.published.wait(2)
    assert [e.type for e in events] == [EventType.ROLLBACK_SUCCEEDED] * 2
    assert {e.id for e in events} == {decision["event_id"]}
