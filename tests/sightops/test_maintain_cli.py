"""`sightops maintain run [--dry-run]`: the maintain function's run from a terminal, on a
real database with a bloated pgvector index (docs/maintain.md, docs/cli.md)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner, Result

from shared.events import MaintenanceResult
from shared.migrate import lock_key
from shared.runtime import set_process_deps
from shared.settings import Settings, get_settings
from sightops.cli import app
from tests.functions.maintain.helpers import INDEX, bloat_vectors, maintain_db, sync_engine
from tests.shared.migrate.helpers import OpsTopic, ops_topic

__all__ = ["maintain_db", "ops_topic"]

runner = CliRunner()


@pytest.fixture
def schema(maintain_db: str) -> str:
    name = f"c_{uuid.uuid4().hex[:10]}"
    engine = sync_engine(maintain_db)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")
    engine.dispose()
    bloat_vectors(maintain_db, name)
    return name


@pytest.fixture
def env(maintain_db: str, schema: str, ops_topic: OpsTopic) -> Iterator[dict[str, str]]:
    """The CLI builds its settings from env: this test's database, schema and topic."""
    set_process_deps(None)
    get_settings.cache_clear()
    yield {
        "COLUMNS": "250",
        "DATABASE_URL": maintain_db,
        "TOPICS__OPS_EVENTS": ops_topic.name,
        "MAINTAIN__SCHEMAS": f'["{schema}"]',
        "MAINTAIN__MIN_INDEX_BYTES": str(256 * 1024),
        "MAINTAIN__LOCK_WAIT_S": "0.3",
        "MAINTAIN__GRAPH_ENABLED": "false",
    }
    get_settings.cache_clear()


def invoke(args: list[str], env: dict[str, str]) -> Result:
    result = runner.invoke(app, args, env=env)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def index_size(url: str, schema: str) -> int:
    engine = sync_engine(url)
    with engine.connect() as conn:
        size = conn.execute(
            text("SELECT pg_relation_size(to_regclass(:n))"), {"n": f"{schema}.{INDEX}"}
        ).scalar_one()
    engine.dispose()
    return int(size)


def test_a_dry_run_prints_the_estimate_records_it_as_manual_and_rebuilds_nothing(
    maintain_db: str, schema: str, env: dict[str, str], ops_topic: OpsTopic
) -> None:
    before = index_size(maintain_db, schema)
    result = invoke(["maintain", "run", "--dry-run"], env)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.output.splitlines() if INDEX in line)
    assert "hnsw" in row and "would_reindex" in row
    assert re.search(r"kB, a fresh build about \d+\.\d kB: bloat 7\d % ≥ 50 %", row), row
    assert "maintain (dry run)" in result.output
    assert index_size(maintain_db, schema) == before

    engine = sync_engine(maintain_db)
    with engine.connect() as conn:
        actor, status = conn.execute(
            text(
                "SELECT actor, status FROM ops.actions WHERE kind = 'maintenance'"
                " AND detail->'indexes'->0->>'schema_name' = :s"
            ),
            {"s": schema},
        ).one()
    engine.dispose()
    assert actor.startswith("manual:") and status == "completed"
    [(data, attributes)] = ops_topic.pull(wait_for=1)
    assert attributes["type"] == "sight.ops.maintain.completed"
    assert MaintenanceResult.model_validate(data).done[0].action == "would_reindex"


def test_a_run_during_a_migration_says_it_was_skipped_and_exits_1(
    maintain_db: str, env: dict[str, str]
) -> None:
    migration = sync_engine(maintain_db).connect()
    key = lock_key(Settings(database_url=SecretStr(maintain_db)).migrate.lock_name)
    migration.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
    try:
        result = invoke(["maintain", "run"], env)
    finally:
        migration.close()
    assert result.exit_code == 1
    assert "skipped: a migration holds the lock" in result.output
