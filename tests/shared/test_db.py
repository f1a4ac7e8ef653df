"""The engine and the transaction scope: connections always go back to the pool."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.exc import ProgrammingError

from shared.db import create_db_engine, pool_usage, transaction
from shared.errors import TransientError
from shared.settings import Settings


def test_transaction_commits_on_success_and_releases_the_connection(settings: Settings) -> None:
    engine = create_db_engine(settings, pool_size=2, max_overflow=0)
    with transaction(engine) as conn:
        conn.execute(text("CREATE TEMP TABLE IF NOT EXISTS t_ok (x int)"))
        assert pool_usage(engine)["checked_out"] == 1
    assert pool_usage(engine)["checked_out"] == 0
    engine.dispose()


def test_no_connection_leaks_across_many_failing_transactions(settings: Settings) -> None:
    engine = create_db_engine(settings, pool_size=2, max_overflow=0, pool_timeout=1)
    for _ in range(20):
        with pytest.raises(ProgrammingError), transaction(engine) as conn:
            conn.execute(text("SELECT * FROM no_such_table"))
    with pytest.raises(ZeroDivisionError), transaction(engine) as conn:
        conn.execute(text("SELECT 1"))
        _ = 1 / 0
    assert pool_usage(engine)["checked_out"] == 0
    engine.dispose()


def test_failed_transaction_is_rolled_back(settings: Settings) -> None:
    engine = create_db_engine(settings)
    key = "rollback-probe"
    with pytest.raises(RuntimeError), transaction(engine) as conn:
        conn.execute(
            text("INSERT INTO ops.event_receipts (consumer, event_id) VALUES ('t', :k)"),
            {"k": key},
        )
        raise RuntimeError("boom")
    with engine.connect() as conn:
        found = conn.execute(
            text("SELECT count(*) FROM ops.event_receipts WHERE event_id = :k"), {"k": key}
        ).scalar_one()
    assert found == 0
    engine.dispose()


def test_unreachable_database_is_a_transient_error_without_credentials(
    settings: Settings,
) -> None:
    down = settings.model_copy(
        update={
            "database_url": SecretStr("postgresql+asyncpg://sight:pw-never-shown@127.0.0.1:1/x"),
            "db_connect_timeout_s": 0.5,
        }
    )
    engine = create_db_engine(down)
    with pytest.raises(TransientError) as caught, transaction(engine):
        pass
    assert "pw-never-shown" not in str(caught.value)
    engine.dispose()


def test_statement_timeout_applies_to_every_connection(settings: Settings) -> None:
    engine = create_db_engine(settings.model_copy(update={"db_statement_timeout_ms": 200}))
    with pytest.raises(TransientError), transaction(engine) as conn:
        conn.execute(text("SELECT pg_sleep(2)"))
    engine.dispose()
