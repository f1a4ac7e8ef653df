"""Neo4j driver lifecycle: one driver per process, created on first use, closed at exit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.errors import TransientError
from shared.log import REDACTOR
from shared.settings import Settings

if TYPE_CHECKING:
    from neo4j import Driver


def create_driver(settings: Settings) -> Driver:
    import neo4j  # lazy: only functions that touch the graph pay for the import

    password = settings.neo4j_password.get_secret_value()
    REDACTOR.add(password)
    return neo4j.GraphDatabase.driver(
        settings.neo4j_uri,
        auth=(settings.neo4j_user, password),
        connection_timeout=5.0,
        connection_acquisition_timeout=10.0,
        max_transaction_retry_time=10.0,
    )


def is_transient(exc: BaseException) -> bool:
    from neo4j import exceptions as neo4j_errors

    return isinstance(
        exc,
        neo4j_errors.ServiceUnavailable
        | neo4j_errors.SessionExpired
        | neo4j_errors.TransientError
        | ConnectionError
        | TimeoutError,
    )


def raise_if_transient(exc: BaseException) -> None:
    """Re-raise a Neo4j outage as :class:`TransientError`; leave other errors alone."""
    if is_transient(exc):
        raise TransientError(f"neo4j unavailable: {type(exc).__name__}") from exc
