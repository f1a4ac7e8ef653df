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


def test_intake_settings_take_the_new_env_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INTAKE__USERNAME", "monitoring")
    monkeypatch.setenv("INTAKE__PASSWORD", "projects/p/secrets/intake/versions/latest")
    monkeypatch.setenv("INTAKE__MAX_BODY_BYTES", "1024")
    intake = Settings().intake
    assert intake.username is not None and intake.username.get_secret_value() == "monitoring"
    assert intake.password is not None
    assert intake.password.get_secret_value() == "projects/p/secrets/intake/versions/latest"
    assert intake.max_body_bytes == 1024


def test_the_former_notify_intake_env_names_are_still_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deployments configured before IntakeConfig keep working; a new name wins."""
    monkeypatch.setenv("NOTIFY__INTAKE_USERNAME", "old-user")
    monkeypatch.setenv("NOTIFY__INTAKE_PASSWORD", "old-password")
    monkeypatch.setenv("NOTIFY__INTAKE_MAX_BODY_BYTES", "2048")
    monkeypatch.setenv("NOTIFY__GROUP_WAIT_S", "3")
    old = Settings()
    assert old.intake.username is not None and old.intake.password is not None
    assert (old.intake.username.get_secret_value(), old.intake.password.get_secret_value()) == (
        "old-user",
        "old-password",
    )
    assert old.intake.max_body_bytes == 2048
    assert old.notify.group_wait_s == 3  # the rest of notify is untouched
    assert not hasattr(old.notify, "intake_username")

    monkeypatch.setenv("INTAKE__USERNAME", "new-user")
    mixed = Settings().intake
    assert mixed.username is not None and mixed.username.get_secret_value() == "new-user"
    assert mixed.password is not None and mixed.password.get_secret_value() == "old-password"


def test_each_consumers_maximum_event_age_comes_from_its_setting() -> None:
    from datetime import timedelta

    from shared.errors import ConfigError
    from shared.settings import EVENT_CONSUMERS

    s = Settings.model_validate(
        {
            "migrate": {"max_age_s": 10},
            "rollback": {"max_event_age_s": 20},
            "notify": {"max_event_age_s": 30},
            "kpi": {"refresh_max_age_s": 40},
            "canary": {"max_event_age_s": 50},
            "maintain": {"max_event_age_s": 60},
            "backup": {"max_event_age_s": 70},
        }
    )
    ages = {c: s.max_event_age(c) for c in EVENT_CONSUMERS}
    assert ages == {
        "migrate": timedelta(seconds=10),
        "rollback": timedelta(seconds=20),
        "notify": timedelta(seconds=30),
        "kpi_refresh": timedelta(seconds=40),
        "canary": timedelta(seconds=50),
        "maintain": timedelta(seconds=60),
        "backup": timedelta(seconds=70),
        "backup_drill": timedelta(seconds=70),
    }
    assert Settings().max_event_age("notify") == timedelta(hours=1)  # notify's former default
    with pytest.raises(ConfigError, match="no maximum event age for consumer 'nobody'"):
        s.max_event_age("nobody")
