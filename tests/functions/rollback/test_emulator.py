"""The local stack end to end: smoke.failed published to the emulator is pushed over
real HTTP to the served rollback function, traffic is restored on the Cloud Run stand-in
and sight.ops.rollback.succeeded appears on ops-events."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from shared.events import EventType, RollbackResult
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import RunningServer, serve
from tests.functions.rollback.conftest import Env
from tests.helpers import PROJECT


@pytest.fixture
def served(env: Env) -> Iterator[RunningServer]:
    with serve(env.client.application) as server:
        yield server


def wired_topic(pubsub_clients: tuple[Any, Any], server: RunningServer) -> str:
    publisher, subscriber = pubsub_clients
    topic = f"smoke-tests-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    ensure_subscription(
        subscriber,
        PROJECT,
        f"rollback--{topic}",
        topic,
        push_to=f"{server.url}/projects/{PROJECT}/topics/{topic}",
        min_backoff_s=0.1,
        max_backoff_s=0.5,
    )
    return topic


def test_smoke_failed_on_the_emulator_restores_traffic_and_publishes_succeeded(
    env: Env, served: RunningServer, pubsub_clients: tuple[Any, Any]
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    topic = wired_topic(pubsub_clients, served)
    publisher, _ = pubsub_clients
    data, attributes = env.smoke(False, v3)
    publisher.publish(f"projects/{PROJECT}/topics/{topic}", data, **attributes).result(10)

    deadline = time.monotonic() + 20
    while env.serving() != {v1: 100} and time.monotonic() < deadline:
        time.sleep(0.02)
    assert env.serving() == {v1: 100}
    [event] = env.published.wait(1)
    assert event.type is EventType.ROLLBACK_SUCCEEDED
    result = event.data_as(RollbackResult)
    assert (result.from_revision, result.to_revision) == (v3, v1)
    assert result.trigger_event_id == attributes["id"]
