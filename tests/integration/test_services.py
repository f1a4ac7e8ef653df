"""The local stack started by scripts/services/up.sh behaves like the real services.

PostgreSQL 16 answers pgvector queries, Neo4j 5 runs real Cypher transactions behind
authentication, Redis expires keys, and the Pub/Sub emulator delivers a published message
to a pull subscription. Ports come from the same environment variables as the scripts
(PG_PORT, NEO4J_BOLT_PORT, REDIS_PORT, PUBSUB_PORT) with the same defaults. Nothing here
leaves state behind: SQL and Cypher writes are rolled back, keys and topics are removed.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from neo4j import Driver, GraphDatabase
from neo4j.exceptions import AuthError
from pgvector.sqlalchemy import Vector
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import Engine

HOST = "127.0.0.1"
PG_PORT = int(os.environ.get("PG_PORT", "54329"))
REDIS_PORT = int(os.environ.get("REDIS_PORT", "63799"))
NEO4J_BOLT_PORT = int(os.environ.get("NEO4J_BOLT_PORT", "7688"))
PUBSUB_PORT = int(os.environ.get("PUBSUB_PORT", "8681"))
PUBSUB_PROJECT = os.environ.get("PUBSUB_PROJECT", "sight-local")

PG_URL = f"postgresql+pg8000://sight:sight-local@{HOST}:{PG_PORT}/sight"
NEO4J_URI = f"bolt://{HOST}:{NEO4J_BOLT_PORT}"
NEO4J_AUTH = ("neo4j", os.environ.get("NEO4J_PASSWORD", "sight-local-neo4j"))


@pytest.fixture(scope="module")
def pg_engine() -> Iterator[Engine]:
    engine = create_engine(PG_URL, pool_pre_ping=True)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def neo4j_driver() -> Iterator[Driver]:
    with GraphDatabase.driver(NEO4J_URI, auth=NEO4J_AUTH, connection_timeout=5) as driver:
        yield driver


# ---------------------------------------------------------------------------- PostgreSQL


def test_postgres_nearest_neighbour_by_l2_distance_returns_the_closest_vector(
    pg_engine: Engine,
) -> None:
    with pg_engine.connect() as conn:
        tx = conn.begin()
        try:
            conn.execute(text("CREATE EXTENSION IF NOT EXISTS vector"))
            items = Table(
                f"svc_vectors_{uuid.uuid4().hex[:8]}",
                MetaData(),
                Column("id", Integer, primary_key=True),
                Column("name", String(20), nullable=False),
                Column("embedding", Vector(3), nullable=False),
                prefixes=["TEMPORARY"],
            )
            items.create(conn)
            conn.execute(
                items.insert(),
                [
                    {"id": 1, "name": "origin", "embedding": [0.0, 0.0, 0.0]},
                    {"id": 2, "name": "ones", "embedding": [1.0, 1.0, 1.0]},
                    {"id": 3, "name": "far", "embedding": [10.0, -10.0, 10.0]},
                ],
            )
            # l2_distance is pgvector's `<->` operator.
            query = (
                select(items.c.name, items.c.embedding)
                .order_by(items.c.embedding.l2_distance([0.9, 1.2, 0.8]))
                .limit(1)
            )
            nearest = conn.execute(query).one()
            ranking = conn.execute(
                select(items.c.name).order_by(items.c.embedding.l2_distance([9.0, -9.0, 9.0]))
            ).scalars()

            assert nearest.name == "ones"
            assert list(nearest.embedding) == pytest.approx([1.0, 1.0, 1.0])
            assert list(ranking) == ["far", "ones", "origin"]
        finally:
            tx.rollback()


def test_postgres_app_role_is_a_local_superuser_with_pgvector_available(
    pg_engine: Engine,
) -> None:
    with pg_engine.connect() as conn:
        is_super = conn.execute(text("SELECT rolsuper FROM pg_roles WHERE rolname = current_user"))
        server_major = conn.execute(text("SHOW server_version_num")).scalar_one()
        vector_available = conn.execute(
            text("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        ).scalar_one_or_none()

    assert is_super.scalar_one() is True
    assert int(server_major) // 10000 == 16
    assert vector_available is not None


# ---------------------------------------------------------------------------- Neo4j


def test_neo4j_transaction_reads_its_own_writes_and_rollback_discards_them(
    neo4j_driver: Driver,
) -> None:
    marker = f"svc-test-{uuid.uuid4().hex}"
    with neo4j_driver.session() as session:
        tx = session.begin_transaction()
        try:
            tx.run(
                "CREATE (:SightOpsServiceTest {marker: $m, name: 'api'})"
                "-[:DEPENDS_ON {weight: 2}]->"
                "(:SightOpsServiceTest {marker: $m, name: 'db'})",
                m=marker,
            ).consume()
            inside = tx.run(
                "MATCH (a:SightOpsServiceTest {marker: $m})-[r:DEPENDS_ON]->"
                "(b:SightOpsServiceTest {marker: $m}) "
                "RETURN a.name AS a, r.weight AS weight, b.name AS b",
                m=marker,
            ).data()
        finally:
            tx.rollback()

    with neo4j_driver.session() as session:
        after = session.run(
            "MATCH (n:SightOpsServiceTest {marker: $m}) RETURN count(n) AS n", m=marker
        ).single(strict=True)

    assert inside == [{"a": "api", "weight": 2, "b": "db"}]
    assert after["n"] == 0


def test_neo4j_server_reports_a_5x_kernel(neo4j_driver: Driver) -> None:
    with neo4j_driver.session() as session:
        components = session.run(
            "CALL dbms.components() YIELD name, versions, edition RETURN *"
        ).data()

    kernel = next(c for c in components if c["name"] == "Neo4j Kernel")
    assert kernel["versions"][0].startswith("5."), kernel


def test_neo4j_rejects_a_wrong_password() -> None:
    wrong = (NEO4J_AUTH[0], "not-the-password")
    with (
        GraphDatabase.driver(NEO4J_URI, auth=wrong, connection_timeout=5) as driver,
        pytest.raises(AuthError),
    ):
        driver.verify_connectivity()


# ---------------------------------------------------------------------------- Redis


def test_redis_get_returns_a_set_value_until_its_expiry() -> None:
    client = redis.Redis(host=HOST, port=REDIS_PORT, socket_timeout=2)
    key = f"sightops:svc-test:{uuid.uuid4().hex}"
    try:
        assert client.set(key, "hello", px=400)
        assert client.get(key) == b"hello"
        assert 0 < client.pttl(key) <= 400

        deadline = time.monotonic() + 3
        while client.get(key) is not None:
            assert time.monotonic() < deadline, "key did not expire"
            time.sleep(0.05)
        assert client.exists(key) == 0
    finally:
        client.delete(key)
        client.close()


# ---------------------------------------------------------------------------- Pub/Sub


def test_pubsub_emulator_delivers_a_published_message_to_a_pull_subscription(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"{HOST}:{PUBSUB_PORT}")
    from google.api_core.exceptions import DeadlineExceeded
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    suffix = uuid.uuid4().hex[:12]
    topic = publisher.topic_path(PUBSUB_PROJECT, f"svc-test-{suffix}")
    subscription = subscriber.subscription_path(PUBSUB_PROJECT, f"svc-test-{suffix}")

    publisher.create_topic(name=topic, timeout=10)
    try:
        subscriber.create_subscription(
            name=subscription, topic=topic, ack_deadline_seconds=10, timeout=10
        )
        try:
            message_id = publisher.publish(topic, b"hello sight", origin="test_services").result(
                timeout=10
            )

            received = []
            deadline = time.monotonic() + 15
            while not received and time.monotonic() < deadline:
                try:
                    response = subscriber.pull(
                        subscription=subscription, max_messages=10, timeout=5
                    )
                except DeadlineExceeded:
                    continue
                received.extend(response.received_messages)

            assert len(received) == 1
            message = received[0].message
            assert message.data == b"hello sight"
            assert message.attributes["origin"] == "test_services"
            assert message.message_id == message_id
            subscriber.acknowledge(subscription=subscription, ack_ids=[received[0].ack_id])
        finally:
            subscriber.delete_subscription(subscription=subscription, timeout=10)
    finally:
        publisher.delete_topic(topic=topic, timeout=10)
        subscriber.close()
