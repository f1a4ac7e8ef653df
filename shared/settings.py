"""One typed Settings object per process (pydantic-settings).

Defaults match the local stack started by ``scripts/services`` so tests and ``make dev``
need no environment at all; production sets everything through env and Secret Manager
references.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

_ASYNC_TO_SYNC_DRIVERS = {
    "postgresql+asyncpg": "postgresql+pg8000",
    "postgresql+psycopg": "postgresql+pg8000",
    "postgresql+psycopg2": "postgresql+pg8000",
    "postgresql": "postgresql+pg8000",
    "postgres": "postgresql+pg8000",
    "postgresql+pg8000": "postgresql+pg8000",
}


def sync_database_url(async_url: str) -> str:
    """Derive the pg8000 URL from the app's async URL, keeping credentials and query."""
    url = make_url(async_url)
    driver = _ASYNC_TO_SYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database driver {url.drivername!r}")
    query = {k: v for k, v in url.query.items() if k not in {"ssl", "sslmode"}}
    return url.set(drivername=driver, query=query).render_as_string(hide_password=False)


class Topics(BaseModel):
    cloud_builds: str = "cloud-builds"
    smoke_tests: str = "smoke-tests"
    monitoring_alerts: str = "monitoring-alerts"
    ops_events: str = "ops-events"
    kpi_refresh: str = "kpi-refresh"


# Per-function configuration, nested so env reads e.g. ``ROLLBACK__MAX_PER_WINDOW=3``.
# Each function's owner fills in its own model; defaults must be safe.


class MigrateConfig(BaseModel):
    """The migrate function (DESIGN.md 4.1)."""


class RollbackConfig(BaseModel):
    """The rollback function and smoke runner (DESIGN.md 4.2)."""


class NotifyConfig(BaseModel):
    """The notify and alert_intake functions (DESIGN.md 4.3, 4.4)."""


class KpiConfig(BaseModel):
    """The kpi and kpi_refresh functions (DESIGN.md 4.5)."""


class Settings(BaseSettings):
    """Everything a sight-ops process is configured by."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    environment: Literal["local", "test", "production"] = "local"
    log_level: str = "INFO"

    # PostgreSQL: the app's async URL; everything here uses the derived sync pg8000 URL.
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://sight:sight-local@127.0.0.1:54329/sight"
    )
    database_url_sync_override: SecretStr | None = Field(
        default=None, validation_alias="DATABASE_URL_SYNC"
    )
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout_s: float = 10.0
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 30_000
    db_lock_timeout_ms: int = 30_000

    neo4j_uri: str = "bolt://127.0.0.1:7688"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("sight-local-neo4j")

    redis_url: SecretStr = SecretStr("redis://127.0.0.1:63799/0")
    redis_timeout_s: float = 0.5

    gcp_project: str = "sight-local"
    gcp_region: str = "europe-west1"
    pubsub_emulator_host: str | None = "127.0.0.1:8681"
    topics: Topics = Topics()

    # Cloud API endpoints; set to the local stand-ins in local runs, unset in production.
    cloud_run_endpoint: str | None = None
    secret_manager_endpoint: str | None = None

    metrics_backend: Literal["log", "cloud_monitoring"] = "log"

    # Slack incoming webhook: the URL itself, or a Secret Manager reference to it.
    # Unset: messages are rendered to the log instead of sent.
    slack_webhook_url: SecretStr | None = None
    slack_timeout_s: float = 5.0
    slack_max_retry_wait_s: float = 5.0

    migrate: MigrateConfig = MigrateConfig()
    rollback: RollbackConfig = RollbackConfig()
    notify: NotifyConfig = NotifyConfig()
    kpi: KpiConfig = KpiConfig()

    @property
    def database_url_sync(self) -> str:
        """pg8000 URL (a plain property so it never shows up in repr or dumps)."""
        if self.database_url_sync_override is not None:
            return self.database_url_sync_override.get_secret_value()
        return sync_database_url(self.database_url.get_secret_value())


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (cold start pays for it once)."""
    return Settings()
