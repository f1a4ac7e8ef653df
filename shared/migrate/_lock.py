"""The PostgreSQL advisory lock that serialises migrate runs (one per database).

Its shape follows from what it must never do:

- It is a *session* lock on the same dedicated connection that runs Alembic. If that session
  dies, the migration dies with it and PostgreSQL drops the lock: the lock can never be
  separated from the work it protects (a lock on another session could be lost while the
  migration goes on, letting a second runner in).
- Waiters *poll* with ``pg_try_advisory_lock`` and sleep between polls instead of blocking
  inside ``pg_advisory_lock``. A backend blocked inside a statement holds a snapshot, and
  ``CREATE INDEX CONCURRENTLY`` waits for every older snapshot in the database: blocked
  waiters would stall the holder's index build until its lock_timeout, a wait cycle
  PostgreSQL cannot detect because it closes through the waiters' own processes.
- It is released in ``finally``; if the unlock fails, the connection is invalidated, and
  closing the session releases every lock it held.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import Connection

from shared.db import end_transaction
from shared.errors import LockTimeoutError


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory lock key for a human-readable lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def lock_holder(conn: Connection, key: int) -> str | None:
    """Who holds the advisory lock ``key`` (pid and application_name), for messages."""
    row = conn.execute(
        text(
            "SELECT a.pid, a.application_name, a.state FROM pg_locks l"
            " JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
            " AND l.classid = CAST(:hi AS oid) AND l.objid = CAST(:lo AS oid)"
            " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        ),
        {"hi": (key >> 32) & 0xFFFFFFFF, "lo": key & 0xFFFFFFFF},
    ).first()
    conn.rollback()
    if row is None:
        return None
    return f"pid {row.pid} ({row.application_name or 'unknown'}, {row.state})"


@contextmanager
def advisory_lock(
    conn: Connection, name: str, *, wait_s: float, poll_s: float = 0.05
) -> Iterator[float]:
    """Hold the session advisory lock ``name`` on ``conn``; yields the wait in ms.

    Raises :class:`LockTimeoutError` (retryable) when it is not free within ``wait_s``.
    ``conn`` is left outside any transaction, ready for the migrations.
    """
    key = lock_key(name)
    started = time.monotonic()
    deadline = started + wait_s
    while True:
        acquired = conn.execute(text("SELECT pg_try_advisory_lock(:k)"), {"k": key}).scalar_one()
        end_transaction(conn)  # idle between polls: no open transaction, no snapshot
        if acquired:
            break
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            holder = lock_holder(conn, key)
            raise LockTimeoutError(
                f"migration lock {name!r} not acquired within {wait_s:g}s"
                + (f"; held by {holder}" if holder else "")
            )
        time.sleep(min(remaining, poll_s * random.uniform(0.5, 1.5)))
    waited_ms = (time.monotonic() - started) * 1000
    try:
        yield waited_ms
    finally:
        _release(conn, key)


def _release(conn: Connection, key: int) -> None:
    try:
        if conn.in_transaction():
            conn.rollback()
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        end_transaction(conn)
    except Exception:
        # The session is unusable; closing it is what releases the lock now.
        conn.invalidate()
