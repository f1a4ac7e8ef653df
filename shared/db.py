"""PostgreSQL access through the sync pg8000 driver.

A connection is only ever used inside :func:`transaction`, which always returns it to
the pool (commit on success, rollback on any exception), so a handler cannot leak one.
Connectivity failures are mapped to :class:`TransientError` so Pub/Sub retries them.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from pg8000.dbapi import DatabaseError as PgDatabaseError
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from shared.errors import ConfigError, TransientError
from shared.settings import Settings, database_tls, strip_tls

# SQLSTATEs a retry can cure: connection exceptions, insufficient resources, operator
# intervention (admin shutdown, cannot connect now), statement and lock timeouts,
# deadlocks, serialization failures.
_TRANSIENT_SQLSTATE_PREFIXES = ("08", "53", "57P", "57014", "55P03", "40001", "40P01")
# SQLSTATE class 22, "data exception": the values themselves are refused (22021 NUL or bad
# UTF-8, 22P05 untranslatable character, 22001 too long, 22003 out of range, ...). The
# same message sends the same values, so a retry fails the same way.
_DATA_EXCEPTION_CLASS = "22"


_TRUE = frozenset({"true", "1", "on", "yes"})
_FALSE = frozenset({"false", "0", "off", "no"})
# sslmode -> what pg8000 gets as ``ssl_context``. pg8000's own default (no ssl_context) is
# libpq's "prefer": try TLS without verification, fall back to clear text.
_NO_TLS = "disable"
_OPPORTUNISTIC = frozenset({"allow", "prefer"})
_REQUIRED = frozenset({"require", "verify-ca", "verify-full"})


def sslmode_of(params: Mapping[str, str]) -> str | None:
    """The libpq sslmode a URL's TLS parameters ask for (``sslmode`` wins over asyncpg's
    ``ssl``, which also takes true/false); None when they say nothing."""
    raw = params.get("sslmode") or params.get("ssl")
    if raw is None:
        return None
    mode = raw.strip().lower()
    if mode in _TRUE:
        return "require"  # asyncpg ssl=true: encrypted; verify with sslmode=verify-full
    if mode in _FALSE:
        return _NO_TLS
    if mode == _NO_TLS or mode in _OPPORTUNISTIC or mode in _REQUIRED:
        return mode
    raise ConfigError(f"unsupported database sslmode {raw!r}")


def tls_connect_args(params: Mapping[str, str]) -> dict[str, Any]:
    """pg8000 ``connect_args`` for a URL's TLS parameters, with libpq's semantics.

    - disable: no TLS at all (``ssl_context=False``);
    - allow / prefer / nothing said: pg8000's default, opportunistic unverified TLS with a
      clear-text fallback (libpq's prefer; pg8000 cannot try clear text first as allow does);
    - require: encrypted or no connection, certificate not verified (as libpq, unless
      ``sslrootcert`` is given, which makes it verify-ca);
    - verify-ca: the server certificate must chain to ``sslrootcert`` (default: the system
      CAs), any host name; verify-full: the host name must match too.

    ``sslcert``/``sslkey``: a client certificate, for instances that require one.
    """
    mode = sslmode_of(params)
    rootcert, cert, key = params.get("sslrootcert"), params.get("sslcert"), params.get("sslkey")
    if mode == _NO_TLS:
        return {"ssl_context": False}
    if mode is None or mode in _OPPORTUNISTIC:
        if rootcert or cert:
            raise ConfigError(f"sslrootcert/sslcert need sslmode=require or stricter, not {mode}")
        return {}
    if mode == "require" and rootcert:
        mode = "verify-ca"
    context = ssl.create_default_context(cafile=rootcert)
    if mode == "require":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    elif mode == "verify-ca":
        context.check_hostname = False
        context.verify_mode = ssl.CERT_REQUIRED
    # verify-full: create_default_context already checks the chain and the host name.
    if cert:
        context.load_cert_chain(certfile=cert, keyfile=key)
    elif key:
        raise ConfigError("sslkey without sslcert")
    return {"ssl_context": context}


def db_connect_args(settings: Settings) -> dict[str, Any]:
    """``connect_args`` of every sync engine on the settings' database: the connect timeout
    and the TLS its URL asks for (``sslmode`` is stripped from ``database_url_sync``)."""
    return {"timeout": settings.db_connect_timeout_s, **tls_connect_args(settings.database_tls)}


def pg8000_target(url: str, settings: Settings) -> tuple[str, dict[str, Any]]:
    """(URL, connect_args) for a sync engine on ``url``, which may be an explicit URL with
    its own TLS parameters (Alembic's ``-x url=``) or the settings' own sync URL."""
    own = database_tls(url)
    if not own and url == settings.database_url_sync:
        return url, db_connect_args(settings)
    return strip_tls(url), {"timeout": settings.db_connect_timeout_s, **tls_connect_args(own)}


def create_db_engine(settings: Settings, **overrides: Any) -> Engine:
    """An Engine with bounded pool waits, connect timeout, the URL's TLS mode and a default
    statement timeout."""
    options: dict[str, Any] = {
        "pool_size": settings.db_pool_size,
        "max_overflow": settings.db_max_overflow,
        "pool_timeout": settings.db_pool_timeout_s,
        "pool_pre_ping": True,
        "pool_recycle": 1800,
        "connect_args": db_connect_args(settings),
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

    event.listen(engine, "handle_error", _discard_after_encoding_error)
    return engine


def _discard_after_encoding_error(context: Any) -> None:
    """pg8000 encodes the parameters only after it has sent Parse and Describe, so a value
    it cannot encode (a lone surrogate) leaves their replies unread on the socket; the
    next user of the connection would read them as its own. Discard that connection (only
    that one: the pool's other connections are fine)."""
    if isinstance(context.original_exception, UnicodeError):
        context.is_disconnect = True
        context.invalidate_pool_on_disconnect = False


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of a pg8000 error, wrapped by SQLAlchemy or not, if there is one."""
    orig = exc if isinstance(exc, PgDatabaseError) else getattr(exc, "orig", None)
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


def is_data_error(exc: BaseException) -> bool:
    """A deterministic refusal of the data itself, which no retry can cure: SQLSTATE class
    22, or text that cannot be encoded or decoded (a lone surrogate, bytes that are not
    UTF-8). Anything :func:`is_transient` says stays transient."""
    if is_transient(exc):
        return False
    if isinstance(exc, UnicodeError):
        return True
    state = sqlstate(exc)
    return bool(state and state.startswith(_DATA_EXCEPTION_CLASS))


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
