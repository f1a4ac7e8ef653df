"""shared.rollback._store against the session's PostgreSQL: health evidence and breaking
migrations are read from declared columns (migration 0003), and migrate's recorder writes
the column rollback's freeze rule reads (the contract between the two)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text

from shared.migrate._record import RunRecorder
from shared.rollback import _store as store
from shared.runtime import Deps

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@pytest.fixture
def service(deps: Deps) -> Iterator[str]:
    name = f"store-{uuid.uuid4().hex[:8]}"
    yield name
    with deps.engine.begin() as conn:
        conn.execute(text("DELETE FROM ops.revisions WHERE service = :s"), {"s": name})
        conn.execute(text("DELETE FROM ops.actions WHERE service = :s"), {"s": name})


def mark(deps: Deps, service: str, health: Any, at: datetime) -> bool:
    with deps.engine.begin() as conn:
        return store.mark_health(
            conn,
            store.action_recorder(conn, None, lambda: NOW),
            service=service,
            revision="r-1",
            health=health,
            reason=f"{health} at {at:%H:%M}",
            evidence_time=at,
        )


def test_marks_are_ordered_by_the_evidence_time_in_the_column(deps: Deps, service: str) -> None:
    assert mark(deps, service, "bad", NOW)
    assert not mark(deps, service, "good", NOW - timedelta(minutes=1)), "older evidence"
    assert not mark(deps, service, "good", NOW), "a tie goes to bad"
    assert mark(deps, service, "bad", NOW)
    assert mark(deps, service, "good", NOW + timedelta(minutes=1))
    with deps.engine.connect() as conn:
        record = store.load_health(conn, service)["r-1"]
        assert store.latest_evidence(conn, service, "r-1") == NOW + timedelta(minutes=1)
    assert (record.health, record.evidence_time) == ("good", NOW + timedelta(minutes=1))


def test_evidence_is_read_from_the_column_not_from_the_audit_rows(deps: Deps, service: str) -> None:
    assert mark(deps, service, "good", NOW)
    with deps.engine.begin() as conn:
        # The audit rows say nothing newer; the column does.
        conn.execute(
            text("UPDATE ops.revisions SET health_evidence_at = :t WHERE service = :s"),
            {"t": NOW + timedelta(hours=1), "s": service},
        )
    assert not mark(deps, service, "bad", NOW + timedelta(minutes=30))


@pytest.fixture
def migration_rows(deps: Deps) -> Iterator[list[str]]:
    keys: list[str] = []
    yield keys
    with deps.engine.begin() as conn:
        conn.execute(text("DELETE FROM ops.actions WHERE dedupe_key = ANY(:k)"), {"k": keys})


@pytest.mark.parametrize("breaking", [True, False])
def test_migrates_recorder_sets_the_column_rollback_reads(
    deps: Deps, migration_rows: list[str], breaking: bool
) -> None:
    build = f"store-test-{uuid.uuid4().hex[:8]}"
    recorder = RunRecorder(build, service="sight-api", trigger_event_id=None)
    migration_rows.append(recorder.key)
    label = f"l{uuid.uuid4().hex[:6]}"
    since = datetime.now(UTC) - timedelta(minutes=1)
    with deps.engine.connect() as conn:
        recorder.save(conn, "started", {"breaking": False}, datetime.now(UTC))
        detail = {"breaking": breaking, "postgres": {"from": "0001", "to": label}}
        recorder.save(conn, "succeeded", detail, datetime.now(UTC))
        conn.commit()
        column = conn.execute(
            text("SELECT breaking FROM ops.actions WHERE dedupe_key = :k"), {"k": recorder.key}
        ).scalar_one()
        found = [m.label for m in store.breaking_migrations(conn, since)]
    assert column is breaking
    assert (label in found) is breaking
