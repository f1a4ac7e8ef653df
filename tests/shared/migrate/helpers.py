"""Shared by the migrate tests: a scratch database per test, fixture migrations installed
on top of the project's, a Neo4j namespace per test, and a private ops-events topic.

Everything here is isolated from the other suites that share the same PostgreSQL server,
Neo4j database and emulator: databases and topics get unique names, and graph objects use
labels and schema names that start with the test's namespace and are removed afterwards.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from alembic.config import Config
from alembic.script import ScriptDirectory
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from shared.events import MigrateSelector
from shared.graph import create_driver
from shared.metrics import Metrics
from shared.migrate import RunRequest
from shared.runtime import Deps
from shared.settings import MigrateConfig, Settings, Topics
from tests.conftest import create_scratch_database, drop_database, upgrade_to_head
from tests.helpers import GOLDEN, PROJECT, ROOT

FIXTURES = ROOT / "tests" / "fixtures" / "migrations"
PROJECT_VERSIONS = ROOT / "alembic" / "versions"
PROJECT_HEAD = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
SOURCE = ROOT / "functions" / "migrate" / "main.py"
SELECTED_SERVICE = "sight-api"  # the golden builds' _SERVICE
#: buildTriggerId of the golden triggered builds: the CI trigger migrate acts on.
CI_TRIGGER_ID = "5d2f8a61-93c4-4b7e-a0d2-1c6e9f3b7a48"
#: The golden builds' COMMIT_SHA.
GOLDEN_COMMIT = "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91"  # pragma: allowlist secret


def install_migrations(name: str, dest: Path) -> Path:
    """Copy fixture set ``name`` into ``dest``, chained onto the project's head."""
    dest.mkdir(parents=True, exist_ok=True)
    for src in sorted((FIXTURES / name).glob("*.py")):
        (dest / src.name).write_text(src.read_text().replace("__BASE__", str(PROJECT_HEAD)))
    return dest


@dataclass
class GraphNamespace:
    """Unique labels and schema names for one test in the shared Neo4j database."""

    ns: str = field(default_factory=lambda: "T" + uuid.uuid4().hex[:10])

    @property
    def record_label(self) -> str:
        return f"{self.ns}Migration"

    @property
    def lock_label(self) -> str:
        return f"{self.ns}Lock"

    @property
    def labels(self) -> list[str]:
        return [self.record_label, self.lock_label, f"{self.ns}Thing", f"{self.ns}Applied"]

    def install(self, dest: Path, names: list[str] | None = None) -> Path:
        """Copy the graph fixture files (all, or ``names``) into ``dest`` for this ns."""
        dest.mkdir(parents=True, exist_ok=True)
        for src in sorted((FIXTURES / "graph").glob("*.cypher")):
            if names is None or src.name in names:
                (dest / src.name).write_text(src.read_text().replace("__NS__", self.ns))
        return dest

    def count(self, settings: Settings, label_suffix: str) -> int:
        driver = create_driver(settings)
        try:
            records, _, _ = driver.execute_query(
                f"MATCH (n:`{self.ns}{label_suffix}`) RETURN count(n) AS n"
            )
            return int(records[0]["n"])
        finally:
            driver.close()

    def cleanup(self, settings: Settings) -> None:
        driver = create_driver(settings)
        try:
            prefix = self.ns.lower()
            for kind in ("CONSTRAINT", "INDEX"):
                records, _, _ = driver.execute_query(
                    f"SHOW {kind}ES YIELD name WHERE toLower(name) STARTS WITH $p RETURN name"
                    if kind == "INDEX"
                    else f"SHOW {kind}S YIELD name WHERE toLower(name) STARTS WITH $p RETURN name",
                    p=prefix,
                )
                for record in records:
                    driver.execute_query(f"DROP {kind} `{record['name']}` IF EXISTS")
            for label in self.labels:
                driver.execute_query(f"MATCH (n:`{label}`) DETACH DELETE n")
        finally:
            driver.close()


@pytest.fixture
def migration_db() -> Iterator[str]:
    """A fresh database at the project's head (the ops schema exists); dropped after."""
    url = create_scratch_database("sightops_mig")
    upgrade_to_head(Settings(database_url=SecretStr(url)))
    yield url
    drop_database(url)


@pytest.fixture
def deps_for(settings: Settings, migration_db: str, tmp_path: Path) -> Iterator[object]:
    """``deps_for(set_name, graph_ns=None, **config)`` -> Deps on this test's database."""
    made: list[Deps] = []

    def make(name: str | None, ns: GraphNamespace | None = None, **config: object) -> Deps:
        versions = install_migrations(name, tmp_path / "versions") if name else None
        graph_dir = ns.install(tmp_path / "graph") if ns else None
        deps = make_deps(
            migrate_settings(
                settings, migration_db, versions=versions, graph_dir=graph_dir, ns=ns, **config
            )
        )
        made.append(deps)
        return deps

    yield make
    for deps in made:
        deps.close()


def request(build_id: str = "b-1", **kwargs: Any) -> RunRequest:
    """A run for one of the golden builds' commit and service."""
    return RunRequest(build_id=build_id, commit_sha=GOLDEN_COMMIT, service="sight-api", **kwargs)


@pytest.fixture
def graph_ns(settings: Settings) -> Iterator[GraphNamespace]:
    ns = GraphNamespace()
    yield ns
    ns.cleanup(settings)


class OpsTopic:
    """A private ops-events topic with a pull subscription, to read what migrate published."""

    def __init__(self) -> None:
        os.environ.setdefault(
            "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
        )
        from google.cloud import pubsub_v1

        self.name = f"ops-events-mig-{uuid.uuid4().hex[:8]}"
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic_path = f"projects/{PROJECT}/topics/{self.name}"
        self.subscription = f"projects/{PROJECT}/subscriptions/{self.name}-pull"
        self.publisher.create_topic(name=self.topic_path)
        self.subscriber.create_subscription(name=self.subscription, topic=self.topic_path)
        self.received: list[tuple[dict[str, Any], dict[str, str]]] = []

    def pull(
        self, wait_for: int = 0, timeout_s: float = 10.0
    ) -> list[tuple[dict[str, Any], dict[str, str]]]:
        """Everything published so far as (data, attributes); waits for ``wait_for`` total."""
        deadline = time.monotonic() + timeout_s
        while True:
            # Publishing is synchronous in migrate (it waits for the message id), so what was
            # published before the HTTP answer is already here: a short pull suffices.
            rpc_timeout = max(0.5, min(5.0, deadline - time.monotonic()))
            response = self.subscriber.pull(
                subscription=self.subscription, max_messages=100, timeout=rpc_timeout
            )
            if response.received_messages:
                self.subscriber.acknowledge(
                    subscription=self.subscription,
                    ack_ids=[m.ack_id for m in response.received_messages],
                )
                for m in response.received_messages:
                    self.received.append((json.loads(m.message.data), dict(m.message.attributes)))
            if len(self.received) >= wait_for or time.monotonic() > deadline:
                return list(self.received)
            time.sleep(0.1)

    def types(self, wait_for: int = 0) -> list[str]:
        return [attributes["type"] for _, attributes in self.pull(wait_for)]

    def close(self) -> None:
        self.subscriber.delete_subscription(subscription=self.subscription)
        self.publisher.delete_topic(topic=self.topic_path)


@pytest.fixture
def ops_topic() -> Iterator[OpsTopic]:
    topic = OpsTopic()
    yield topic
    topic.close()


def migrate_settings(
    base: Settings,
    database_url: str,
    *,
    versions: Path | None,
    graph_dir: Path | None,
    ns: GraphNamespace | None,
    topic: str = "ops-events",
    **config: Any,
) -> Settings:
    """``base`` pointed at ``database_url``, the fixture migrations and the graph namespace."""
    values: dict[str, Any] = {
        "selector": MigrateSelector(
            trigger_ids=frozenset({CI_TRIGGER_ID}), services=frozenset({SELECTED_SERVICE})
        ),
        "version_locations": [PROJECT_VERSIONS, versions] if versions else None,
        "graph_enabled": graph_dir is not None,
        "graph_migrations_dir": graph_dir,
        "lock_wait_s": 30.0,
        "graph_lock_wait_s": 10.0,
    }
    if ns is not None:
        values["graph_record_label"] = ns.record_label
        values["graph_lock_label"] = ns.lock_label
    values.update(config)
    return base.model_copy(
        update={
            "database_url": SecretStr(database_url),
            "topics": Topics(ops_events=topic),
            "migrate": MigrateConfig(**values),
        }
    )


def unreachable_neo4j() -> Any:
    """A driver pointed at a closed port that gives up fast (the real one retries ~15 s)."""
    import neo4j

    return neo4j.GraphDatabase.driver(
        "bolt://127.0.0.1:1",
        auth=("neo4j", "unused"),
        connection_timeout=1.0,
        max_transaction_retry_time=0.5,
    )


def make_deps(settings: Settings, **kwargs: Any) -> Deps:
    return Deps(settings, metrics=kwargs.pop("metrics", None) or Metrics(), **kwargs)


def golden_build(
    name: str = "success_triggered", build_id: str | None = None, **substitutions: str
) -> tuple[bytes, dict[str, str]]:
    """A golden Cloud Build message with a fresh build id (and substitutions replaced)."""
    message = json.loads((GOLDEN / "cloudbuild" / f"{name}.json").read_text())
    data, attributes = message["data"], dict(message["attributes"])
    data["id"] = attributes["buildId"] = build_id or str(uuid.uuid4())
    if substitutions:
        data.setdefault("substitutions", {}).update(substitutions)
    return json.dumps(data).encode(), attributes


def scalar(url: str, sql: str, **params: Any) -> Any:
    engine = create_engine(
        Settings(database_url=SecretStr(url)).database_url_sync, poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            return conn.execute(text(sql), params).scalar()
    finally:
        engine.dispose()


def rows(url: str, sql: str, **params: Any) -> list[dict[str, Any]]:
    engine = create_engine(
        Settings(database_url=SecretStr(url)).database_url_sync, poolclass=NullPool
    )
    try:
        with engine.connect() as conn:
            return [dict(r) for r in conn.execute(text(sql), params).mappings()]
    finally:
        engine.dispose()


def advisory_lock_is_free(url: str) -> bool:
    """No advisory lock held in the database (a finished run released its lock)."""
    return bool(
        scalar(
            url,
            "SELECT NOT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND database = (SELECT oid FROM pg_database WHERE datname = current_database()))",
        )
    )


def migration_rows(url: str) -> list[dict[str, Any]]:
    """The migrate runs recorded in ``ops.actions``, oldest first."""
    return rows(
        url,
        "SELECT status, service, dedupe_key, trigger_event_id, detail, started_at, finished_at"
        " FROM ops.actions WHERE kind = 'migration' ORDER BY id",
    )


def eventually(check: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met within the deadline")
