"""``sightops migrations status``: where PostgreSQL and the graph stand, and the last runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from shared.migrate._alembic import AlembicRunner
from shared.migrate._graph import GraphMigrator, GraphStatus
from shared.migrate._lock import lock_holder, lock_key
from shared.migrate._run import _describe, migration_engine

if TYPE_CHECKING:
    from neo4j import Driver

    from shared.settings import Settings


@dataclass
class MigrationStatus:
    postgres_current: str | None = None
    postgres_head: str | None = None
    postgres_pending: list[str] = field(default_factory=list)
    postgres_error: str | None = None
    lock_holder: str | None = None
    graph: GraphStatus | None = None
    graph_error: str | None = None
    runs: list[dict[str, Any]] = field(default_factory=list)
    #: What each store failed with, for a caller to raise once it has shown the rest
    #: (`sightops migrations status`; docs/cli.md, "Errors").
    failures: list[Exception] = field(default_factory=list, repr=False)


def migration_status(settings: Settings, driver: Driver | None, limit: int = 10) -> MigrationStatus:
    """Read-only; each store's failure is reported in the status instead of raised."""
    cfg = settings.migrate
    status = MigrationStatus()
    alembic = AlembicRunner(cfg.alembic_ini, cfg.version_locations)
    try:
        script = alembic.script()
        status.postgres_head = alembic.head(script)
        with migration_engine(settings).connect() as conn:
            current = alembic.current(conn)
            status.postgres_current = current
            status.postgres_pending = [s.revision for s in alembic.pending(script, current)]
            status.lock_holder = lock_holder(conn, lock_key(cfg.lock_name))
            if conn.execute(text("SELECT to_regclass('ops.actions') IS NOT NULL")).scalar():
                rows = conn.execute(
                    text(
                        "SELECT id, status, service, started_at, finished_at, detail"
                        " FROM ops.actions WHERE kind = 'migration'"
                        " ORDER BY started_at DESC, id DESC LIMIT :n"
                    ),
                    {"n": limit},
                ).mappings()
                status.runs = [dict(row) for row in rows]
            conn.rollback()
    except Exception as exc:
        status.postgres_error = _describe(exc)
        status.failures.append(exc)
    if cfg.graph_enabled and driver is not None:
        try:
            # One connection attempt first: a read would retry an unreachable server for
            # the driver's whole max_transaction_retry_time before saying so.
            driver.verify_connectivity()
            status.graph = GraphMigrator(
                driver,
                cfg.graph_migrations_dir,
                record_label=cfg.graph_record_label,
                lock_label=cfg.graph_lock_label,
            ).status()
        except Exception as exc:
            status.graph_error = _describe(exc)
            status.failures.append(exc)
    return status
