"""The wait cycles the migrate design avoids, shown on a real PostgreSQL (docs/migrate.md).

CREATE INDEX CONCURRENTLY waits for every transaction in the database that holds a
snapshot older than its own. A migrate delivery keeps its receipt transaction open while
the migration runs on another session; if that transaction, or a delivery waiting behind
it, held a snapshot, the index build would wait for it while it waits for the index build:
a cycle that passes through our own process, which PostgreSQL cannot detect, broken only
by lock_timeout (and the migration would fail). Each test shows one side of it.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError

from shared.db import create_db_engine, sqlstate
from shared.migrate import DUPLICATE_WAIT_MS, advisory_lock, migrate_deps
from shared.migrate._handler import release_delivery_snapshot
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings

RECEIPT = (
    "INSERT INTO ops.event_receipts (consumer, event_id, event_type, outcome)"
    " VALUES ('migrate', :k, NULL, 'handled') ON CONFLICT DO NOTHING RETURNING 1"
)


@pytest.fixture
def db(migration_db: str) -> Iterator[Engine]:
    settings = Settings(database_url=SecretStr(migration_db))
    engine = create_db_engine(settings)
    yield engine
    engine.dispose()


def build_index_concurrently(engine: Engine, lock_timeout_ms: int = 1000) -> str:
    """CIC on an existing table, as a migration's autocommit block runs it; 'ok' or SQLSTATE."""
    name = f"ix_{uuid.uuid4().hex[:8]}"
    with engine.connect() as conn:
        auto = conn.execution_options(isolation_level="AUTOCOMMIT")
        auto.exec_driver_sql(f"SET lock_timeout = {lock_timeout_ms}")
        try:
            auto.exec_driver_sql(f"CREATE INDEX CONCURRENTLY {name} ON projects (name)")
        except DBAPIError as exc:
            auto.exec_driver_sql(f"DROP INDEX IF EXISTS {name}")
            return sqlstate(exc) or "error"
    return "ok"


def open_delivery(engine: Engine, key: str) -> Connection:
    """A delivery transaction right after the runtime's receipt INSERT ... RETURNING."""
    conn = engine.connect()
    conn.begin()
    conn.execute(text(RECEIPT), {"k": key}).first()
    return conn


def test_an_idle_delivery_after_its_receipt_insert_returning_stalls_an_index_build(
    db: Engine,
) -> None:
    delivery = open_delivery(db, "b-1")
    try:
        assert build_index_concurrently(db) == "55P03"  # lock timeout: it waited for us
    finally:
        delivery.rollback()
        delivery.close()


def test_releasing_the_delivery_snapshot_lets_the_index_build_through(db: Engine) -> None:
    delivery = open_delivery(db, "b-1")
    try:
        release_delivery_snapshot(delivery)
        assert build_index_concurrently(db) == "ok"
    finally:
        delivery.rollback()
        delivery.close()


def test_a_duplicate_blocked_in_its_receipt_insert_stalls_an_index_build(db: Engine) -> None:
    """Why migrate answers concurrent duplicates 503 instead of letting them wait."""
    first = open_delivery(db, "b-1")
    release_delivery_snapshot(first)
    duplicate_done = threading.Event()

    def duplicate() -> None:
        with db.connect() as conn, conn.begin():
            conn.exec_driver_sql("SET LOCAL lock_timeout = '5s'")
            with contextlib.suppress(DBAPIError):  # it times out: the point is the wait
                conn.execute(text(RECEIPT), {"k": "b-1"}).first()
        duplicate_done.set()

    waiter = threading.Thread(target=duplicate)
    waiter.start()
    time.sleep(0.3)
    try:
        assert build_index_concurrently(db) == "55P03"
    finally:
        first.rollback()
        first.close()
        waiter.join(10)
    assert duplicate_done.is_set()


def test_migrate_deliveries_give_up_waiting_for_a_duplicates_receipt_at_once(
    migration_db: str, settings: Settings
) -> None:
    configured = settings.model_copy(update={"database_url": SecretStr(migration_db)})
    deps = Deps(configured)
    set_process_deps(deps)
    try:
        engine = migrate_deps().engine
        first = open_delivery(engine, "b-1")
        started = time.monotonic()
        with pytest.raises(DBAPIError) as waited, engine.connect() as conn, conn.begin():
            conn.execute(text(RECEIPT), {"k": "b-1"}).first()
        elapsed_ms = (time.monotonic() - started) * 1000
        first.rollback()
        first.close()
    finally:
        set_process_deps(None)
        deps.close()
    assert sqlstate(waited.value) == "55P03"
    assert elapsed_ms < DUPLICATE_WAIT_MS + 1000


def test_a_waiter_polling_for_the_advisory_lock_does_not_stall_the_holders_index_build(
    db: Engine, migration_db: str
) -> None:
    url = Settings(database_url=SecretStr(migration_db)).database_url_sync
    sessions = create_engine(url)
    holder = sessions.connect()
    stop = threading.Event()

    def waiter() -> None:
        delivery = open_delivery(db, "b-2")
        release_delivery_snapshot(delivery)
        with sessions.connect() as conn:
            try:
                with advisory_lock(conn, "sightops:test", wait_s=5, poll_s=0.01):
                    pass
            except Exception:
                pass
        stop.set()
        delivery.rollback()
        delivery.close()

    with advisory_lock(holder, "sightops:test", wait_s=1):
        thread = threading.Thread(target=waiter)
        thread.start()
        time.sleep(0.3)  # the waiter is polling now
        assert build_index_concurrently(db) == "ok"
    thread.join(10)
    holder.close()
    sessions.dispose()
