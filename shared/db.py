"""PostgreSQL access through the sync pg8000 driver.

A connection is only ever used inside :func:`transaction`, which always returns it to
the pool (commit on success, rollback on any exception), so a handler cannot leak one.
Connectivity failures are mapped to :class:`TransientError` so Pub/Sub retries them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.errors import TransientError
from shared.settings import Settings

# SQLSTATEs a retry can cure: connection exceptions, insufficient resources, operator
# intervention (admin shutdown, cannot connect now), statement and lock timeouts,
# deadlocks, serialization failures.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "57014", "55P03", "40001", "40P01")


def create_db_engine(settings: Settings, **overrides: Any) -> Engine:
    """An Engine with bounded pool waits, connect timeout and a default statement timeout."""
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": {"timeout": settings.db_connect_timeout_s},
    }
    options.update(overrides)
    engine = create_engine(settings.database_url_sync, **options)
    statement_timeout = int(settings.db_statement_timeout_ms)
    lock_timeout = int(settings.db_lock_timeout_ms)

    @event.listens_for(engine, "connect")
    def _set_session_defaults(dbapi_conn: Any, _record: Any) -> None:
        cursor = dbapi_conn.cursor()
        cursor.execute(f"SET statement_timeout = {statement_timeout}")
        # Bounds every lock wait, including a duplicate delivery waiting on a receipt.
        cursor.execute(f"SET lock_timeout = {lock_timeout}")
        cursor.execute("SET application_name = 'sight-ops'")
        cursor.close()
        dbapi_conn.commit()

    return engine


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pg8000 error wrapped by SQLAlchemy, if there is one."""
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], dict):
        code = args[0].get("C")
        return str(code) if code else None
    return None


def is_transient(exc: BaseException) -> bool:
    if isinstance(exc, PoolTimeoutError | InterfaceError):
        return True
    if isinstance(exc, OperationalError):
        return True
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        state = sqlstate(exc)
        return bool(state and state.startswith(_TRANSIENT_SQLSTATE_PREFIXES))
    return isinstance(exc, ConnectionError | TimeoutError | OSError)


@contextmanager
def transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction on a pooled connection; always released, errors classified."""
    try:
        with engine.begin() as conn:
            yield conn
    except TransientError:
        raise
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"database unavailable: {type(exc).__name__}") from exc
        raise


def pool_usage(engine: Engine) -> dict[str, int]:
    """Checked-out and idle connections, for the pool-usage metric."""
    pool: Any = engine.pool
    return {
        "checked_out": int(pool.checkedout()) if hasattr(pool, "checkedout") else 0,
        "idle": int(pool.checkedin()) if hasattr(pool, "checkedin") else 0,
    }


def ping(engine: Engine) -> None:
    with transaction(engine) as conn:
        conn.execute(text("SELECT 1"))


def is_autocommit(conn: Connection) -> bool:
    """Whether the DBAPI session autocommits (``isolation_level="AUTOCOMMIT"``, set on the
    engine or per connection)."""
    return bool(getattr(conn.connection.dbapi_connection, "autocommit", False))


def end_transaction(conn: Connection) -> None:
    """Commit what ``conn`` just did. An autocommit session has nothing to commit, and
    pg8000 would still send a ``COMMIT`` round trip (PostgreSQL: "no transaction in
    progress")."""
    if not is_autocommit(conn):
        conn.commit()


def allow_autocommit_blocks(engine: Engine) -> None:
    """Make Alembic's ``autocommit_block()`` (CREATE INDEX CONCURRENTLY) work on pg8000.

    The block first asks for the current isolation level, a ``SHOW`` that makes pg8000
    open a DBAPI transaction SQLAlchemy does not know about; switching to autocommit does
    not end it, so the next statement still runs "inside a transaction block". SQLAlchemy
    refuses the switch while one of *its* transactions is open, so what is open at that
    point is only the implicit one: end it.
    """
    event.listen(engine, "set_connection_execution_options", _end_implicit_transaction)


def _end_implicit_transaction(conn: Connection, opts: dict[str, Any]) -> None:
    if opts.get("isolation_level") == "AUTOCOMMIT":
        dbapi_conn = conn.connection.dbapi_connection
        if dbapi_conn is not None and getattr(dbapi_conn, "_in_transaction", True):
            dbapi_conn.rollback()
