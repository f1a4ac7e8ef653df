"""Every lock wait of a rollback delivery is bounded (docs/rollback.md, "One rollback per
service at a time"): the per-service lock by ``lock_wait_s``, everything after it by the
session's own ``lock_timeout``; when a bound expires the delivery is answered 503 and
Pub/Sub brings it back, instead of holding a connection and a push slot indefinitely."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import text

from shared.rollback._store import LOCK_CLASS
from shared.runtime import Deps, set_process_deps
from tests.functions.rollback.conftest import Env
from tests.helpers import envelope, push


@pytest.fixture
def quick_locks(env: Env) -> Iterator[Callable[..., Deps]]:
    """rollback (with these RollbackConfig values) on an engine of its own whose sessions
    give up on any lock after 300 ms. pg8000 uses the connect timeout as its socket
    timeout: raised well above the test's patience, so only a lock bound can end a wait."""
    made: list[Deps] = []

    def use(**rollback: Any) -> Deps:
        settings = env.deps.settings.model_copy(
            update={
                "db_lock_timeout_ms": 300,
                "db_connect_timeout_s": 120.0,
                "rollback": env.deps.settings.rollback.model_copy(update=rollback),
            }
        )
        deps = Deps(settings, metrics=env.deps.metrics, publisher=env.deps.publisher)
        made.append(deps)
        set_process_deps(deps)
        env.deps = deps
        return deps

    yield use
    for deps in made:
        deps.close()


class Holder:
    """A concurrent transaction holding a lock until :meth:`release`."""

    def __init__(self, deps: Deps, statement: str, params: dict[str, Any]) -> None:
        self._conn = deps.engine.connect()
        self._conn.execute(text(statement), params)

    def release(self) -> None:
        self._conn.rollback()
        self._conn.close()


def delivered_within_bounds(env: Env, body: dict[str, Any], holder: Holder) -> int:
    """POST the delivery on a thread; if it is still waiting once every bound has long
    expired, it is hung: release the lock so it can finish, and say so."""
    status: list[int] = []
    thread = threading.Thread(
        target=lambda: status.append(push(env.client, "smoke-tests", body).status_code)
    )
    thread.start()
    thread.join(timeout=20)
    hung = thread.is_alive()
    holder.release()
    thread.join()
    assert not hung, "the delivery waited on a lock without a bound"
    return status[0]


def test_a_delivery_for_a_service_whose_lock_is_held_is_retried_not_hung(
    env: Env, quick_locks: Callable[..., Deps]
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    deps = quick_locks(lock_wait_s=0.2)
    holder = Holder(
        deps,
        "SELECT pg_advisory_xact_lock(:cls, hashtext(:s))",
        {"cls": LOCK_CLASS, "s": env.service},
    )
    body = envelope(*env.smoke(False, v3))
    assert delivered_within_bounds(env, body, holder) == 503
    assert env.patches() == 0
    assert push(env.client, "smoke-tests", body).status_code == 200  # Pub/Sub redelivers
    assert env.serving() == {v1: 100}


def test_a_row_lock_met_after_the_service_lock_is_bounded_too(
    env: Env, quick_locks: Callable[..., Deps]
) -> None:
    """Once the service lock is taken, the rest of the transaction (here the ``bad`` mark
    of a revision someone else is writing) keeps the session's bound."""
    v1, v2, _ = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    holder = Holder(
        quick_locks(),
        "SELECT 1 FROM ops.revisions WHERE service = :s AND revision = :r FOR UPDATE",
        {"s": env.service, "r": v2},
    )
    body = envelope(*env.smoke(False, v2))  # v2 serves no traffic: skip, mark it bad
    assert delivered_within_bounds(env, body, holder) == 503
    assert env.health()[v2] == "good"
    assert push(env.client, "smoke-tests", body).status_code == 200
    assert env.health()[v2] == "bad"
