"""Persistence of the canary: ``ops.canaries`` (migration 0005), nothing else.

One row per release: the split the canary set last (``percent``, the plan's ``steps``),
when the step started, the latest evidence, the history of decisions and the events not
yet published (``outbox``). docs/schema.md lists the columns.

The safety rules are rollback's own, reused rather than copied (docs/rollback.md): the
per-service advisory lock (the *same* lock, so rollback and canary never move one
service's traffic at once), the known-good ledger (``ops.revisions``), breaking
migrations, the journal transactions of their own and the one ``ops.actions`` writer.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.rollback._store import (
    Journal,
    Recorder,
    action_recorder,
    breaking_migrations,
    lock_service,
    mark_health,
)

__all__ = [
    "ACTIVE",
    "CanaryRow",
    "CanaryStatus",
    "Journal",
    "Recorder",
    "action_recorder",
    "active",
    "breaking_migrations",
    "load",
    "lock_service",
    "mark_health",
    "running",
    "save",
    "set_outbox",
    "with_outbox",
]

CanaryStatus = Literal["running", "promoted", "rolled_back", "held", "frozen", "stopped"]

#: The statuses of an active canary: at most one per service (``uq_canaries_active_service``).
ACTIVE: tuple[CanaryStatus, ...] = ("running", "held", "frozen")


class CanaryRow(BaseModel):
    """One row of ``ops.canaries``."""

    model_config = ConfigDict(frozen=True)

    release_id: str
    project: str
    region: str
    service: str
    revision: str
    stable_revision: str | None
    commit_sha: str
    build_id: str | None = None
    tag_url: str | None = None
    status: CanaryStatus
    #: the canary's share as the last decision set it (0 before the first step)
    percent: int
    steps: list[int]
    max_step_s: float
    dry_run: bool = False
    request_event_id: str | None = None
    started_at: datetime
    step_started_at: datetime
    last_analysis_at: datetime | None = None
    evidence: dict[str, Any] | None = None
    #: ``CanaryStep`` JSON, oldest first
    history: list[dict[str, Any]] = Field(default_factory=list)
    reason: str | None = None
    trace_id: str | None = None
    #: events decided and committed but not published yet: ``{topic, data, attributes}``
    outbox: list[dict[str, Any]] = Field(default_factory=list)
    updated_at: datetime | None = None

    @property
    def active(self) -> bool:
        return self.status in ACTIVE

    def split(self, percent: int) -> dict[str, int]:
        """Who gets traffic when the canary has ``percent``: the stable the rest."""
        shares = {self.revision: percent, self.stable_revision or "": 100 - percent}
        return {name: pct for name, pct in shares.items() if name and pct > 0}

    def expected_split(self) -> dict[str, int]:
        """The split the canary set last: what Cloud Run must still route for the canary
        to go on (a dry run never moved anything: the stable serves it all)."""
        return self.split(0 if self.dry_run else self.percent)


_COLUMNS = tuple(CanaryRow.model_fields)
_JSON = {"evidence", "history", "outbox"}
_CASTS = {
    **{name: f"CAST(:{name} AS jsonb)" for name in _JSON},
    "steps": "CAST(:steps AS integer[])",
    "updated_at": "COALESCE(CAST(:updated_at AS timestamptz), now())",
}


def _row(mapping: Any) -> CanaryRow:
    return CanaryRow.model_validate(dict(mapping))


def load(conn: Connection, release_id: str) -> CanaryRow | None:
    row = conn.execute(
        text(f"SELECT {', '.join(_COLUMNS)} FROM ops.canaries WHERE release_id = :r"),
        {"r": release_id},
    ).one_or_none()
    return _row(row._mapping) if row is not None else None


def active(conn: Connection, service: str) -> CanaryRow | None:
    """The service's active canary (running, held or frozen), if any."""
    row = conn.execute(
        text(
            f"SELECT {', '.join(_COLUMNS)} FROM ops.canaries"
            " WHERE service = :s AND status IN ('running', 'held', 'frozen')"
        ),
        {"s": service},
    ).one_or_none()
    return _row(row._mapping) if row is not None else None


def running(
    conn: Connection, service: str | None = None, region: str | None = None
) -> list[CanaryRow]:
    """Running canaries (of one service / region, when given), oldest first."""
    rows = conn.execute(
        text(
            f"SELECT {', '.join(_COLUMNS)} FROM ops.canaries WHERE status = 'running'"
            " AND (CAST(:s AS text) IS NULL OR service = :s)"
            " AND (CAST(:r AS text) IS NULL OR region = :r)"
            " ORDER BY started_at, release_id"
        ),
        {"s": service, "r": region},
    ).all()
    return [_row(row._mapping) for row in rows]


def latest(conn: Connection, service: str | None = None, limit: int = 20) -> list[CanaryRow]:
    """The newest canaries (of one service, when given), active ones first."""
    rows = conn.execute(
        text(
            f"SELECT {', '.join(_COLUMNS)} FROM ops.canaries"
            " WHERE CAST(:s AS text) IS NULL OR service = :s"
            " ORDER BY status IN ('running', 'held', 'frozen') DESC, started_at DESC LIMIT :n"
        ),
        {"s": service, "n": limit},
    ).all()
    return [_row(row._mapping) for row in rows]


def with_outbox(conn: Connection) -> list[tuple[str, str]]:
    """``(service, release_id)`` of every canary with events still to publish."""
    rows = conn.execute(
        text(
            "SELECT service, release_id FROM ops.canaries WHERE outbox <> '[]'::jsonb"
            " ORDER BY updated_at"
        )
    ).all()
    return [(row.service, row.release_id) for row in rows]


def save(conn: Connection, row: CanaryRow) -> None:
    """Insert or replace the whole row (a release deployed again after its canary ended
    starts over under the same release id; its earlier decisions stay in ops.actions)."""
    values = row.model_dump()
    for name in _JSON:
        values[name] = json.dumps(values[name], default=str) if values[name] is not None else None
    placeholders = ", ".join(_CASTS.get(name, f":{name}") for name in _COLUMNS)
    updates = ", ".join(f"{name} = EXCLUDED.{name}" for name in _COLUMNS if name != "release_id")
    conn.execute(
        text(
            f"INSERT INTO ops.canaries ({', '.join(_COLUMNS)}) VALUES ({placeholders})"
            f" ON CONFLICT (release_id) DO UPDATE SET {updates}"
        ),
        values,
    )


def set_outbox(conn: Connection, release_id: str, outbox: list[dict[str, Any]]) -> None:
    conn.execute(
        text("UPDATE ops.canaries SET outbox = CAST(:o AS jsonb) WHERE release_id = :r"),
        {"o": json.dumps(outbox), "r": release_id},
    )
