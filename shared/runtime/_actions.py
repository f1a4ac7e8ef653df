"""The one writer of ``ops.actions``, the audit trail every function appends to.

Handlers write through ``Context.record_action`` (in the delivery's transaction);
rollback's decision journal, notify's group messages and migrate's run record write on
transactions of their own. All go through :func:`write_action`, so the columns, the
storable-text rules and the dedupe semantics are stated once (docs/schema.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.runtime._storable import storable_json, storable_text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: What a second row with the same ``dedupe_key`` does: ``fail`` (the unique key refuses
#: it), ``ignore`` (the first row stands), ``update`` (status, detail, trigger and
#: finish time are replaced: a run record that moves from ``running`` to its outcome).
OnConflict = Literal["fail", "ignore", "update"]

_CONFLICT = {
    "fail": "",
    "ignore": " ON CONFLICT (dedupe_key) DO NOTHING",
    "update": " ON CONFLICT (dedupe_key) DO UPDATE SET status = EXCLUDED.status,"
    " detail = EXCLUDED.detail, finished_at = EXCLUDED.finished_at,"
    " trigger_event_id = EXCLUDED.trigger_event_id",
}


def write_action(
    conn: Connection,
    *,
    kind: str,
    status: str,
    now: datetime,
    service: str | None = None,
    trigger_event_id: str | None = None,
    actor: str = "automation",
    detail: Mapping[str, Any] | None = None,
    finished: bool = True,
    dedupe_key: str | None = None,
    on_conflict: OnConflict = "fail",
    returning: bool = True,
    release_id: str | None = None,
    trace_id: str | None = None,
    trace_columns: bool = True,
) -> int | None:
    """Append one row; its id, or None when ``on_conflict="ignore"`` kept an earlier row
    or ``returning`` is False.

    ``returning=False`` for statements inside a migration's transaction: a RETURNING
    result keeps pg8000's portal (and its snapshot) open until the next statement, which
    ``CREATE INDEX CONCURRENTLY`` would wait for (docs/migrate.md).

    ``release_id`` and ``trace_id`` default to the current delivery's (``shared.trace``),
    so every row written while a delivery runs belongs to its release and trace
    (docs/release.md). Both columns are named only when one has a value, and never with
    ``trace_columns=False``: a row written while migrations run may meet a schema from
    before they existed (alembic 0004).
    """
    from sqlalchemy import text

    from shared.trace import current

    trace = current() if trace_columns else None
    if trace is not None:
        release_id = release_id or trace.release_id
        trace_id = trace_id or trace.trace_id
    traced = trace_columns and (release_id is not None or trace_id is not None)

    sql = (
        "INSERT INTO ops.actions (kind, service, status, trigger_event_id, actor,"
        " dedupe_key, detail, started_at, finished_at"
        + (", release_id, trace_id" if traced else "")
        + ") VALUES (:kind, :service, :status, :trigger, :actor, :dedupe,"
        " CAST(:detail AS jsonb), :now, CASE WHEN :finished THEN CAST(:now AS timestamptz) END"
        + (", :release, :trace" if traced else "")
        + ")"
        + _CONFLICT[on_conflict]
        + (" RETURNING id" if returning else "")
    )
    result = conn.execute(
        text(sql),
        {
            "kind": storable_text(kind),
            "service": storable_text(service),
            "status": storable_text(status),
            "trigger": storable_text(trigger_event_id),
            "actor": storable_text(actor),
            "dedupe": storable_text(dedupe_key),
            "detail": storable_json(dict(detail or {})),
            "now": now,
            "finished": finished,
            "release": storable_text(release_id),
            "trace": storable_text(trace_id),
        },
    )
    if not returning:
        return None
    row = result.scalar_one_or_none()
    return int(row) if row is not None else None
