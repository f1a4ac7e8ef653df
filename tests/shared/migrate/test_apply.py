"""Applying the rendered SQL: what runs is exactly what was linted, each migration commits
together with its progress row, and a failure says which statement and what stays."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from pydantic import SecretStr
from sqlalchemy import create_engine
from typer.testing import CliRunner, Result

from shared.db import allow_autocommit_blocks
from shared.errors import TransientError
from shared.migrate import RenderedMigration, migration_engine, run_migrations
from shared.migrate._apply import StatementFailed, apply_rendered
from shared.settings import Settings, get_settings
from sightops.cli import app
from tests.conftest import create_scratch_database, drop_database
from tests.helpers import ROOT
from tests.shared.migrate.helpers import (
    PROJECT_HEAD,
    advisory_lock_is_free,
    make_deps,
    migrate_settings,
    migration_rows,
    request,
    rows,
    scalar,
)


def downgrade_to_base(url: str) -> None:
    """What `alembic downgrade base` leaves: no schema, an empty alembic_version table."""
    engine = create_engine(Settings(database_url=SecretStr(url)).database_url_sync)
    allow_autocommit_blocks(engine)
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    try:
        with engine.connect() as conn:
            config.attributes["connection"] = conn
            command.downgrade(config, "base")
    finally:
        engine.dispose()


def schema_of(url: str) -> dict[str, Any]:
    """The catalog's view of the public and ops schemas: tables, columns, indexes,
    constraints (what any difference between two ways of migrating would change)."""
    schemas = "('public', 'ops')"
    return {
        "columns": rows(
            url,
            "SELECT table_schema, table_name, column_name, ordinal_position, data_type,"
            " udt_name, is_nullable, column_default FROM information_schema.columns"
            f" WHERE table_schema IN {schemas} ORDER BY 1, 2, 4",
        ),
        "indexes": rows(
            url,
            f"SELECT schemaname, indexname, indexdef FROM pg_indexes"
            f" WHERE schemaname IN {schemas} ORDER BY 1, 2",
        ),
        "constraints": rows(
            url,
            "SELECT n.nspname, c.conname, pg_get_constraintdef(c.oid) AS def"
            " FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace"
            f" WHERE n.nspname IN {schemas} ORDER BY 1, 2",
        ),
        "version": scalar(url, "SELECT version_num FROM alembic_version"),
    }


def test_applies_exactly_the_sql_it_linted_not_a_second_online_run(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("offline_only")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "succeeded", outcome.result.error
    assert scalar(migration_db, "SELECT to_regclass('mig_rendered') IS NOT NULL") is True
    assert scalar(migration_db, "SELECT to_regclass('mig_online_only') IS NULL") is True
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == "t001"


def test_the_project_schema_applied_by_migrate_equals_alembic_upgrade_head(
    settings: Settings, migration_db: str
) -> None:
    """migration_db was brought to head by `alembic upgrade head` (online); a second
    database gets there through migrate's rendered SQL, from an empty database."""
    url = create_scratch_database("sightops_mig_offline")
    deps = make_deps(migrate_settings(settings, url, versions=None, graph_dir=None, ns=None))
    try:
        outcome = run_migrations(deps, request())
        assert outcome.status == "succeeded", outcome.result.error
        assert schema_of(url) == schema_of(migration_db)
    finally:
        deps.close()
        drop_database(url)


def test_a_database_downgraded_to_base_is_migrated_again_and_recorded(
    settings: Settings, migration_db: str
) -> None:
    """Offline rendering from base creates alembic_version; after a downgrade it exists
    (empty), and the run must reuse it as Alembic online does."""
    downgrade_to_base(migration_db)
    assert scalar(migration_db, "SELECT count(*) FROM alembic_version") == 0
    deps = make_deps(
        migrate_settings(settings, migration_db, versions=None, graph_dir=None, ns=None)
    )
    try:
        outcome = run_migrations(deps, request())
    finally:
        deps.close()
    assert outcome.status == "succeeded", outcome.result.error
    assert (outcome.result.postgres.from_, outcome.result.postgres.to) == (None, PROJECT_HEAD)
    # ops.actions is created by the first migration; its row commits with it.
    [row] = migration_rows(migration_db)
    assert row["status"] == "succeeded"
    assert row["detail"]["applied"]["postgres"][-1] == PROJECT_HEAD


def test_a_migration_failing_at_commit_is_neither_applied_nor_recorded_as_applied(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("commit_fails")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    error = outcome.result.error or ""
    assert "t001_deferred_violation failed and was rolled back" in error
    assert "23505" in error and "[statement: COMMIT]" in error
    assert scalar(migration_db, "SELECT to_regclass('mig_deferred') IS NULL") is True
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert outcome.result.postgres.to == PROJECT_HEAD
    [row] = migration_rows(migration_db)
    assert row["status"] == "failed"
    assert row["detail"]["applied"]["postgres"] == []


def test_a_version_moved_under_the_migration_rolls_it_back(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("version_moved")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    error = outcome.result.error or ""
    assert "t001_moves_the_version failed and was rolled back" in error
    assert "alembic_version update matched 0 rows" in error
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert scalar(migration_db, "SELECT to_regclass('mig_moved') IS NULL") is True


def test_a_failing_autocommit_step_says_what_stays_committed(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("autocommit_fails")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    error = outcome.result.error or ""
    assert "t001_unique_index_on_duplicates failed after part of it had committed" in error
    assert "1 part(s) committed" in error and "will not run it again" in error
    assert "CREATE UNIQUE INDEX CONCURRENTLY ux_mig_dupes_k" in error
    # The block before the step committed; the revision did not move.
    assert scalar(migration_db, "SELECT count(*) FROM mig_dupes") == 2
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert outcome.result.postgres.to == PROJECT_HEAD
    [row] = migration_rows(migration_db)
    assert row["detail"]["partial"] == {
        "revision": "t001",
        "migration": "t001_unique_index_on_duplicates",
        "committed": 1,
    }


@contextmanager
def lock_held_on_projects(url: str, mode: str = "SHARE UPDATE EXCLUSIVE") -> Iterator[None]:
    """Another session holding a lock on `projects` (by default what CREATE INDEX
    CONCURRENTLY needs)."""
    engine = create_engine(Settings(database_url=SecretStr(url)).database_url_sync)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"LOCK TABLE projects IN {mode} MODE")
            yield
            conn.rollback()
    finally:
        engine.dispose()


def resolve_partial_cli(url: str, revision: str, note: str) -> Result:
    """`sightops migrations resolve-partial` against the test's database."""
    previous = os.environ.get("DATABASE_URL")
    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    try:
        return CliRunner().invoke(
            app, ["migrations", "resolve-partial", revision, "--note", note, "--actor", "test"]
        )
    finally:
        if previous is None:
            os.environ.pop("DATABASE_URL", None)
        else:
            os.environ["DATABASE_URL"] = previous
        get_settings.cache_clear()


def execute(url: str, sql: str) -> None:
    engine = create_engine(Settings(database_url=SecretStr(url)).database_url_sync)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


def test_a_partly_applied_migration_is_never_repeated_until_an_operator_resolves_it(
    deps_for: object, migration_db: str
) -> None:
    """Lock contention on the index step after the first block committed: retrying
    would run the block again (a second row), so the run fails at once and every later
    build refuses the revision until an operator has undone the part and said so."""
    deps = deps_for("split")  # type: ignore[operator]
    with lock_held_on_projects(migration_db):
        first = run_migrations(deps, request("b-1"))  # not TransientError: no retry
    assert first.status == "failed"
    assert "55P03" in (first.result.error or "")
    assert "t001_split_by_concurrent_index failed after part of it had committed" in (
        first.result.error or ""
    )
    assert scalar(migration_db, "SELECT count(*) FROM mig_counter") == 1
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD

    again = run_migrations(deps, request("b-2"))  # a rebuild, nothing held any more
    assert again.status == "failed"
    assert "t001_split_by_concurrent_index was partly applied by build b-1" in (
        again.result.error or ""
    )
    assert scalar(migration_db, "SELECT count(*) FROM mig_counter") == 1  # not repeated

    refused = resolve_partial_cli(migration_db, "t001", " ")
    assert refused.exit_code != 0 and "say what was done by hand" in refused.output
    execute(migration_db, "DROP TABLE mig_counter")  # the operator undoes the part...
    resolved = resolve_partial_cli(migration_db, "t001", "dropped mig_counter")
    assert resolved.exit_code == 0, resolved.output
    assert "build(s) b-1" in resolved.output

    third = run_migrations(deps, request("b-3"))  # ...and the next build applies it whole
    assert third.status == "succeeded", third.result.error
    assert scalar(migration_db, "SELECT count(*) FROM mig_counter") == 1
    assert scalar(migration_db, "SELECT to_regclass('ix_projects_created_at') IS NOT NULL")
    assert resolve_partial_cli(migration_db, "t001", "again").exit_code == 1  # nothing left


def test_the_migration_session_autocommits_and_leaves_no_transaction_open(
    deps_for: object, migration_db: str
) -> None:
    """Bookkeeping costs one round trip per statement, and nothing idles in a transaction
    (which would hold a snapshot and stall CREATE INDEX CONCURRENTLY elsewhere)."""
    deps = deps_for("apply")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "succeeded", outcome.result.error
    with migration_engine(deps.settings).connect() as conn:  # the pooled session
        assert conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]
    idle_in_txn = scalar(
        migration_db,
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
        " AND state LIKE 'idle in transaction%'",
    )
    assert idle_in_txn == 0


def test_a_migration_raising_in_python_halfway_applies_nothing_and_is_named(
    deps_for: object, migration_db: str
) -> None:
    """The set is rendered (and linted) before anything runs, so a migration whose Python
    raises stops the whole set: nothing half-applied, not even the clean one before it."""
    deps = deps_for("python_raises")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    error = outcome.result.error or ""
    assert "could not render migration t002_raises_halfway offline, nothing applied" in error
    assert "RuntimeError: persona backfill mapping is missing" in error
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert scalar(migration_db, "SELECT to_regclass('mig_fine') IS NULL") is True
    assert scalar(migration_db, "SELECT to_regclass('mig_half_python') IS NULL") is True
    assert advisory_lock_is_free(migration_db)


def test_a_rerun_lints_its_migrations_with_the_tables_this_build_already_created(
    deps_for: object, migration_db: str
) -> None:
    """t001 committed a new table, t002 (a plain index on it) hit contention and was
    retried: on the redelivery the table is still this build's own, not an existing one."""
    deps = deps_for("rerun_lint")  # type: ignore[operator]
    with lock_held_on_projects(migration_db, "ACCESS EXCLUSIVE"), pytest.raises(TransientError):
        run_migrations(deps, request("b-1"))
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == "t001"
    rerun = run_migrations(deps, request("b-1"))
    assert rerun.status == "succeeded", rerun.result.error
    assert rerun.result.postgres.from_ == PROJECT_HEAD and rerun.result.postgres.to == "t002"
    assert [f.rule for f in rerun.result.lint_findings] == []


def test_settings_a_previous_run_left_on_the_pooled_session_do_not_leak_into_the_next(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply")  # type: ignore[operator]
    with migration_engine(deps.settings).connect() as conn:  # the session migrate reuses
        conn.exec_driver_sql("SET search_path = ops")
    outcome = run_migrations(deps, request())
    assert outcome.status == "succeeded", outcome.result.error
    assert scalar(migration_db, "SELECT to_regclass('public.mig_applied') IS NOT NULL") is True
    assert scalar(migration_db, "SELECT to_regclass('ops.mig_applied') IS NULL") is True


def test_a_rendering_that_ends_inside_a_transaction_is_rolled_back_not_left_open(
    settings: Settings, migration_db: str
) -> None:
    cut = RenderedMigration("t9", "t9_cut_short", "", "BEGIN;\nCREATE TABLE mig_cut (i int);\n")
    engine = migration_engine(
        migrate_settings(settings, migration_db, versions=None, graph_dir=None, ns=None)
    )
    with engine.connect() as conn:
        with pytest.raises(StatementFailed, match="ends inside a transaction block"):
            apply_rendered(
                conn,
                [cut],
                before=lambda m: None,
                on_part=lambda m, n: None,
                on_applied=lambda m: None,
            )
        assert conn.exec_driver_sql("SELECT to_regclass('mig_cut') IS NULL").scalar() is True
    assert scalar(migration_db, "SELECT to_regclass('mig_cut') IS NULL") is True


@pytest.mark.parametrize(
    ("code", "lost"),
    [
        ("57P01", True),  # admin shutdown: the session is gone
        ("08006", True),  # connection failure
        ("53100", False),  # disk full: the session is fine, the error is recorded
        ("53200", False),  # out of shared memory (too many locks)
        ("08P01", False),  # protocol violation: the same statement fails the same way
    ],
)
def test_only_errors_that_end_the_session_count_as_a_lost_session(
    settings: Settings, migration_db: str, code: str, lost: bool
) -> None:
    """A lost session cannot record anything, so the run retries without a verdict;
    any other error must be recorded (and end `failed` on the last attempt)."""
    import pg8000.dbapi
    from sqlalchemy.exc import ProgrammingError

    from shared.migrate._run import _session_lost

    error = ProgrammingError("SELECT 1", {}, pg8000.dbapi.ProgrammingError({"C": code, "M": "x"}))
    engine = migration_engine(
        migrate_settings(settings, migration_db, versions=None, graph_dir=None, ns=None)
    )
    with engine.connect() as conn:  # a live session
        assert _session_lost(error, conn) is lost
