"""`sightops backup`: what an operator sees and what it refuses, against the real stores,
the Cloud Storage stand-in and the scratch Neo4j (docs/backups.md, docs/cli.md)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from shared.backup import list_manifests
from shared.settings import Settings, get_settings
from sightops.cli import app
from tests.conftest import create_scratch_database, drop_database
from tests.shared.backup.helpers import Gcs, sync_engine

runner = CliRunner(env={"COLUMNS": "200"})


@pytest.fixture
def cli_env(
    settings: Settings, gcs: Gcs, scratch_neo4j: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Gcs]:
    monkeypatch.setenv("DATABASE_URL", settings.database_url.get_secret_value())
    monkeypatch.setenv("BACKUP__BUCKET", gcs.bucket)
    monkeypatch.setenv("BACKUP__STORAGE_ENDPOINT", gcs.url)
    monkeypatch.setenv("BACKUP__SCRATCH_NEO4J_URI", scratch_neo4j)
    get_settings.cache_clear()
    yield gcs
    get_settings.cache_clear()


def test_now_then_list_then_restore_test_shows_a_verified_postgres_backup(cli_env: Gcs) -> None:
    taken = runner.invoke(app, ["backup", "now", "--store", "postgres"])
    assert taken.exit_code == 0, taken.output
    (manifest,) = list_manifests(cli_env.store)
    assert manifest.prefix.startswith("postgres/manual/")
    assert manifest.backup_id in taken.output

    drilled = runner.invoke(app, ["backup", "restore-test", "--store", "postgres"])
    assert drilled.exit_code == 0, drilled.output
    assert f"postgres backup {manifest.backup_id} restored and identical" in drilled.output

    listed = runner.invoke(app, ["backup", "list"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.output.splitlines() if manifest.backup_id in line)
    assert "postgres" in row and manifest.alembic_revision in row
    assert "postgres: newest backup" in listed.output and "fresh" in listed.output
    assert "neo4j: newest backup - old" in listed.output and "STALE" in listed.output


def test_restore_asks_first_refuses_a_non_empty_target_and_restores_into_an_empty_one(
    cli_env: Gcs,
) -> None:
    assert runner.invoke(app, ["backup", "now", "--store", "postgres"]).exit_code == 0
    (manifest,) = list_manifests(cli_env.store)
    target = create_scratch_database("sightops_bk_cli")
    try:
        declined = runner.invoke(app, ["backup", "restore", "--to", target], input="n\n")
        assert declined.exit_code == 1 and "nothing restored" in declined.output
        assert f"restore postgres backup {manifest.backup_id}" in declined.output
        assert "sight-local" not in declined.output  # the URL's password is never shown

        done = runner.invoke(app, ["backup", "restore", "--to", target, "--yes"])
        assert done.exit_code == 0, done.output
        assert "restored and identical" in done.output

        again = runner.invoke(app, ["backup", "restore", "--to", target, "--yes"])
        assert again.exit_code == 1
        assert "already holds rows" in again.output and "--force" in again.output

        forced = runner.invoke(app, ["backup", "restore", "--to", target, "--yes", "--force"])
        assert forced.exit_code == 0, forced.output
        engine = sync_engine(target)
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
        engine.dispose()
        assert revision == manifest.alembic_revision
    finally:
        drop_database(target)


def test_restore_test_without_backups_says_so_and_exits_1(cli_env: Gcs) -> None:
    result = runner.invoke(app, ["backup", "restore-test", "--store", "neo4j"])
    assert result.exit_code == 1
    assert f"no complete neo4j backup in gs://{cli_env.bucket}" in result.output
