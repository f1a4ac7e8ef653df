"""`sightops kpi` when a store is down or the target is wrong: one line naming the store,
where it was looked for and the fix, exit 3 (docs/cli.md, "Errors"); no traceback, no
secret. "Down" is a settings URL pointing at a port nobody listens on, so the shared
services keep running for everyone else."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner, Result

from shared.runtime import Deps, set_process_deps
from shared.settings import get_settings
from sightops.cli import app
from tests.shared.kpi.helpers import SightProject, delete_graph, insert_project

runner = CliRunner()

PG_PASSWORD = "pg-secret-kpi-cli"  # pragma: allowlist secret
REDIS_PASSWORD = "redis-secret-kpi-cli"  # pragma: allowlist secret


@pytest.fixture
def fresh_process(database_url: str) -> Iterator[None]:
    """The CLI builds its deps from env: start from none, and leave none behind."""
    set_process_deps(None)
    get_settings.cache_clear()
    yield
    set_process_deps(None)
    get_settings.cache_clear()


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    result = runner.invoke(app, args, env={"COLUMNS": "200", **(env or {})})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def error_line(result: Result) -> str:
    """The one line the root group prints for an environment problem (exit 3)."""
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "make dev" in line, line
    return line


@pytest.fixture
def project(deps: Deps) -> Iterator[SightProject]:
    made = insert_project(deps, old_personas=1)
    yield made
    delete_graph(deps, [made.id])


REDIS_DOWN = {"REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:1/0"}


def test_kpi_inspect_with_redis_down_names_redis_and_exits_3(fresh_process: None) -> None:
    result = invoke(["kpi", "inspect", str(uuid.uuid4())], REDIS_DOWN)
    assert "Redis is unreachable at 127.0.0.1:1 (REDIS_URL)" in error_line(result)
    assert REDIS_PASSWORD not in result.output


@pytest.mark.parametrize("all_active", [False, True], ids=["one", "all"])
def test_kpi_refresh_local_with_redis_down_names_redis_and_exits_3(
    project: SightProject, fresh_process: None, all_active: bool
) -> None:
    target = "--all" if all_active else str(project.id)
    result = invoke(["kpi", "refresh", target, "--local"], REDIS_DOWN)
    assert "Redis is unreachable at 127.0.0.1:1 (REDIS_URL)" in error_line(result)
    assert REDIS_PASSWORD not in result.output


def test_kpi_get_with_postgresql_down_names_postgresql_and_exits_3(fresh_process: None) -> None:
    url = f"sight:{PG_PASSWORD}@127.0.0.1:1/sight"
    env = {
        "DATABASE_URL": f"postgresql+asyncpg://{url}",
        "DATABASE_URL_SYNC": f"postgresql+pg8000://{url}",
        "DB_CONNECT_TIMEOUT_S": "1",
    }
    result = invoke(["kpi", "get", str(uuid.uuid4())], env)
    line = error_line(result)
    assert "PostgreSQL is unreachable at 127.0.0.1:1/sight (DATABASE_URL)" in line
    assert PG_PASSWORD not in result.output


def test_kpi_get_with_neo4j_down_names_neo4j_and_exits_3(
    project: SightProject, fresh_process: None
) -> None:
    result = invoke(["kpi", "get", str(project.id)], {"NEO4J_URI": "bolt://127.0.0.1:1"})
    assert "Neo4j is unreachable at bolt://127.0.0.1:1 (NEO4J_URI)" in error_line(result)
    assert get_settings().neo4j_password.get_secret_value() not in result.output


def test_kpi_refresh_without_a_target_asks_for_one(fresh_process: None) -> None:
    result = invoke(["kpi", "refresh", "--local"])
    assert result.exit_code == 2
    assert "give a PROJECT_ID or --all" in result.output
    assert "not both" not in result.output


def test_kpi_refresh_with_both_targets_says_not_both(fresh_process: None) -> None:
    result = invoke(["kpi", "refresh", str(uuid.uuid4()), "--all", "--local"])
    assert result.exit_code == 2
    assert "not both" in result.output
