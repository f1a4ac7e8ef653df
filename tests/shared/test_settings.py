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
        (
            "postgresql://u:p@db/sight?sslmode=verify-full&sslrootcert=/ca.pem&application_name=a",
            "postgresql+pg8000://u:p@db/sight?application_name=a",
        ),
    ],
)
def test_sync_url_is_derived_from_the_apps_async_url(async_url: str, expected: str) -> None:
    assert sync_database_url(async_url) == expected


def test_tls_parameters_leave_the_url_but_are_kept_for_the_engine() -> None:
    """pg8000 takes no sslmode keyword: dropping it silently would downgrade TLS."""
    s = Settings(
        database_url="postgresql+asyncpg://u:p@db/sight?sslmode=verify-ca&sslrootcert=/ca.pem"  # type: ignore[arg-type]
    )
    assert "ssl" not in s.database_url_sync
    assert s.database_tls == {"sslmode": "verify-ca", "sslrootcert": "/ca.pem"}
    assert Settings(database_url="postgresql://u:p@db/x").database_tls == {}  # type: ignore[arg-type]


def test_the_sync_override_carries_its_own_tls_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://u:p@a/x?ssl=disable")
    monkeypatch.setenv("DATABASE_URL_SYNC", "postgresql+pg8000://v:q@b/y?sslmode=require")
    s = Settings()
    assert s.database_url_sync == "postgresql+pg8000://v:q@b/y"
    assert s.database_tls == {"sslmode": "require"}


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
