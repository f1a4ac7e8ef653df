"""`sightops migrations status`: PostgreSQL current vs head, graph version, last runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from shared.graph import create_driver
from shared.migrate import RunRequest, migration_status, run_migrations
from shared.settings import Settings
from sightops.cli import app
from tests.shared.migrate.helpers import (
    PROJECT_HEAD,
    GraphNamespace,
    install_migrations,
    make_deps,
    migrate_settings,
)


@pytest.fixture
def configured(
    settings: Settings, migration_db: str, graph_ns: GraphNamespace, tmp_path: Path
) -> Settings:
    return migrate_settings(
        settings,
        migration_db,
        versions=install_migrations("apply", tmp_path / "versions"),
        graph_dir=graph_ns.install(tmp_path / "graph"),
        ns=graph_ns,
    )


def test_status_before_and_after_a_run(configured: Settings) -> None:
    driver = create_driver(configured)
    try:
        before = migration_status(configured, driver)
        assert (before.postgres_current, before.postgres_head) == (PROJECT_HEAD, "t002")
        assert before.postgres_pending == ["t001", "t002"]
        assert before.graph is not None and before.graph.pending == [1, 2]
        assert before.runs == [] and before.lock_holder is None

        deps = make_deps(configured)
        try:
            run_migrations(deps, RunRequest("b-42", service="sight-api"))
        finally:
            deps.close()

        after = migration_status(configured, driver)
        assert after.postgres_current == after.postgres_head == "t002"
        assert after.postgres_pending == []
        assert after.graph is not None and (after.graph.current, after.graph.latest) == (2, 2)
        [run] = after.runs
        assert run["status"] == "succeeded" and run["detail"]["build_id"] == "b-42"
    finally:
        driver.close()


def test_an_edited_graph_file_shows_up_as_a_problem(configured: Settings, tmp_path: Path) -> None:
    deps = make_deps(configured)
    try:
        run_migrations(deps, RunRequest("b-1"))
    finally:
        deps.close()
    edited = tmp_path / "graph" / "V0001__thing_key_index.cypher"
    edited.write_text(edited.read_text() + "// edited\n")
    driver = create_driver(configured)
    try:
        status = migration_status(configured, driver)
    finally:
        driver.close()
    assert status.graph is not None
    assert any("was edited after it was applied" in p for p in status.graph.problems)


def test_cli_status_prints_both_stores_and_the_last_runs(
    configured: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    deps = make_deps(configured)
    try:
        run_migrations(deps, RunRequest("b-cli-1", service="sight-api"))
    finally:
        deps.close()
    monkeypatch.setattr("shared.settings.get_settings", lambda: configured)
    result = CliRunner().invoke(app, ["migrations", "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "current t002, head t002 at head" in result.output
    assert "version 2, latest file 2 at latest" in result.output
    assert "b-cli-1" in result.output and "succeeded" in result.output


def test_cli_status_with_postgres_down_shows_the_graph_then_names_the_cause_and_fix(
    configured: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pydantic import SecretStr

    down = configured.model_copy(
        update={
            "database_url": SecretStr("postgresql+asyncpg://sight:x@127.0.0.1:1/sight"),
            "db_connect_timeout_s": 1.0,
        }
    )
    monkeypatch.setattr("shared.settings.get_settings", lambda: down)
    result = CliRunner().invoke(app, ["migrations", "status"], env={"COLUMNS": "200"})
    assert result.exit_code == 3  # the environment (docs/cli.md, "Errors")
    assert "PostgreSQL: unavailable" in result.stdout
    assert "Neo4j: version None, latest file 2 behind" in result.stdout  # the other store, read
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: PostgreSQL is unreachable at 127.0.0.1:1/sight (DATABASE_URL)")
    assert "make dev" in line
    assert "sight:x@" not in result.output
