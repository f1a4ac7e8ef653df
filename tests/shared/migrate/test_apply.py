"""Applying the rendered SQL: what runs is exactly what was linted, each migration commits
together with its progress row, and a failure says which statement and what stays."""

from __future__ import annotations

from typing import Any

from alembic import command
from alembic.config import Config
from pydantic import SecretStr
from sqlalchemy import create_engine

from shared.db import allow_autocommit_blocks
from shared.migrate import migration_engine, run_migrations
from shared.settings import Settings
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
    assert "t001_unique_index_on_duplicates failed in a step outside a transaction" in error
    assert "what it committed before that step stays" in error
    assert "CREATE UNIQUE INDEX CONCURRENTLY ux_mig_dupes_k" in error
    # The block before the step committed; the revision did not move.
    assert scalar(migration_db, "SELECT count(*) FROM mig_dupes") == 2
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert outcome.result.postgres.to == PROJECT_HEAD


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
