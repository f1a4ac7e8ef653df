"""Neo4j, Redis and Pub/Sub clients against the real local services."""

from __future__ import annotations

import os
import uuid

import pytest
from pydantic import SecretStr

from shared.cache import RedisError, create_redis
from shared.errors import TransientError
from shared.graph import create_driver, raise_if_transient
from shared.pubsub import Publisher
from shared.runtime import Deps
from shared.settings import Settings
from sightops.pubsub_admin import ensure_subscription, ensure_topic


def test_deps_create_clients_lazily_and_close_them(settings: Settings) -> None:
    deps = Deps(settings)
    assert "neo4j" not in deps.__dict__ and "engine" not in deps.__dict__
    driver = deps.neo4j
    driver.verify_connectivity()
    deps.close()
    assert "neo4j" not in deps.__dict__
    deps.close()  # idempotent


def test_neo4j_write_in_a_rolled_back_transaction_leaves_nothing(settings: Settings) -> None:
    driver = create_driver(settings)
    marker = uuid.uuid4().hex
    with driver.session() as session:
        tx = session.begin_transaction()
        tx.run("CREATE (:Probe {marker: $m})-[:SEES]->(:Probe {marker: $m})", m=marker)
        seen = tx.run(
            "MATCH (:Probe {marker: $m})-[r:SEES]->() RETURN count(r) AS n", m=marker
        ).single()
        assert seen is not None and seen["n"] == 1
        tx.rollback()
    with driver.session() as session:
        left = session.run("MATCH (p:Probe {marker: $m}) RETURN count(p) AS n", m=marker).single()
    assert left is not None and left["n"] == 0
    driver.close()


def test_neo4j_outage_is_classified_transient(settings: Settings) -> None:
    driver = create_driver(settings.model_copy(update={"neo4j_uri": "bolt://127.0.0.1:1"}))
    with pytest.raises(TransientError):
        try:
            driver.verify_connectivity()
        except Exception as exc:
            raise_if_transient(exc)
            raise
    driver.close()


def test_redis_round_trip_and_dead_redis_fails_fast(settings: Settings) -> None:
    client = create_redis(settings)
    key = f"probe:{uuid.uuid4().hex}"
    client.set(key, "1", ex=5)
    assert client.get(key) == b"1"
    dead = create_redis(
        settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})
    )
    with pytest.raises(RedisError):
        dead.ping()


def test_publisher_sends_to_the_emulator_with_attributes(settings: Settings) -> None:
    os.environ["PUBSUB_EMULATOR_HOST"] = settings.pubsub_emulator_host or ""
    from google.cloud import pubsub_v1

    publisher = Publisher(settings)
    subscriber = pubsub_v1.SubscriberClient()
    topic = f"pub-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher.client, settings.gcp_project, topic)
    sub = ensure_subscription(subscriber, settings.gcp_project, f"{topic}-pull", topic)
    message_id = publisher.publish(topic, b'{"x": 1}', {"type": "sight.ops.test", "id": "1"})
    response = subscriber.pull(subscription=sub, max_messages=1, timeout=10)
    [received] = response.received_messages
    assert received.message.message_id == message_id
    assert received.message.data == b'{"x": 1}'
    assert dict(received.message.attributes) == {"type": "sight.ops.test", "id": "1"}
    publisher.close()
