"""Apply exactly the SQL the linter checked: the offline rendering, statement by statement.

Why not ``alembic upgrade`` online after linting the offline rendering?

- What runs is what was checked. An online run executes the migration's Python a second
  time; a migration that branches on ``context.is_offline_mode()`` or reads through the
  bind would run something no linter saw.
- One pass of the migrations' Python instead of two: rendering is most of migrate's
  overhead over a plain ``alembic upgrade head`` (docs/benchmarks.md).

The rendering runs the way ``psql -f`` would run it, on an autocommit session: its own
``BEGIN``/``COMMIT`` make the transactions, and statements outside a block (what
``autocommit_block()`` renders, e.g. ``CREATE INDEX CONCURRENTLY``) run on their own.
Alembic's bookkeeping is part of the rendering (``UPDATE alembic_version ... WHERE
version_num = '<previous>'``); it must touch exactly one row, as Alembic checks online, or
someone changed the version under us and the migration is rolled back.

``on_applied`` runs inside a migration's last transaction, before its ``COMMIT``: the run's
progress row commits atomically with the migration it reports.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import suppress

from sqlalchemy.engine import Connection

from shared.db import is_autocommit
from shared.migrate._alembic import RenderedMigration
from shared.migrate._sql import Statement


class StatementFailed(Exception):
    """A statement of ``migration`` failed; ``error`` is the driver's exception.

    ``autocommit``: it ran outside a transaction block. ``committed``: how many parts of
    this migration (blocks, autocommit steps) had committed before it; when not 0 the
    migration is *partly* applied and its revision not recorded, so running it again
    would repeat those parts.
    """

    def __init__(
        self,
        migration: RenderedMigration,
        statement: str,
        error: Exception,
        *,
        autocommit: bool,
        committed: int = 0,
    ) -> None:
        super().__init__(f"{migration.label}: {error}")
        self.migration = migration
        self.statement = statement
        self.error = error
        self.autocommit = autocommit
        self.committed = committed


class VersionMismatch(Exception):
    """``alembic_version`` was not where the rendering expected it."""


def apply_rendered(
    conn: Connection,
    migrations: Sequence[RenderedMigration],
    *,
    before: Callable[[RenderedMigration], None],
    on_part: Callable[[RenderedMigration, int], None],
    on_applied: Callable[[RenderedMigration], None],
) -> None:
    """Run ``migrations`` in order on ``conn``, an autocommit session.

    The rendering's ``BEGIN``/``COMMIT`` are sent as they are (the session does not wrap
    statements in transactions of its own), so blocks are exactly the ones Alembic
    rendered. ``before`` runs ahead of each migration's first statement (fresh timeouts).
    A migration split by ``autocommit_block()`` commits in parts: ``on_part(migration, n)``
    runs inside each intermediate block before its ``COMMIT`` (and right after an
    autocommit step), so a partly applied migration is on record; ``on_applied`` runs
    inside its last block. On a failure an open block is rolled back and
    :class:`StatementFailed` raised; migrations before the failing one stay committed.
    """
    if not is_autocommit(conn):
        raise ValueError("apply_rendered needs an autocommit session: the SQL has its own BEGIN")
    in_block = False
    for migration in migrations:
        statements = migration.statements
        commits = [i for i, s in enumerate(statements) if s.transaction == "COMMIT"]
        last_commit = commits[-1] if commits else None
        committed = 0  # parts of this migration that are committed
        before(migration)
        for i, statement in enumerate(statements):
            control = statement.transaction
            autocommit_step = not in_block and control is None
            try:
                if i == last_commit:
                    on_applied(migration)  # commits with the migration's last block
                elif control == "COMMIT" and in_block:
                    on_part(migration, committed + 1)  # commits with this block
                _execute(conn, statement)
                if autocommit_step:
                    committed += 1  # committed as it ran
                    on_part(migration, committed)
            except Exception as exc:
                if in_block:
                    _rollback(conn)
                raise StatementFailed(
                    migration,
                    statement.sql,
                    exc,
                    autocommit=autocommit_step,
                    committed=committed,
                ) from exc
            if control == "BEGIN":
                in_block = True
            elif control in {"COMMIT", "ROLLBACK"}:
                if control == "COMMIT" and in_block:
                    committed += 1
                in_block = False
        if last_commit is None:  # no transaction control: each statement committed alone
            on_applied(migration)
    if in_block:  # a rendering cut short (it always ends with COMMIT): never leave it open
        _rollback(conn)
        raise StatementFailed(
            migrations[-1],
            "(end of the rendered SQL)",
            RuntimeError("the rendered SQL ends inside a transaction block"),
            autocommit=False,
        )


def _execute(conn: Connection, statement: Statement) -> None:
    if _version_table_exists(conn, statement):
        return  # downgraded to base: Alembic online would reuse the (empty) table too
    rowcount = conn.exec_driver_sql(statement.sql).rowcount
    if statement.kind == "UpdateStmt" and statement.relation == "alembic_version" and rowcount != 1:
        raise VersionMismatch(
            f"alembic_version update matched {rowcount} rows, not 1: the database was "
            "migrated by something else while this run held the lock"
        )


def _rollback(conn: Connection) -> None:
    """End the failed block; if the session is gone, PostgreSQL has ended it already."""
    with suppress(Exception):
        conn.exec_driver_sql("ROLLBACK")


def _version_table_exists(conn: Connection, statement: Statement) -> bool:
    """Offline rendering from base always creates ``alembic_version``; it may be there."""
    if statement.kind != "CreateStmt" or statement.relation != "alembic_version":
        return False
    relation = statement.node["relation"]
    schema = relation.get("schemaname")
    name = f"{schema}.alembic_version" if schema else "alembic_version"
    found = conn.exec_driver_sql(f"SELECT to_regclass('{name}') IS NOT NULL").scalar()
    return bool(found)
