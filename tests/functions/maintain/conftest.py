"""maintain through its production entry point: a scratch database at the project's head
(one per module), a schema of its own per test with a pgvector table bloated on purpose, a
Neo4j namespace per test (the shared Neo4j holds other suites' indexes: only this
namespace's are checked) and a private ops-events topic to read what was published."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import functions_framework
import pytest
from pydantic import SecretStr
from sqlalchemy import bindparam, text

from shared.runtime import Deps, set_process_deps
from shared.settings import MaintainConfig, Settings, Topics
from tests.functions.maintain.helpers import (
    INDEX,
    SCHEDULED,
    SOURCE,
    TABLE,
    bloat_vectors,
    maintain_db,
    sync_engine,
)
from tests.helpers import envelope, push
from tests.shared.migrate.helpers import GraphNamespace, OpsTopic, graph_ns, make_deps, ops_topic

__all__ = ["INDEX", "TABLE", "graph_ns", "maintain_db", "ops_topic"]


@dataclass
class Env:
    """One configured maintain function, its schema, topic and Neo4j namespace."""

    client: Any
    deps: Deps
    url: str
    schema: str
    topic: OpsTopic
    ns: GraphNamespace
    message_ids: list[str] = field(default_factory=list)

    def push(self, data: dict[str, Any] | None = None) -> int:
        body = envelope(json.dumps(data or {}).encode(), SCHEDULED)
        self.message_ids.append(body["message"]["messageId"])
        return int(push(self.client, "maintenance", body).status_code)

    def sql(self, statement: str, **params: Any) -> Any:
        engine = sync_engine(self.url)
        try:
            with engine.connect() as conn:
                return conn.execute(text(statement), params).scalar()
        finally:
            engine.dispose()

    def index_size(self, name: str = INDEX) -> int:
        return int(self.sql("SELECT pg_relation_size(to_regclass(:n))", n=f"{self.schema}.{name}"))

    def runs(self) -> list[dict[str, Any]]:
        """This test's maintenance rows in ops.actions, oldest first."""
        engine = sync_engine(self.url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text(
                        "SELECT status, actor, detail FROM ops.actions WHERE kind = 'maintenance'"
                        " AND trigger_event_id IN :ids ORDER BY id"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ids": self.message_ids},
                ).mappings()
                return [dict(r) for r in found]
        finally:
            engine.dispose()

    def receipts(self) -> list[str]:
        engine = sync_engine(self.url)
        try:
            with engine.connect() as conn:
                found = conn.execute(
                    text(
                        "SELECT outcome FROM ops.event_receipts WHERE consumer = 'maintain'"
                        " AND event_id IN :ids ORDER BY received_at"
                    ).bindparams(bindparam("ids", expanding=True)),
                    {"ids": [f"maintain:{m}" for m in self.message_ids]},
                )
                return [str(r.outcome) for r in found]
        finally:
            engine.dispose()

    def events(self, wait_for: int) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return self.topic.pull(wait_for=wait_for, timeout_s=10)


@pytest.fixture
def make_env(
    settings: Settings, maintain_db: str, graph_ns: GraphNamespace, ops_topic: OpsTopic
) -> Iterator[Any]:
    """``make_env(bloated=True, **maintain_config)`` -> Env with a fresh schema."""
    made: list[Deps] = []

    def make(bloated: bool = True, **config: Any) -> Env:
        schema = f"m_{uuid.uuid4().hex[:10]}"
        engine = sync_engine(maintain_db)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
        finally:
            engine.dispose()
        if bloated:
            bloat_vectors(maintain_db, schema)
        values: dict[str, Any] = {
            "schemas": [schema],
            "min_index_bytes": 256 * 1024,  # the HNSW index (~900 kB), not the primary key
            "lock_wait_s": 5.0,
            "lock_poll_s": 0.02,
            # The shared Neo4j holds every suite's indexes: check this test's alone.
            "graph_name_pattern": f"(?i)^{graph_ns.ns}",
        }
        values.update(config)
        configured = settings.model_copy(
            update={
                "database_url": SecretStr(maintain_db),
                "topics": Topics(ops_events=ops_topic.name),
                "maintain": MaintainConfig(**values),
            }
        )
        deps = make_deps(configured)
        made.append(deps)
        set_process_deps(deps)
        app = functions_framework.create_app(
            target="maintain", source=str(SOURCE), signature_type="cloudevent"
        )
        return Env(app.test_client(), deps, maintain_db, schema, ops_topic, graph_ns)

    yield make
    set_process_deps(None)
    for deps in made:
        deps.close()
