"""Alembic environment for the Sight PostgreSQL schema and sight-ops' `ops` schema.

Where the connection comes from (first match wins):

1. ``config.attributes["connection"]``: a SQLAlchemy ``Connection`` or ``Engine`` handed over
   by the caller (Alembic cookbook, "Sharing a Connection across one or more programmatic
   migration commands"); tests and scripts use this. If the Connection is already inside a
   transaction, every pending migration runs in that one transaction and the CALLER
   commits; otherwise Alembic commits each migration on its own
   (``transaction_per_migration``).
2. ``-x url=postgresql+pg8000://...`` on the command line.
3. ``sqlalchemy.url``, only when set programmatically (``Config.set_main_option``); alembic.ini
   holds no URL.
4. ``shared.settings``: ``DATABASE_URL_SYNC``, else the pg8000 URL derived from ``DATABASE_URL``.

Offline mode (``alembic upgrade --sql``) never connects: it only needs the dialect, and renders
plain SQL with literal values. The migrate function renders the pending migrations this way,
lints that SQL and applies exactly it (shared/migrate/_apply.py), so migrations must do
everything through ``op`` (no Python-side data reads, no branching on offline mode).
"""

from __future__ import annotations

from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy import Connection, Engine, create_engine, pool

from shared.db import allow_autocommit_blocks

config = context.config

# Migrations are hand-written and self-contained (op.create_table & co.); there is no
# application MetaData to autogenerate against.
target_metadata = None

# Schemas this project's migrations own or touch. The alembic_version table stays in the
# default schema (public); only the objects live in `ops`.
MANAGED_SCHEMAS = frozenset({None, "public", "ops"})


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """Autogenerate/compare: look at `public` and `ops`, nothing else in the database."""
    if type_ == "schema":
        return name in MANAGED_SCHEMAS
    return True


COMMON_OPTS: dict[str, Any] = {
    "target_metadata": target_metadata,
    "transaction_per_migration": True,
    "compare_type": True,
    "include_schemas": True,
    "include_name": _include_name,
}


def _database_url() -> str:
    """The sync (pg8000) URL: -x url=..., then sqlalchemy.url, then settings."""
    x_url = context.get_x_argument(as_dictionary=True).get("url")
    if x_url:
        return x_url
    ini_url = config.get_main_option("sqlalchemy.url")
    if ini_url:
        return ini_url
    # Imported late: with a connection or URL given, settings are never read.
    from shared.settings import get_settings

    return get_settings().database_url_sync


def run_migrations_offline() -> None:
    """Render SQL for the pending migrations without connecting (``--sql``)."""
    context.configure(
        url=_database_url(),
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        **COMMON_OPTS,
    )
    with context.begin_transaction():
        context.run_migrations()


def _run_with_connection(connection: Connection) -> None:
    context.configure(connection=connection, **COMMON_OPTS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    """Apply migrations through a caller's connection/engine, or one we open ourselves."""
    given = config.attributes.get("connection")
    if isinstance(given, Connection):
        _run_with_connection(given)
        return
    if isinstance(given, Engine):
        with given.connect() as connection:
            _run_with_connection(connection)
        return
    if given is not None:
        raise TypeError(
            f'config.attributes["connection"] must be a Connection or Engine, not {type(given)!r}'
        )

    from shared.db import pg8000_target
    from shared.settings import get_settings

    # The URL's sslmode becomes pg8000's ssl_context, as for every other sync engine.
    url, connect_args = pg8000_target(_database_url(), get_settings())
    engine = create_engine(url, poolclass=pool.NullPool, connect_args=connect_args)
    allow_autocommit_blocks(engine)
    try:
        with engine.connect() as connection:
            _run_with_connection(connection)
    finally:
        engine.dispose()


# Logging from alembic.ini only for the command line: a process that embeds Alembic and hands
# over its connection keeps its own logging (and fileConfig must not disable its loggers).
if (
    config.config_file_name is not None
    and config.attributes.get("connection") is None
    and config.attributes.get("configure_logger", True)
):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
