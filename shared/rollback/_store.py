"""Persistence of rollback: what it reads and writes in PostgreSQL, nothing else.

- the per-service lock: a transaction-scoped advisory lock, so it is released exactly
  when the decision and its records commit (or roll back) -- see docs/rollback.md;
- ``ops.revisions``: health per revision (``good`` / ``bad``) and the time of the
  evidence behind it (``health_evidence_at``), so a late, older event never overrides
  newer evidence; each change is also a ``health`` action in ``ops.actions`` (the audit
  trail, never read back to decide);
- ``ops.actions.breaking``: breaking migrations (the migrate function's contract);
- ``ops.rollback_decisions``: the journal of traffic moves, written in transactions of
  their own (:class:`Journal`): the anti-flap count and our own promotion times.

docs/schema.md lists the columns.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from shared.clock import Clock
from shared.db import create_db_engine, transaction
from shared.rollback._model import (
    BreakingMigration,
    Health,
    HealthRecord,
    RevisionInfo,
    TriggerKind,
)
from shared.runtime import write_action
from shared.settings import Settings

#: First key of the two-key advisory lock: the "rollback" class. Two-key locks never
#: collide with the one-key (bigint) locks other functions take.
LOCK_CLASS = 0x524F4C4C  # "ROLL"

Recorder = Callable[..., int]


def lock_service(conn: Connection, service: str, wait_s: float) -> None:
    """Serialise every decision about ``service``; wait at most ``wait_s`` (then the
    database raises lock_not_available, which the runtime turns into a redelivery).

    Only this wait uses ``wait_s``: the session's own bound (``DB_LOCK_TIMEOUT_MS``) is
    put back afterwards, so every other lock wait in the transaction stays bounded too
    (docs/architecture.md). A session without a bound keeps ``wait_s``.
    """
    previous = str(conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one())
    bound = f"{max(1, int(wait_s * 1000))}ms"
    conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": bound})
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:cls, hashtext(:service))"),
        {"cls": LOCK_CLASS, "service": service},
    )
    restored = bound if previous.strip() in {"0", "0ms", "0s"} else previous
    conn.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": restored})


def service_known(conn: Connection, service: str) -> bool:
    """True once anything about the service is in ``ops.revisions``."""
    return bool(
        conn.execute(
            text("SELECT EXISTS (SELECT 1 FROM ops.revisions WHERE service = :s)"),
            {"s": service},
        ).scalar_one()
    )


def load_health(conn: Connection, service: str) -> dict[str, HealthRecord]:
    rows = conn.execute(
        text(
            "SELECT revision, health, health_reason, health_evidence_at FROM ops.revisions"
            " WHERE service = :s"
        ),
        {"s": service},
    ).all()
    return {
        row.revision: HealthRecord(row.health, row.health_reason, row.health_evidence_at)
        for row in rows
    }


def latest_evidence(conn: Connection, service: str, revision: str) -> datetime | None:
    """The time of the evidence behind the revision's current health (None: none yet)."""
    value = conn.execute(
        text("SELECT health_evidence_at FROM ops.revisions WHERE service = :s AND revision = :r"),
        {"s": service, "r": revision},
    ).scalar_one_or_none()
    return value if isinstance(value, datetime) else None


def mark_health(
    conn: Connection,
    record: Recorder,
    *,
    service: str,
    revision: str,
    health: Health,
    reason: str,
    evidence_time: datetime,
    info: RevisionInfo | None = None,
    build_id: str | None = None,
    commit_sha: str | None = None,
    actor: str = "automation",
) -> bool:
    """Set a revision's health unless newer evidence already decided it.

    Evidence is ordered by its own time (the event's ``time``), not by arrival: a
    smoke.passed published before a smoke.failed but delivered after it changes
    nothing. On a tie, ``bad`` wins. Returns whether the mark was applied. The evidence
    time is kept in ``ops.revisions.health_evidence_at``; the ``health`` action repeats it
    for the audit trail.
    """
    latest = latest_evidence(conn, service, revision)
    if latest is not None and (
        evidence_time < latest or (evidence_time == latest and health == "good")
    ):
        return False
    conn.execute(
        text(
            "INSERT INTO ops.revisions AS r (service, revision, image, commit_sha, build_id,"
            " created_at, health, health_reason, health_evidence_at, updated_at)"
            " VALUES (:s, :r, :image, :sha, :build, :created, :health, :reason, :evidence,"
            " now())"
            " ON CONFLICT (service, revision) DO UPDATE SET"
            " health = EXCLUDED.health, health_reason = EXCLUDED.health_reason,"
            " health_evidence_at = EXCLUDED.health_evidence_at,"
            " image = COALESCE(EXCLUDED.image, r.image),"
            " commit_sha = COALESCE(EXCLUDED.commit_sha, r.commit_sha),"
            " build_id = COALESCE(EXCLUDED.build_id, r.build_id),"
            " created_at = COALESCE(EXCLUDED.created_at, r.created_at),"
            " updated_at = now()"
        ),
        {
            "s": service,
            "r": revision,
            "image": info.image if info else None,
            "sha": commit_sha,
            "build": build_id,
            "created": info.create_time if info else None,
            "health": health,
            "reason": reason[:1000],
            "evidence": evidence_time,
        },
    )
    record(
        "health",
        health,
        service=service,
        actor=actor,
        detail={
            "revision": revision,
            "evidence_time": evidence_time.isoformat(),
            "reason": reason,
        },
    )
    return True


def breaking_migrations(conn: Connection, since: datetime) -> list[BreakingMigration]:
    """Breaking migrations applied after ``since``, of any service: the database is
    shared, so old code of any service may not survive the new schema.

    Any run but a skipped one counts: migrate marks a run breaking as soon as a destructive
    migration commits, so a run that then failed, or is still ``started`` (its messages
    dead-lettered), has changed the schema all the same. ``breaking`` is the declared
    column migrate sets (``shared.migrate``); the detail only names the migration.
    """
    rows = conn.execute(
        text(
            "SELECT id, COALESCE(finished_at, started_at) AS finished_at, detail"
            " FROM ops.actions"
            " WHERE kind = 'migration' AND status <> 'skipped' AND breaking"
            " AND COALESCE(finished_at, started_at) > :since"
            " ORDER BY 2"
        ),
        {"since": since},
    ).all()
    return [
        BreakingMigration(_migration_label(row.id, row.detail), row.finished_at) for row in rows
    ]


def _migration_label(action_id: int, detail: Any) -> str:
    detail = detail if isinstance(detail, dict) else {}
    postgres = detail.get("postgres")
    for candidate in (
        postgres.get("to") if isinstance(postgres, dict) else None,
        detail.get("to"),
        detail.get("revision"),
        detail.get("build_id"),
    ):
        if isinstance(candidate, str) and candidate:
            return candidate
    return f"#{action_id}"


def recent_auto_rollbacks(conn: Connection, service: str, since: datetime) -> int:
    """Automatic traffic moves of ``service`` decided after ``since``: one per decision
    (a redelivery resumes its decision, never adds one). A decision whose outcome is not
    recorded yet may have moved traffic, so it counts."""
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM ops.rollback_decisions WHERE service = :s"
                " AND actor = 'automation' AND created_at > :since"
                " AND (verdict = 'succeeded' OR status = 'intent')"
            ),
            {"s": service, "since": since},
        ).scalar_one()
    )


def our_promotions(conn: Connection, service: str) -> dict[str, datetime]:
    """When we last moved all traffic to each revision (our rollbacks, automatic or manual)."""
    rows = conn.execute(
        text(
            "SELECT to_revision AS revision, max(COALESCE(finished_at, created_at)) AS at"
            " FROM ops.rollback_decisions WHERE service = :s AND verdict = 'succeeded'"
            " GROUP BY 1"
        ),
        {"s": service},
    ).all()
    return {row.revision: row.at for row in rows}


def receipt_exists(conn: Connection, consumer: str, key: str) -> bool:
    """Whether ``consumer`` already received the delivery with this dedupe key (committed)."""
    return bool(
        conn.execute(
            text(
                "SELECT EXISTS (SELECT 1 FROM ops.event_receipts"
                " WHERE consumer = :c AND event_id = :k)"
            ),
            {"c": consumer, "k": key},
        ).scalar_one()
    )


# ---------------------------------------------------------------------- decision journal

#: Namespace of decision and event ids: both derive from the trigger key, so a redelivery
#: of the same trigger finds the same decision and republishes under the same event id.
_IDS = uuid.UUID("6f1d3c2a-9b7e-4d15-8a40-52b1e0c7d9a3")

DecisionStatus = Literal["intent", "done"]


def decision_id_for(trigger_key: str) -> uuid.UUID:
    return uuid.uuid5(_IDS, trigger_key)


def event_id_for(decision_id: uuid.UUID) -> str:
    return str(uuid.uuid5(_IDS, f"event:{decision_id}"))


class DecisionRecord(BaseModel):
    """One row of ``ops.rollback_decisions``: a traffic move, from intent to outcome."""

    model_config = ConfigDict(frozen=True)

    decision_id: uuid.UUID
    trigger_key: str
    service: str
    trigger_kind: TriggerKind
    trigger_event_id: str | None
    actor: str
    from_revision: str | None
    to_revision: str
    status: DecisionStatus = "intent"
    verdict: Literal["succeeded", "failed"] | None = None
    reason: str
    event_id: str
    event_published: bool = False
    serving_before: dict[str, int] = Field(default_factory=dict)
    serving_after: dict[str, int] | None = None
    created_at: datetime
    finished_at: datetime | None = None


_DECISION_COLUMNS = ", ".join(DecisionRecord.model_fields)


def find_decision(conn: Connection, trigger_key: str) -> DecisionRecord | None:
    """The decision already taken for this trigger (committed), if any."""
    row = conn.execute(
        text(f"SELECT {_DECISION_COLUMNS} FROM ops.rollback_decisions WHERE trigger_key = :k"),
        {"k": trigger_key},
    ).one_or_none()
    return DecisionRecord.model_validate(dict(row._mapping)) if row is not None else None


def record_intent(conn: Connection, decision: DecisionRecord) -> None:
    """Write the intent; a second intent for the same trigger is a bug (the lock and the
    receipt serialise deliveries of one trigger), so the unique key is left to refuse it."""
    values = decision.model_dump()
    values["serving_before"] = json.dumps(decision.serving_before)
    values["serving_after"] = None
    conn.execute(
        text(
            f"INSERT INTO ops.rollback_decisions ({_DECISION_COLUMNS}) VALUES ("
            + ", ".join(
                f"CAST(:{name} AS jsonb)" if name.startswith("serving_") else f":{name}"
                for name in DecisionRecord.model_fields
            )
            + ")"
        ),
        values,
    )


def record_outcome(
    conn: Connection,
    decision_id: uuid.UUID,
    *,
    verdict: Literal["succeeded", "failed"],
    reason: str,
    serving_after: dict[str, int] | None,
    published: bool,
    finished_at: datetime,
) -> None:
    conn.execute(
        text(
            "UPDATE ops.rollback_decisions SET status = 'done', verdict = :v, reason = :r,"
            " serving_after = CAST(:after AS jsonb), event_published = :p, finished_at = :t"
            " WHERE decision_id = :id"
        ),
        {
            "id": decision_id,
            "v": verdict,
            "r": reason,
            "after": json.dumps(serving_after) if serving_after is not None else None,
            "p": published,
            "t": finished_at,
        },
    )


def mark_published(conn: Connection, decision_id: uuid.UUID) -> None:
    conn.execute(
        text("UPDATE ops.rollback_decisions SET event_published = true WHERE decision_id = :id"),
        {"id": decision_id},
    )


def action_recorder(conn: Connection, trigger_event_id: str | None, clock: Clock) -> Recorder:
    """``Context.record_action`` where there is no delivery: on a journal transaction, or
    on the CLI's own. A ``dedupe_key`` makes a row write-once (a redelivery resuming a
    decision never records its outcome twice)."""

    def record(
        kind: str,
        status: str,
        *,
        service: str | None = None,
        detail: Mapping[str, Any] | None = None,
        actor: str = "automation",
        finished: bool = True,
        dedupe_key: str | None = None,
    ) -> int:
        row = write_action(
            conn,
            kind=kind,
            status=status,
            now=clock(),
            service=service,
            trigger_event_id=trigger_event_id,
            actor=actor,
            detail=detail,
            finished=finished,
            dedupe_key=dedupe_key,
            on_conflict="ignore",
        )
        return row or 0

    return record


class Journal:
    """Transactions of their own, beside the delivery's: what happens outside the database
    (a traffic move) is recorded so that it survives whatever the delivery's own
    transaction does (docs/rollback.md, "Decisions are durable on their own").

    Its connection is not taken from the delivery pool (a delivery holding a pooled
    connection and waiting for a second one can starve it): one short-lived connection per
    decision that moves traffic, closed by :meth:`close`.
    """

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._engine: Engine | None = None

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        if self._engine is None:
            self._engine = create_db_engine(
                self._settings, pool_size=1, max_overflow=0, pool_pre_ping=False
            )
        with transaction(self._engine) as conn:
            yield conn

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None
