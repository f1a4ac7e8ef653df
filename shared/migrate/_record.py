"""The ``ops.actions`` row of one build's migration run, written on the migration session.

That session runs in autocommit (``migration_engine``): every statement here is its own
transaction, except a save made inside a migration's ``BEGIN``...``COMMIT``.

Why not ``ctx.record_action`` (the delivery transaction)? The schema changes commit on
the migration session, migration by migration, independently of the delivery. If their
record lived in the delivery transaction, a retried delivery (Neo4j down, publish failed,
process killed) would roll the record back while the schema change stays: the audit trail
would lose a breaking migration, and rollback would move traffic to code that cannot run
against the schema. So the record is committed next to the change it describes, before
the lock is released, and is keyed ``migrate:<build id>`` (``dedupe_key``) so a rerun of
the same build continues its row instead of adding one.

Status goes ``started`` -> ``succeeded`` | ``failed``; ``detail`` is the
``MigrationResult`` (wire form) plus ``applied``, ``lock_wait_ms`` and ``attempts`` (and
``rejected`` for a selected build refused for its values), and ``build_created_at``: the
Build resource's ``createTime`` (ISO), where the release metrics start a change's lead
time (docs/metrics.md). A SUCCESS build migrate does not
select is recorded differently: a ``skipped`` row without ``dedupe_key``, in the delivery
transaction (``ctx.record_action``: nothing ran, so nothing must outlive a rollback).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.runtime import write_action

FINAL = frozenset({"succeeded", "failed"})


@dataclass(frozen=True)
class RecordedRun:
    status: str
    detail: dict[str, Any]


class RunRecorder:
    """Upserts the run's row; silent while ``ops.actions`` does not exist (bootstrap)."""

    def __init__(
        self,
        build_id: str,
        *,
        service: str | None,
        trigger_event_id: str | None,
        actor: str = "automation",
        build_created_at: datetime | None = None,
    ) -> None:
        self.key = f"migrate:{build_id}"
        self.service = service
        self.trigger_event_id = trigger_event_id
        self.actor = actor
        self.build_created_at = build_created_at
        self._table_exists = False
        self._columns: set[str] = set()  # ops.actions columns known to exist

    def table_known(self) -> bool:
        """Whether ``ops.actions`` is known to exist (no round trip)."""
        return self._table_exists

    def table_exists(self, found: bool) -> None:
        """What the caller already asked (saves a round trip); False is checked again."""
        self._table_exists = found

    def _exists(self, conn: Connection, *, remember: bool = True) -> bool:
        """Checked until it exists: a pending migration may be what creates it. Inside a
        migration's transaction the answer is not remembered: that transaction may still
        roll back."""
        if self._table_exists:
            return True
        found = bool(conn.execute(text("SELECT to_regclass('ops.actions') IS NOT NULL")).scalar())
        self._table_exists = found and remember
        return found

    def load(self, conn: Connection) -> RecordedRun | None:
        if not self._exists(conn):
            return None
        row = conn.execute(
            text("SELECT status, detail FROM ops.actions WHERE dedupe_key = :k"), {"k": self.key}
        ).first()
        return None if row is None else RecordedRun(str(row.status), dict(row.detail))

    def save(
        self,
        conn: Connection,
        status: str,
        detail: dict[str, Any],
        now: datetime,
        *,
        in_block: bool = False,
    ) -> None:
        """Insert or update the row; it must be durable before the lock goes.

        ``in_block``: inside a migration's transaction, which commits it with the
        migration the row reports."""
        if not self._exists(conn, remember=not in_block):
            return
        if self.build_created_at is not None:
            detail = {**detail, "build_created_at": self.build_created_at.isoformat()}
        write_action(
            conn,
            kind="migration",
            status=status,
            now=now,
            service=self.service,
            trigger_event_id=self.trigger_event_id,
            actor=self.actor,
            dedupe_key=self.key,
            detail=detail,
            finished=status in FINAL,
            on_conflict="update",
            returning=False,  # inside a migration's transaction: no open portal
            # release and trace ids: declared by alembic 0004, which may be pending
            trace_columns=self._column(conn, "trace_id", remember=not in_block),
        )
        if detail.get("breaking") and self._breaking_column(conn, remember=not in_block):
            # The declared column rollback's freeze rule reads (docs/rollback.md; 0003).
            # Once true, a run stays breaking: only its own transaction rolling back undoes it.
            conn.execute(
                text(
                    "UPDATE ops.actions SET breaking = true WHERE dedupe_key = :k AND NOT breaking"
                ),
                {"k": self.key},
            )

    def _breaking_column(self, conn: Connection, *, remember: bool) -> bool:
        """Whether ``ops.actions.breaking`` exists (migration 0003); the detail keeps
        ``breaking`` either way, and 0003 carries it over."""
        return self._column(conn, "breaking", remember=remember)

    def _column(self, conn: Connection, name: str, *, remember: bool) -> bool:
        """Whether ``ops.actions.<name>`` exists: the run record is written while the
        migrations that add columns run. Remembered once found (outside a migration)."""
        if name in self._columns:
            return True
        found = bool(
            conn.execute(
                text(
                    "SELECT EXISTS (SELECT 1 FROM pg_attribute"
                    " WHERE attrelid = CAST('ops.actions' AS regclass)"
                    " AND attname = :name AND NOT attisdropped)"
                ),
                {"name": name},
            ).scalar()
        )
        if found and remember:
            self._columns.add(name)
        return found


def unresolved_partial(conn: Connection, revision: str) -> dict[str, Any] | None:
    """The newest record (any build) of ``revision`` partly applied and not yet resolved
    by an operator (``sightops migrations resolve-partial``). A rebuild must not run it
    again: its committed parts would be repeated."""
    row = conn.execute(
        text(
            "SELECT dedupe_key, detail->'partial' AS partial FROM ops.actions"
            " WHERE kind = 'migration' AND detail->'partial'->>'revision' = :rev"
            " AND NOT (detail->'partial' ? 'resolved') ORDER BY id DESC LIMIT 1"
        ),
        {"rev": revision},
    ).first()
    if row is None:
        return None
    return {**dict(row.partial), "build": str(row.dedupe_key).removeprefix("migrate:")}


def resolve_partial(
    conn: Connection, revision: str, *, note: str, actor: str, now: datetime
) -> list[str]:
    """Mark every unresolved partial application of ``revision`` resolved (the operator
    finished or undid it by hand); returns the builds whose records changed."""
    rows = conn.execute(
        text(
            "UPDATE ops.actions SET detail = jsonb_set(detail, '{partial,resolved}',"
            " jsonb_build_object('at', CAST(:now AS text), 'by', CAST(:actor AS text),"
            " 'note', CAST(:note AS text)))"
            " WHERE kind = 'migration' AND detail->'partial'->>'revision' = :rev"
            " AND NOT (detail->'partial' ? 'resolved') RETURNING dedupe_key"
        ),
        {"rev": revision, "now": now.isoformat(), "actor": actor, "note": note},
    ).all()
    return [str(r.dedupe_key).removeprefix("migrate:") for r in rows]
