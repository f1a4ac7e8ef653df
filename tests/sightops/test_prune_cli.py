"""`sightops prune [--dry-run]`: the scheduled pruning from a terminal, with its counts; and
one line naming the cause and the fix, exit 3, no traceback, no secret when the database is
down or not migrated (docs/cli.md, "Errors")."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import text
from typer.testing import CliRunner, Result

from shared.runtime import Deps, set_process_deps
from shared.settings import get_settings
from sightops.cli import app
from tests.conftest import create_scratch_database, drop_database

runner = CliRunner()
PG_PASSWORD = "pg-secret-prune-cli"  # pragma: allowlist secret
DAY = timedelta(days=1)


@pytest.fixture
def fresh_process(database_url: str) -> Iterator[None]:
    """The CLI builds its deps from env (DATABASE_URL is the session's scratch database)."""
    set_process_deps(None)
    get_settings.cache_clear()
    yield
    set_process_deps(None)
    get_settings.cache_clear()


@pytest.fixture
def old_rows(deps: Deps) -> Iterator[str]:
    """Three receipts and two rejected events past retention, one receipt within it."""
    consumer = "cli-" + uuid.uuid4().hex[:8]
    now = deps.clock()
    with deps.engine.begin() as conn:
        for i, age in enumerate((8 * DAY, 9 * DAY, 10 * DAY, DAY)):
            conn.execute(
                text(
                    "INSERT INTO ops.event_receipts (consumer, event_id, received_at)"
                    " VALUES (:c, :e, :at)"
                ),
                {"c": consumer, "e": f"e{i}", "at": now - age},
            )
        for i in range(2):
            conn.execute(
                text(
                    "INSERT INTO ops.rejected_events (consumer, reason, received_at)"
                    " VALUES (:c, 'bad', :at)"
                ),
                {"c": consumer, "at": now - 31 * DAY - i * DAY},
            )
    yield consumer
    with deps.engine.begin() as conn:
        conn.execute(text("DELETE FROM ops.event_receipts WHERE consumer = :c"), {"c": consumer})
        conn.execute(text("DELETE FROM ops.rejected_events WHERE consumer = :c"), {"c": consumer})


def invoke(args: list[str], env: dict[str, str] | None = None) -> Result:
    result = runner.invoke(app, args, env={"COLUMNS": "200", **(env or {})})
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def count_in_row(output: str, table: str) -> int:
    """The deleted / would-delete count printed on ``table``'s row."""
    row = next(line for line in output.splitlines() if table in line)
    cells = [c.strip() for c in re.split(r"[│|]", row) if c.strip()]
    return int(cells[3])


def left(deps: Deps, consumer: str) -> tuple[int, int]:
    with deps.engine.connect() as conn:
        receipts = conn.execute(
            text("SELECT count(*) FROM ops.event_receipts WHERE consumer = :c"), {"c": consumer}
        ).scalar_one()
        rejected = conn.execute(
            text("SELECT count(*) FROM ops.rejected_events WHERE consumer = :c"), {"c": consumer}
        ).scalar_one()
    return int(receipts), int(rejected)


def test_prune_dry_run_prints_what_would_go_and_deletes_nothing(
    deps: Deps, old_rows: str, fresh_process: None
) -> None:
    result = invoke(["prune", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would delete" in result.output
    assert count_in_row(result.output, "ops.event_receipts") == 3
    assert count_in_row(result.output, "ops.rejected_events") == 2
    assert left(deps, old_rows) == (4, 2)


def test_prune_deletes_past_retention_and_prints_the_counts(
    deps: Deps, old_rows: str, fresh_process: None
) -> None:
    result = invoke(["prune"])
    assert result.exit_code == 0, result.output
    assert count_in_row(result.output, "ops.event_receipts") == 3
    assert count_in_row(result.output, "ops.rejected_events") == 2
    assert left(deps, old_rows) == (1, 0)
    assert "7d" in result.output and "30d" in result.output  # the retentions applied


def test_prune_says_when_the_configured_receipt_retention_is_below_the_floor(
    deps: Deps, old_rows: str, fresh_process: None
) -> None:
    result = invoke(["prune", "--dry-run"], {"HOUSEKEEPING__RECEIPTS_RETENTION_S": "60"})
    assert result.exit_code == 0, result.output
    assert "below the floor 1d 1h" in result.output
    # 25 h floor: the one-day-old receipt is still kept.
    assert count_in_row(result.output, "ops.event_receipts") == 3


def test_prune_with_postgresql_down_names_it_and_the_fix_and_exits_3(
    fresh_process: None,
) -> None:
    url = f"sight:{PG_PASSWORD}@127.0.0.1:1/sight"
    env = {
        "DATABASE_URL": f"postgresql+asyncpg://{url}",
        "DATABASE_URL_SYNC": f"postgresql+pg8000://{url}",
        "DB_CONNECT_TIMEOUT_S": "1",
    }
    result = invoke(["prune"], env)
    assert result.exit_code == 3
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: PostgreSQL is unreachable at 127.0.0.1:1/sight (DATABASE_URL)")
    assert "make dev" in line
    assert PG_PASSWORD not in result.output


def test_prune_on_an_unmigrated_database_says_so(fresh_process: None) -> None:
    url = create_scratch_database("sightops_prune_empty")
    try:
        result = invoke(["prune", "--dry-run"], {"DATABASE_URL": url})
    finally:
        drop_database(url)
    assert result.exit_code == 3
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: the ops tables do not exist at ")
    assert "not migrated (`alembic upgrade head`)" in line
