"""The engine and the transaction scope: connections always go back to the pool."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, ProgrammingError

from shared.db import (
    create_db_engine,
    db_connect_args,
    pg8000_target,
    pool_usage,
    tls_connect_args,
    transaction,
)
from shared.errors import ConfigError, TransientError
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


# --- TLS: the URL's sslmode reaches pg8000 as ssl_context (libpq semantics) -----------------


@pytest.mark.parametrize("params", [{}, {"sslmode": "prefer"}, {"sslmode": "allow"}])
def test_prefer_allow_and_nothing_leave_pg8000s_opportunistic_default(
    params: dict[str, str],
) -> None:
    assert tls_connect_args(params) == {}


@pytest.mark.parametrize("params", [{"sslmode": "disable"}, {"ssl": "false"}, {"ssl": "disable"}])
def test_disable_means_no_tls_at_all(params: dict[str, str]) -> None:
    assert tls_connect_args(params) == {"ssl_context": False}


@pytest.mark.parametrize(
    ("params", "verify", "hostname"),
    [
        ({"sslmode": "require"}, ssl.CERT_NONE, False),
        ({"ssl": "require"}, ssl.CERT_NONE, False),
        ({"ssl": "true"}, ssl.CERT_NONE, False),  # asyncpg's spelling
        ({"sslmode": "verify-ca"}, ssl.CERT_REQUIRED, False),
        ({"sslmode": "verify-full"}, ssl.CERT_REQUIRED, True),
        ({"sslmode": "VERIFY-FULL"}, ssl.CERT_REQUIRED, True),
        ({"ssl": "verify-full"}, ssl.CERT_REQUIRED, True),
        ({"sslmode": "verify-full", "ssl": "disable"}, ssl.CERT_REQUIRED, True),  # sslmode wins
    ],
)
def test_require_and_verify_modes_build_the_matching_ssl_context(
    params: dict[str, str], verify: ssl.VerifyMode, hostname: bool
) -> None:
    context = tls_connect_args(params)["ssl_context"]
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == verify
    assert context.check_hostname is hostname


def test_require_with_a_root_certificate_verifies_the_chain_as_libpq_does() -> None:
    ca = ssl.get_default_verify_paths().cafile
    if not ca:
        pytest.skip("no system CA bundle file to stand in for sslrootcert")
    context = tls_connect_args({"sslmode": "require", "sslrootcert": ca})["ssl_context"]
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False


@pytest.mark.parametrize(
    "params",
    [
        {"sslmode": "sometimes"},
        {"ssl": "maybe"},
        {"sslmode": "prefer", "sslrootcert": "/ca.pem"},  # would be silently unverified
        {"sslmode": "require", "sslkey": "/k.pem"},
    ],
)
def test_unusable_tls_parameters_are_a_config_error(params: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        tls_connect_args(params)


def test_every_sync_engine_helper_carries_the_urls_sslmode() -> None:
    s = Settings(
        database_url="postgresql+asyncpg://u:p@db/x?sslmode=verify-full",  # type: ignore[arg-type]
        db_connect_timeout_s=3.0,
    )
    args = db_connect_args(s)
    assert args["timeout"] == 3.0
    assert args["ssl_context"].check_hostname is True
    # Alembic's env.py: the settings' URL, or an explicit URL with its own sslmode.
    url, own = pg8000_target(s.database_url_sync, s)
    assert url == s.database_url_sync and own["ssl_context"].check_hostname is True
    url, explicit = pg8000_target("postgresql+pg8000://u:p@other/x?sslmode=disable", s)
    assert url == "postgresql+pg8000://u:p@other/x"
    assert explicit == {"timeout": 3.0, "ssl_context": False}


def _with_sslmode(settings: Settings, mode: str) -> Settings:
    url = make_url(settings.database_url.get_secret_value()).update_query_dict({"sslmode": mode})
    return settings.model_copy(
        update={"database_url": SecretStr(url.render_as_string(hide_password=False))}
    )


def test_sslmode_disable_connects_to_the_local_server_in_clear_text(settings: Settings) -> None:
    engine = create_db_engine(_with_sslmode(settings, "disable"), pool_size=1, max_overflow=0)
    with transaction(engine) as conn:
        encrypted = conn.execute(
            text("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        ).scalar_one()
    assert encrypted is False
    engine.dispose()


@pytest.mark.parametrize("mode", ["require", "verify-full"])
def test_a_required_tls_mode_never_falls_back_to_clear_text(settings: Settings, mode: str) -> None:
    """The local server has no TLS: refusing to connect is the only right answer."""
    engine = create_db_engine(_with_sslmode(settings, mode), pool_size=1, max_overflow=0)
    with pytest.raises(InterfaceError, match="Server refuses SSL"), engine.connect():
        pass
    engine.dispose()


def test_the_migration_engine_gets_the_urls_sslmode_too(settings: Settings) -> None:
    from shared.migrate._run import _engines, migration_engine

    # Its own URL (application_name), so the shared engine cache keeps no require engine.
    probe = _with_sslmode(settings, "require")
    url = make_url(probe.database_url.get_secret_value()).update_query_dict(
        {"application_name": "sightops-tls-probe"}
    )
    probe = probe.model_copy(
        update={"database_url": SecretStr(url.render_as_string(hide_password=False))}
    )
    engine = migration_engine(probe)
    try:
        with pytest.raises(InterfaceError, match="Server refuses SSL"), engine.connect():
            pass
    finally:
        _engines.pop(probe.database_url_sync, None)
        engine.dispose()


def test_alembics_own_engine_gets_the_urls_sslmode_too(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from alembic import command
    from alembic.config import Config

    from shared.settings import get_settings
    from tests.helpers import ROOT

    monkeypatch.setenv(
        "DATABASE_URL", _with_sslmode(settings, "require").database_url.get_secret_value()
    )
    monkeypatch.delenv("DATABASE_URL_SYNC", raising=False)
    get_settings.cache_clear()
    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    config.attributes["configure_logger"] = False
    try:
        with pytest.raises(InterfaceError, match="Server refuses SSL"):
            command.current(config)
    finally:
        get_settings.cache_clear()
