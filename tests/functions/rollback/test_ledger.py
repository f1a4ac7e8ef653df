"""The ledger rows rollback records for the release metrics (docs/rollback.md, "Ledger
rows"), proven by Pub/Sub pushes into the function against real PostgreSQL."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from shared.events import EventType, MigrationResult, OpsEvent, ReleaseResult
from shared.release import release_id, release_trace_id
from tests.functions.rollback.conftest import REGION, Env
from tests.helpers import GOLDEN, envelope, push

COMMIT = "4f1c2a9e7b3d5c8a0e6f1b2d3c4a5e6f7a8b9c0d"  # pragma: allowlist secret


def release_event(env: Env, kind: EventType, finished: datetime) -> OpsEvent[ReleaseResult]:
    result = ReleaseResult(
        service=env.service,
        region=REGION,
        commit_sha=COMMIT,
        release_id=release_id(env.service, COMMIT),
        build_id="8f6b2c1e-3a4d-4b5c-9e7f-0a1b2c3d4e5f",
        revision=f"{env.service}-4f1c2a9e-abc",
        previous_revision=f"{env.service}-00001-r1",
        image=f"europe-west1-docker.pkg.dev/sight-local/sight/{env.service}:{COMMIT}",
        phases={"deploy": 1200.0, "smoke_tag": 300.5},
        reason="smoke on the tag URL failed" if kind is EventType.RELEASE_FAILED else None,
        started_at=finished - timedelta(seconds=90),
        finished_at=finished,
    )
    return OpsEvent.new(kind, result, source="sightops-deploy")


def rows(env: Env, where: str, **params: Any) -> list[dict[str, Any]]:
    """ops.actions rows matching ``where``, oldest first."""
    with env.deps.engine.connect() as conn:
        found = conn.execute(
            text(
                "SELECT kind, status, service, trigger_event_id, dedupe_key, detail, started_at,"
                f" finished_at, release_id, trace_id FROM ops.actions WHERE {where} ORDER BY id"
            ),
            params,
        ).all()
    return [dict(row._mapping) for row in found]


def ledger(env: Env, kind: str) -> list[dict[str, Any]]:
    return rows(env, "kind = :k AND service = :s", k=kind, s=env.service)


def incident_ledger(env: Env, incident_id: str) -> list[dict[str, Any]]:
    return rows(env, "kind = 'incident' AND detail->>'incident_id' = :i", i=incident_id)


def outcome(env: Env, event_id: str) -> str | None:
    with env.deps.engine.connect() as conn:
        value = conn.execute(
            text(
                "SELECT outcome FROM ops.event_receipts WHERE consumer = 'rollback'"
                " AND event_id = :id"
            ),
            {"id": event_id},
        ).scalar_one_or_none()
    return None if value is None else str(value)


@pytest.mark.parametrize(
    "kind",
    [EventType.RELEASE_DEPLOYED, EventType.RELEASE_PROMOTED, EventType.RELEASE_FAILED],
    ids=lambda k: k.value,
)
def test_each_release_event_on_ops_events_becomes_one_release_row(
    env: Env, kind: EventType
) -> None:
    finished = datetime(2025, 6, 2, 11, 20, 29, 300000, tzinfo=UTC)
    event = release_event(env, kind, finished)
    body = envelope(*event.to_pubsub())

    assert push(env.client, "ops-events", body).status_code == 200
    assert push(env.client, "ops-events", body).status_code == 200  # a redelivery

    [row] = ledger(env, "release")
    release = release_id(env.service, COMMIT)
    assert row["status"] == kind.value.rsplit(".", 1)[1]
    assert row["trigger_event_id"] == event.id
    assert row["dedupe_key"] == f"release:{event.id}"
    assert row["started_at"] == row["finished_at"] == finished
    assert row["detail"] == event.data.model_dump(mode="json")
    assert (row["release_id"], row["trace_id"]) == (release, release_trace_id(release))
    assert outcome(env, event.id) == "handled"


def test_other_ops_events_are_skipped_without_a_row(env: Env) -> None:
    """The emulator does not apply the subscription's filter: the handler skips."""
    migration = OpsEvent.new(
        EventType.MIGRATION_SUCCEEDED,
        MigrationResult(build_id="b-1", commit_sha=COMMIT, service=env.service),
        source="migrate",
    )
    assert push(env.client, "ops-events", envelope(*migration.to_pubsub())).status_code == 200
    assert outcome(env, migration.id) == "skipped"
    assert ledger(env, "release") == []
    assert env.actions() == []


def test_every_incident_state_is_recorded_before_rollback_decides(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    started = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=2)
    opened = json.loads(env.incident(v3, started=started))
    incident_id = opened["incident"]["incident_id"]
    closed = json.loads(json.dumps(opened))
    ended = started + timedelta(minutes=1)
    closed["incident"].update(state="closed", ended_at=int(ended.timestamp()))

    assert push(env.client, "monitoring-alerts", envelope(opened, {})).status_code == 200
    assert push(env.client, "monitoring-alerts", envelope(closed, {})).status_code == 200

    open_row, closed_row = incident_ledger(env, incident_id)
    assert (open_row["status"], open_row["service"]) == ("open", env.service)
    assert open_row["started_at"] == open_row["finished_at"] == started
    assert open_row["dedupe_key"] == f"incident:{incident_id}:open"
    assert open_row["detail"] == {
        "incident_id": incident_id,
        "policy_name": opened["incident"]["policy_name"],
        "revision": v3,
        "auto_rollback": True,
        "started_at": started.isoformat(),
        "ended_at": None,
    }
    assert (closed_row["status"], closed_row["started_at"]) == ("closed", ended)
    assert closed_row["detail"]["ended_at"] == ended.isoformat()
    # ...and the decision still happened: the open incident rolled traffic back.
    assert env.serving() == {v1: 100}


def test_an_incident_rollback_does_not_act_on_is_still_recorded_once(env: Env) -> None:
    """Not auto_rollback, and a second copy through the webhook: one row, no decision."""
    env.deploy()
    body = json.loads(env.incident(None, policy_user_labels={}))
    incident_id = body["incident"]["incident_id"]
    webhook = {"origin": "webhook", "source": "alert_intake"}

    assert push(env.client, "monitoring-alerts", envelope(body, {})).status_code == 200
    assert push(env.client, "monitoring-alerts", envelope(body, webhook)).status_code == 200

    [row] = incident_ledger(env, incident_id)
    assert (row["status"], row["service"]) == ("open", env.service)
    assert row["detail"]["auto_rollback"] is False
    assert row["detail"]["revision"] is None
    assert env.actions("rollback") == []


def test_a_console_test_notification_is_not_recorded_as_an_incident(env: Env) -> None:
    body = json.loads((GOLDEN / "monitoring" / "test_notification.json").read_text())
    body["incident"]["incident_id"] = f"test-{uuid.uuid4().hex[:8]}"
    assert push(env.client, "monitoring-alerts", envelope(body, {})).status_code == 200
    assert incident_ledger(env, body["incident"]["incident_id"]) == []
