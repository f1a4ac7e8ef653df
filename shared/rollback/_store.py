"""What rollback reads and writes in PostgreSQL, all on the delivery's own connection.

- the per-service lock: a transaction-scoped advisory lock, so it is released exactly
  when the decision and its records commit (or roll back) -- see docs/rollback.md;
- ``ops.revisions``: health per revision (``good`` / ``bad``), with a ``health``
  action in ``ops.actions`` per change that carries the time of the evidence, so a
  late, older event never overrides newer evidence;
- ``ops.actions``: breaking migrations (the migrate function's contract), automatic
  rollbacks in the anti-flap window, and our own traffic moves (promotion times).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.rollback._model import BreakingMigration, Health, HealthRecord, RevisionInfo

#: First key of the two-key advisory lock: the "rollback" class. Two-key locks never
#: collide with the one-key (bigint) locks other functions take.
LOCK_CLASS = 0x524F4C4C  # "ROLL"

Recorder = Callable[..., int]


def lock_service(conn: Connection, service: str, wait_s: float) -> None:
    """Serialise every decision about ``service``; wait at most ``wait_s`` (then the
    database raises lock_not_available, which the runtime turns into a redelivery)."""
    conn.execute(text(f"SET LOCAL lock_timeout = '{int(wait_s * 1000)}ms'"))
    conn.execute(
        text("SELECT pg_advisory_xact_lock(:cls, hashtext(:service))"),
        {"cls": LOCK_CLASS, "service": service},
    )
    conn.execute(text("SET LOCAL lock_timeout = 0"))


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
            "SELECT r.revision, r.health, r.health_reason,"
            " (SELECT max(CAST(a.detail->>'evidence_time' AS timestamptz)) FROM ops.actions a"
            "   WHERE a.kind = 'health' AND a.service = r.service"
            "   AND a.detail->>'revision' = r.revision) AS evidence_time"
            " FROM ops.revisions r WHERE r.service = :s"
        ),
        {"s": service},
    ).all()
    return {
        row.revision: HealthRecord(row.health, row.health_reason, row.evidence_time) for row in rows
    }


def latest_evidence(conn: Connection, service: str, revision: str) -> datetime | None:
    value = conn.execute(
        text(
            "SELECT max(CAST(detail->>'evidence_time' AS timestamptz)) FROM ops.actions"
            " WHERE kind = 'health' AND service = :s AND detail->>'revision' = :r"
        ),
        {"s": service, "r": revision},
    ).scalar_one()
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
    nothing. On a tie, ``bad`` wins. Returns whether the mark was applied.
    """
    latest = latest_evidence(conn, service, revision)
    if latest is not None and (
        evidence_time < latest or (evidence_time == latest and health == "good")
    ):
        return False
    conn.execute(
        text(
            "INSERT INTO ops.revisions AS r (service, revision, image, commit_sha, build_id,"
            " created_at, health, health_reason, updated_at)"
            " VALUES (:s, :r, :image, :sha, :build, :created, :health, :reason, now())"
            " ON CONFLICT (service, revision) DO UPDATE SET"
            " health = EXCLUDED.health, health_reason = EXCLUDED.health_reason,"
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
    dead-lettered), has changed the schema all the same.
    """
    rows = conn.execute(
        text(
            "SELECT id, COALESCE(finished_at, started_at) AS finished_at, detail"
            " FROM ops.actions"
            " WHERE kind = 'migration' AND status <> 'skipped'"
            " AND detail->>'breaking' = 'true'"
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
    return int(
        conn.execute(
            text(
                "SELECT count(*) FROM ops.actions WHERE kind = 'rollback'"
                " AND status = 'succeeded' AND actor = 'automation'"
                " AND service = :s AND started_at > :since"
            ),
            {"s": service, "since": since},
        ).scalar_one()
    )


def our_promotions(conn: Connection, service: str) -> dict[str, datetime]:
    """When we last moved all traffic to each revision (our rollbacks, automatic or manual)."""
    rows = conn.execute(
        text(
            "SELECT detail->>'to' AS revision, max(COALESCE(finished_at, started_at)) AS at"
            " FROM ops.actions WHERE kind = 'rollback' AND status = 'succeeded'"
            " AND service = :s AND detail->>'to' IS NOT NULL"
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
