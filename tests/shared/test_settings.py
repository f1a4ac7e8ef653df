from __future__ import annotations

import pytest

from shared.settings import Settings, sync_database_url


@pytest.mark.parametrize(
    ("async_url", "expected"),
    [
        ("postgresql+asyncpg://u:p@db:5432/sight", "postgresql+pg8000://u:p@db:5432/sight"),
        ("postgresql://u:p@db/sight", "postgresql+pg8000://u:p@db/sight"),
        (
            "postgresql+asyncpg://u:p%40ss@db/sight?ssl=require",
            "postgresql+pg8000://u:p%40ss@db/sight",
        ),
    ],
)
def test_sync_url_is_derived_from_the_apps_async_url(async_url: str, expected: str) -> None:
    assert sync_database_url(async_url) == expected


def test_unsupported_driver_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="unsupported database driver 'mysql'"):
        sync_database_url("mysql://u:p@db/sight")


def test_explicit_database_url_sync_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@a/x")
    monkeypatch.setenv("DATABASE_URL_SYNC", "postgresql+pg8000://v:q@b/y")
    assert Settings().database_url_sync == "postgresql+pg8000://v:q@b/y"


def test_settings_repr_and_dump_never_show_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:hunter2-db@a/x")
    monkeypatch.setenv("NEO4J_PASSWORD", "hunter2-graph")
    monkeypatch.setenv("SLACK_WEBHOOK_URL", "https://hooks.example/services/T1/B2/hunter2hook")
    s = Settings()
    shown = repr(s) + str(s.model_dump()) + s.model_dump_json()
    for secret in ("hunter2-db", "hunter2-graph", "hunter2hook"):
        assert secret not in shown


def test_topics_are_configurable_by_nested_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOPICS__OPS_EVENTS", "ops-events-staging")
    assert Settings().topics.ops_events == "ops-events-staging"
