"""The runtime's answer to a handler whose values the database or the driver refuse.

A data error (SQLSTATE class 22, text no encoder accepts) is deterministic: the same
message sends the same values and fails the same way, so retrying it only walks it to the
dead-letter topic. It is kept in ``ops.rejected_events`` with its reason, with no receipt
(so it can be replayed once fixed), and acknowledged. What a retry can cure (a
serialization failure, a deadlock, a lost connection) is still answered 503
(docs/architecture.md, "The handler runtime").
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from tests.helpers import envelope, push, rejected_events
from tests.shared.runtime.test_handler import SOURCE, actions_for, outcome_of, runtime_records


def raising(sqlstate: str) -> str:
    """A statement PostgreSQL answers with ``sqlstate`` (PL/pgSQL RAISE ... USING ERRCODE)."""
    return f"DO $$ BEGIN RAISE EXCEPTION 'raised on purpose' USING ERRCODE = '{sqlstate}'; END $$"


@pytest.fixture
def one_connection(settings: Settings, deps: Deps) -> Iterator[Deps]:
    """Deps whose pool holds a single connection: the next delivery reuses whatever the
    previous one left behind."""
    single = Deps(
        settings.model_copy(update={"db_pool_size": 1, "db_max_overflow": 0}),
        metrics=deps.metrics,
    )
    set_process_deps(single)
    yield single
    set_process_deps(deps)
    single.close()


@pytest.fixture
def client(one_connection: Deps) -> Any:
    app = functions_framework.create_app(
        target="sample", source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


def deliver_sql(client: Any, key: str, sql: str, **params: str) -> Any:
    body = envelope({"key": key, "sql": sql, "params": params}, {"id": key, "mode": "sql"})
    return push(client, "t", body)


def receipts(deps: Deps, key: str) -> list[str]:
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT outcome FROM ops.event_receipts WHERE consumer='sample' AND event_id=:k"
                ),
                {"k": key},
            ).scalars()
        )


@pytest.mark.parametrize(
    ("sql", "params", "reason"),
    [
        ("SELECT CAST(:v AS text)", {"v": "a\x00b"}, "data error: SQLSTATE 22021: "),
        ("SELECT CAST(:v AS jsonb)", {"v": '"a\\u0000b"'}, "data error: SQLSTATE 22P05: "),
        (raising("22001"), {}, "data error: SQLSTATE 22001: raised on purpose"),
        ("SELECT CAST(:v AS int)", {"v": "not a number"}, "data error: SQLSTATE 22P02: "),
    ],
    ids=["nul-in-text", "nul-in-jsonb", "too-long", "not-a-number"],
)
def test_a_handler_refused_by_postgresql_as_data_is_kept_and_acknowledged(
    client: Any,
    one_connection: Deps,
    caplog: pytest.LogCaptureFixture,
    sql: str,
    params: dict[str, str],
    reason: str,
) -> None:
    key = uuid.uuid4().hex
    response = deliver_sql(client, key, sql, **params)
    assert response.status_code == 200, "acknowledged on the first delivery"
    [kept] = rejected_events(one_connection.engine, "sample", key)
    assert kept.reason.startswith(reason)
    assert "[SQL:" not in kept.reason, "the statement and its parameters stay out"
    assert json.loads(bytes(kept.payload))["sql"] == sql
    assert actions_for(one_connection, key) == 0, "the handler's effects were rolled back"
    assert receipts(one_connection, key) == [], "no receipt: a replay will be handled"
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "rejected"
    assert record.levelno == logging.ERROR


def test_a_lone_surrogate_the_driver_cannot_encode_is_kept_and_the_connection_discarded(
    client: Any, one_connection: Deps
) -> None:
    """pg8000 fails to encode it after sending part of the exchange; the one pooled
    connection must not be handed to the next delivery in that state."""
    key = uuid.uuid4().hex
    response = deliver_sql(client, key, "SELECT CAST(:v AS text)", v="a\ud800b")
    assert response.status_code == 200
    [kept] = rejected_events(one_connection.engine, "sample", key)
    assert kept.reason.startswith("data error: UnicodeEncodeError: ")
    after = uuid.uuid4().hex
    assert deliver_sql(client, after, "SELECT CAST(:v AS text)", v="fine").status_code == 200
    assert actions_for(one_connection, after) == 2, "the next delivery ran on a sound session"


def test_a_kept_data_error_message_is_handled_when_replayed_corrected(
    client: Any, one_connection: Deps
) -> None:
    key = uuid.uuid4().hex
    assert deliver_sql(client, key, "SELECT CAST(:v AS text)", v="a\x00b").status_code == 200
    assert deliver_sql(client, key, "SELECT CAST(:v AS text)", v="ab").status_code == 200
    assert receipts(one_connection, key) == ["handled"]
    assert actions_for(one_connection, key) == 2


@pytest.mark.parametrize(
    "sql",
    [
        raising("40001"),
        raising("40P01"),
        raising("57P01"),
        "SELECT pg_terminate_backend(pg_backend_pid())",
    ],
    ids=["serialization-failure", "deadlock", "admin-shutdown", "connection-lost"],
)
def test_what_a_retry_can_cure_is_still_answered_503_and_kept_nowhere(
    client: Any, one_connection: Deps, caplog: pytest.LogCaptureFixture, sql: str
) -> None:
    key = uuid.uuid4().hex
    response = deliver_sql(client, key, sql)
    assert response.status_code == 503
    assert rejected_events(one_connection.engine, "sample", key) == []
    assert receipts(one_connection, key) == []
    assert outcome_of(runtime_records(caplog)[-1]) == "retry"
