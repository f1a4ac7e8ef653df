"""PostgreSQL side of maintenance: the session, ANALYZE, the catalog facts each index's
decision needs, and ``REINDEX INDEX CONCURRENTLY`` (docs/maintain.md).

Everything runs on one autocommit session of its own (never the delivery pool): it holds
migrate's advisory lock, so the lock, the work and the session live and die together, as
in migrate (shared/migrate/_lock.py). REINDEX CONCURRENTLY cannot run inside a
transaction block, and autocommit leaves no snapshot open between statements.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from shared.db import db_connect_args
from shared.maintain._decide import ColumnStats, IndexFacts

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shared.settings import MaintainConfig, Settings

APPLICATION_NAME = "sightops-maintain"

_TABLES = text(
    "SELECT n.nspname AS schema_name, c.relname AS table_name FROM pg_class c"
    " JOIN pg_namespace n ON n.oid = c.relnamespace"
    " WHERE n.nspname IN :schemas AND c.relkind IN ('r', 'p', 'm') AND c.relpersistence = 'p'"
    " ORDER BY n.nspname, c.relname"
).bindparams(bindparam("schemas", expanding=True))

# Leaf indexes of permanent tables and materialized views (a partitioned index has none of
# its own to rebuild: its partitions' indexes are listed one by one).
_INDEXES = text(
    "SELECT i.oid AS index_oid, x.indrelid AS table_oid, n.nspname AS schema_name,"
    " t.relname AS table_name, i.relname AS index_name, am.amname AS method,"
    " pg_relation_size(i.oid) AS size_bytes, i.reltuples, x.indisvalid AS valid,"
    " x.indisexclusion AS exclusion, i.reloptions,"
    " current_setting('block_size')::int AS block_size"
    " FROM pg_index x"
    " JOIN pg_class i ON i.oid = x.indexrelid"
    " JOIN pg_class t ON t.oid = x.indrelid"
    " JOIN pg_namespace n ON n.oid = i.relnamespace"
    " JOIN pg_am am ON am.oid = i.relam"
    " WHERE n.nspname IN :schemas AND i.relkind = 'i' AND t.relkind IN ('r', 'm')"
    " AND i.relpersistence = 'p'"
    " ORDER BY n.nspname, t.relname, i.relname"
).bindparams(bindparam("schemas", expanding=True))

# Each index column's statistics: a plain column's come from its table, an expression's
# from the index itself (ANALYZE keeps those under the index's name), as in ioguix's
# estimate. One row per column, stats or not (a left join finds at most one of the two).
_COLUMNS = text(
    "SELECT DISTINCT ON (a.attrelid, a.attnum) a.attrelid AS index_oid, a.attnum,"
    " ty.typname AS type_name, a.atttypmod AS typmod, s.avg_width, s.null_frac"
    " FROM pg_attribute a"
    " JOIN pg_index x ON x.indexrelid = a.attrelid"
    " JOIN pg_class i ON i.oid = a.attrelid"
    " JOIN pg_class t ON t.oid = x.indrelid"
    " JOIN pg_namespace n ON n.oid = i.relnamespace"
    " JOIN pg_type ty ON ty.oid = a.atttypid"
    " LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND ("
    "  (s.tablename = t.relname AND s.attname = pg_get_indexdef(a.attrelid, a.attnum, true))"
    "  OR (s.tablename = i.relname AND s.attname = a.attname))"
    " WHERE n.nspname IN :schemas AND i.relkind = 'i' AND a.attnum > 0"
    " ORDER BY a.attrelid, a.attnum"
).bindparams(bindparam("schemas", expanding=True))


def maintenance_engine(settings: Settings) -> Any:
    """A session per run (the run is daily: nothing worth pooling), autocommit, never
    from the delivery pool (a delivery waiting for a second connection of its own pool
    could starve it)."""
    return create_engine(
        settings.database_url_sync,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args=db_connect_args(settings),
    )


@contextmanager
def maintenance_session(settings: Settings) -> Iterator[Connection]:
    """The run's own session, named (a lock holder shows up as ``sightops-maintain``) and
    with the inspection timeouts set."""
    engine = maintenance_engine(settings)
    try:
        with engine.connect() as conn:
            set_timeouts(conn, settings.maintain.inspect_timeout_ms, settings.maintain)
            conn.execute(
                text("SELECT set_config('application_name', :name, false)"),
                {"name": APPLICATION_NAME},
            )
            yield conn
    finally:
        engine.dispose()


def set_timeouts(conn: Connection, statement_timeout_ms: float, cfg: MaintainConfig) -> None:
    """Session ``statement_timeout`` (whole milliseconds, at least 1) and ``lock_timeout``."""
    conn.execute(
        text(
            "SELECT set_config('statement_timeout', :st, false),"
            " set_config('lock_timeout', :lt, false)"
        ),
        {"st": str(max(1, int(statement_timeout_ms))), "lt": str(int(cfg.lock_timeout_ms))},
    )


def quoted(conn: Connection, *parts: str) -> str:
    """``"schema"."name"``: every part quoted by the dialect (embedded quotes doubled)."""
    preparer = conn.dialect.identifier_preparer
    return ".".join(preparer.quote_identifier(p) for p in parts)


def describe(exc: BaseException) -> str:
    """One line: SQLSTATE and PostgreSQL's message, without SQLAlchemy's statement dump
    (and with every registered secret masked: it goes to ops.actions and Slack)."""
    from shared.log import REDACTOR

    if isinstance(exc, DBAPIError) and exc.orig is not None:
        args = getattr(exc.orig, "args", ())
        if args and isinstance(args[0], dict):
            info = args[0]
            said = f"{info.get('C', '?')} {info.get('M', '')}".strip()
        else:
            said = str(exc.orig).splitlines()[0] if str(exc.orig) else type(exc.orig).__name__
        return REDACTOR.redact(said)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return REDACTOR.redact(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)


@dataclass(frozen=True)
class Analyzed:
    table: str
    duration_ms: int
    error: str | None = None


def tables(conn: Connection, schemas: Sequence[str]) -> list[tuple[str, str]]:
    """The tables (and materialized views) of ``schemas``, as (schema, table)."""
    rows = conn.execute(_TABLES, {"schemas": list(schemas)}).all()
    return [(r.schema_name, r.table_name) for r in rows]


def analyze(
    conn: Connection, schema: str, table: str, timeout_ms: float, cfg: MaintainConfig
) -> Analyzed:
    """ANALYZE one table; an error (a lock or statement timeout) is returned, not raised:
    the next table goes on."""
    set_timeouts(conn, timeout_ms, cfg)
    started = time.perf_counter()
    error = None
    try:
        conn.exec_driver_sql(f"ANALYZE {quoted(conn, schema, table)}")
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        error = describe(exc)
    return Analyzed(f"{schema}.{table}", int((time.perf_counter() - started) * 1000), error)


def _options(reloptions: Sequence[str] | None) -> dict[str, str]:
    found: dict[str, str] = {}
    for item in reloptions or ():
        key, _, value = item.partition("=")
        found[key] = value
    return found


def index_facts(conn: Connection, schemas: Sequence[str]) -> list[IndexFacts]:
    """Every index of ``schemas`` with its size, entry count and column statistics."""
    columns: dict[int, list[ColumnStats]] = {}
    for row in conn.execute(_COLUMNS, {"schemas": list(schemas)}):
        columns.setdefault(int(row.index_oid), []).append(
            ColumnStats(
                avg_width=None if row.avg_width is None else float(row.avg_width),
                null_frac=float(row.null_frac or 0.0),
                type_name=str(row.type_name),
                typmod=int(row.typmod),
            )
        )
    return [
        IndexFacts(
            schema=r.schema_name,
            table=r.table_name,
            name=r.index_name,
            method=r.method,
            size_bytes=int(r.size_bytes),
            reltuples=float(r.reltuples),
            valid=bool(r.valid),
            exclusion=bool(r.exclusion),
            columns=tuple(columns.get(int(r.index_oid), ())),
            options=_options(r.reloptions),
            block_size=int(r.block_size),
            index_oid=int(r.index_oid),
            table_oid=int(r.table_oid),
        )
        for r in conn.execute(_INDEXES, {"schemas": list(schemas)})
    ]


@dataclass
class Rebuilt:
    """What one REINDEX INDEX CONCURRENTLY did."""

    ok: bool
    duration_ms: int
    size_after_bytes: int | None = None
    error: str | None = None
    #: invalid copies a failed rebuild left behind: dropped, or left for a human
    dropped: list[str] = field(default_factory=list)
    left: list[str] = field(default_factory=list)


def _index_oids(conn: Connection, table_oid: int) -> set[int]:
    rows = conn.execute(
        text("SELECT indexrelid FROM pg_index WHERE indrelid = :t"), {"t": table_oid}
    ).all()
    return {int(r.indexrelid) for r in rows}


def reindex(conn: Connection, facts: IndexFacts, timeout_ms: float, cfg: MaintainConfig) -> Rebuilt:
    """``REINDEX INDEX CONCURRENTLY`` one index, bounded by ``lock_timeout`` (its waits for
    locks and for older transactions) and ``timeout_ms``.

    A failed rebuild may leave an invalid ``<name>_ccnew`` copy behind (PostgreSQL's
    REINDEX documentation): every invalid index of the table that did not exist before
    is dropped with ``DROP INDEX CONCURRENTLY``; what cannot be dropped is reported.
    """
    name = quoted(conn, facts.schema, facts.name)
    before = _index_oids(conn, facts.table_oid)
    set_timeouts(conn, timeout_ms, cfg)
    if cfg.maintenance_work_mem_mb is not None:
        conn.execute(
            text("SELECT set_config('maintenance_work_mem', :mem, false)"),
            {"mem": f"{int(cfg.maintenance_work_mem_mb)}MB"},
        )
    started = time.perf_counter()
    try:
        conn.exec_driver_sql(f"REINDEX INDEX CONCURRENTLY {name}")
    except DBAPIError as exc:
        if exc.connection_invalidated:
            raise
        rebuilt = Rebuilt(False, int((time.perf_counter() - started) * 1000), error=describe(exc))
        _drop_leftovers(conn, facts, before, rebuilt, cfg)
        return rebuilt
    duration = int((time.perf_counter() - started) * 1000)
    set_timeouts(conn, cfg.inspect_timeout_ms, cfg)
    size = conn.execute(
        text("SELECT pg_relation_size(to_regclass(:name))"), {"name": name}
    ).scalar_one_or_none()
    return Rebuilt(True, duration, size_after_bytes=None if size is None else int(size))


def _drop_leftovers(
    conn: Connection, facts: IndexFacts, before: set[int], rebuilt: Rebuilt, cfg: MaintainConfig
) -> None:
    set_timeouts(conn, cfg.inspect_timeout_ms, cfg)
    rows = conn.execute(
        text(
            "SELECT x.indexrelid AS oid, n.nspname AS schema_name, i.relname AS name"
            " FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid"
            " JOIN pg_namespace n ON n.oid = i.relnamespace"
            " WHERE x.indrelid = :t AND NOT x.indisvalid"
        ),
        {"t": facts.table_oid},
    ).all()
    for row in rows:
        if int(row.oid) in before:
            continue  # not ours: the decision table reports it
        label = f"{row.schema_name}.{row.name}"
        try:
            conn.exec_driver_sql(
                f"DROP INDEX CONCURRENTLY IF EXISTS {quoted(conn, row.schema_name, row.name)}"
            )
            rebuilt.dropped.append(label)
        except DBAPIError as exc:
            if exc.connection_invalidated:
                raise
            rebuilt.left.append(f"{label} ({describe(exc)})")
