"""The migrate function's library (docs/migrate.md).

On a selected SUCCESS build: under a PostgreSQL advisory lock, lint the pending Alembic
migrations' offline SQL (pglast), apply them one by one with lock/statement timeouts,
apply the versioned Cypher files to Neo4j under a graph lock, record the run in
``ops.actions`` and publish ``sight.ops.migration.*``.
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.events import Build
    from shared.migrate._alembic import ALEMBIC_LOCK, AlembicRunner, RenderedMigration, RenderError
    from shared.migrate._graph import (
        GraphFile,
        GraphLockLost,
        GraphMigrationError,
        GraphMigrator,
        GraphRun,
        GraphStatus,
        load_files,
        split_statements,
    )
    from shared.migrate._handler import (
        DUPLICATE_WAIT_MS,
        dedupe_key,
        handle,
        migrate_deps,
        migration_event,
        parse,
    )
    from shared.migrate._lint import RULES, Rule, blocking, lint_migrations, parse_allowances
    from shared.migrate._lock import advisory_lock, lock_holder, lock_key
    from shared.migrate._record import resolve_partial, unresolved_partial
    from shared.migrate._run import (
        MigrationFailed,
        RunOutcome,
        RunRequest,
        migration_engine,
        run_migrations,
    )
    from shared.migrate._status import MigrationStatus, migration_status
else:  # each name is imported on first use (docs/architecture.md, "Cold start")
    __getattr__ = lazy_attributes(
        __name__,
        {
            "shared.events": ("Build",),
            "_alembic": (
                "ALEMBIC_LOCK",
                "AlembicRunner",
                "RenderedMigration",
                "RenderError",
            ),
            "_graph": (
                "GraphFile",
                "GraphLockLost",
                "GraphMigrationError",
                "GraphMigrator",
                "GraphRun",
                "GraphStatus",
                "load_files",
                "split_statements",
            ),
            "_handler": (
                "DUPLICATE_WAIT_MS",
                "dedupe_key",
                "handle",
                "migrate_deps",
                "migration_event",
                "parse",
            ),
            "_lint": (
                "RULES",
                "Rule",
                "blocking",
                "lint_migrations",
                "parse_allowances",
            ),
            "_lock": (
                "advisory_lock",
                "lock_holder",
                "lock_key",
            ),
            "_record": (
                "resolve_partial",
                "unresolved_partial",
            ),
            "_run": (
                "MigrationFailed",
                "RunOutcome",
                "RunRequest",
                "migration_engine",
                "run_migrations",
            ),
            "_status": (
                "MigrationStatus",
                "migration_status",
            ),
        },
    )

__all__ = [
    "ALEMBIC_LOCK",
    "DUPLICATE_WAIT_MS",
    "RULES",
    "AlembicRunner",
    "Build",
    "GraphFile",
    "GraphLockLost",
    "GraphMigrationError",
    "GraphMigrator",
    "GraphRun",
    "GraphStatus",
    "MigrationFailed",
    "MigrationStatus",
    "RenderError",
    "RenderedMigration",
    "Rule",
    "RunOutcome",
    "RunRequest",
    "advisory_lock",
    "blocking",
    "dedupe_key",
    "handle",
    "lint_migrations",
    "load_files",
    "lock_holder",
    "lock_key",
    "migrate_deps",
    "migration_engine",
    "migration_event",
    "migration_status",
    "parse",
    "parse_allowances",
    "resolve_partial",
    "run_migrations",
    "split_statements",
    "unresolved_partial",
]
