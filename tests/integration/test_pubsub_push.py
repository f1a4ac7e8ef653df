"""The emulator pushing raw bodies into a functions-framework app over real HTTP:
delivery, redelivery on transient failure, no redelivery of malformed messages, and
dead-lettering of a poison message."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.runtime import Deps
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins._server import RunningServer, serve

SOURCE = Path(__file__).parents[1] / "shared" / "runtime" / "sample_function" / "main.py"
PROJECT = "sight-local"


@pytest.fixture(scope="module")
def pubsub() -> tuple[Any, Any]:
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


@pytest.fixture
def server(deps: Deps) -> Iterator[RunningServer]:
    app = functions_framework.create_app(
        target="sample", source=str(SOURCE), signature_type="cloudevent"
    )
    with serve(app) as running:
        yield running


@pytest.fixture
def wired(pubsub: tuple[Any, Any], server: RunningServer) -> dict[str, str]:
    """A fresh topic pushing to the served function, with a dead-letter topic."""
    publisher, subscriber = pubsub
    topic = f"t-{uuid.uuid4().hex[:8]}"
    dlq = f"{topic}-dead-letter"
    ensure_topic(publisher, PROJECT, topic)
    ensure_topic(publisher, PROJECT, dlq)
    ensure_subscription(subscriber, PROJECT, f"{dlq}-pull", dlq)
    ensure_subscription(
        subscriber,
        PROJECT,
        f"{topic}-push",
        topic,
        push_to=f"{server.url}/projects/{PROJECT}/topics/{topic}",
        dead_letter=dlq,
        min_backoff_s=0.2,
        max_backoff_s=0.5,
        max_delivery_attempts=5,
    )
    return {"topic": topic, "dlq_sub": f"projects/{PROJECT}/subscriptions/{dlq}-pull"}


def publish(pubsub: tuple[Any, Any], topic: str, data: bytes, **attributes: str) -> str:
    publisher, _ = pubsub
    future = publisher.publish(f"projects/{PROJECT}/topics/{topic}", data, **attributes)
    return str(future.result(timeout=10))


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met within the deadline")


def count(deps: Deps, sql: str, **params: Any) -> int:
    with deps.engine.connect() as conn:
        return int(conn.execute(text(sql), params).scalar_one())


def test_published_message_arrives_by_push_in_a_functions_framework_app(
    pubsub: Any, wired: dict[str, str], deps: Deps
) -> None:
    key = uuid.uuid4().hex
    publish(pubsub, wired["topic"], json.dumps({"key": key}).encode())
    eventually(
        lambda: (
            count(deps, "SELECT count(*) FROM ops.actions WHERE detail->>'key' = :k", k=key) == 1
        )
    )


def test_transient_failure_is_redelivered_until_it_succeeds(
    pubsub: Any, wired: dict[str, str], deps: Deps
) -> None:
    key = uuid.uuid4().hex
    publish(
        pubsub,
        wired["topic"],
        json.dumps({"key": key, "succeed_on": 3}).encode(),
        mode="transient-until",
    )
    eventually(
        lambda: (
            count(deps, "SELECT count(*) FROM ops.actions WHERE detail->>'key' = :k", k=key) == 1
        )
    )
    assert int(deps.redis.get(f"sample:{key}") or 0) == 3


def test_malformed_message_is_acknowledged_and_not_redelivered(
    pubsub: Any, wired: dict[str, str], deps: Deps
) -> None:
    message_id = publish(pubsub, wired["topic"], b"{definitely not json")
    sql = "SELECT count(*) FROM ops.rejected_events WHERE event_id = :m"
    eventually(lambda: count(deps, sql, m=message_id) == 1)
    time.sleep(2.0)  # several backoff periods: a redelivery would have landed by now
    assert count(deps, sql, m=message_id) == 1


def test_poison_message_is_dead_lettered_after_bounded_attempts(
    pubsub: Any, wired: dict[str, str], deps: Deps
) -> None:
    _, subscriber = pubsub
    key = uuid.uuid4().hex
    publish(pubsub, wired["topic"], json.dumps({"key": key}).encode(), mode="bug")
    found: list[Any] = []

    def dead_lettered() -> bool:
        response = subscriber.pull(subscription=wired["dlq_sub"], max_messages=10, timeout=5)
        for received in response.received_messages:
            subscriber.acknowledge(subscription=wired["dlq_sub"], ack_ids=[received.ack_id])
            if json.loads(received.message.data).get("key") == key:
                found.append(received)
        return bool(found)

    eventually(dead_lettered, timeout_s=45)
    assert found[0].message.attributes["mode"] == "bug"
    retries = deps.metrics.counter("events", consumer="sample", outcome="retry")
    assert retries >= 5
