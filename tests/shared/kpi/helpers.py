"""Shared by the kpi tests: a throwaway redis-server, and Sight data with known KPIs."""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from bench.seed import apply_graph_schema
from shared.metrics import Metrics
from shared.runtime import Deps
from shared.settings import Settings


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class OwnRedis:
    """A redis-server of this test alone, so it can be stopped without hurting anyone."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def deps_on(self, settings: Settings, deps: Deps) -> Deps:
        """Deps on this Redis, sharing ``deps``' database pool and Neo4j driver."""
        return Deps(
            settings.model_copy(update={"redis_url": SecretStr(self.url)}),
            engine=deps.engine,
            neo4j_driver=deps.neo4j,
            metrics=Metrics(),
        )

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                sock.settimeout(0.2)
                if sock.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("own redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@dataclass
class SightProject:
    """A project written to PostgreSQL and Neo4j with known contents."""

    id: uuid.UUID
    name: str
    persona_ids: list[uuid.UUID] = field(default_factory=list)


def insert_project(
    deps: Deps,
    *,
    old_personas: int = 0,
    new_personas: int = 0,
    groups: Sequence[str] = (),
    latencies: Sequence[int | None] = (),
    archived: bool = False,
    graph_personas: int = 0,
    influences: int = 0,
    interests: int = 0,
    now: datetime | None = None,
) -> SightProject:
    """One project: personas (old = 30 days, new = 1 day), focus groups with the given
    statuses, responses with the given latencies (all in the first group), and a graph
    of ``graph_personas`` personas with ``influences`` INFLUENCES and ``interests``
    INTERESTED_IN relationships."""
    now = now or datetime.now(UTC)
    project = SightProject(uuid.uuid4(), f"kpi test {uuid.uuid4().hex[:6]}")
    with deps.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name, archived_at) VALUES (:id, :name, :archived)"),
            {"id": project.id, "name": project.name, "archived": now if archived else None},
        )
        for i in range(old_personas + new_personas):
            created = now - (timedelta(days=30) if i < old_personas else timedelta(days=1))
            pid = conn.execute(
                text(
                    "INSERT INTO personas (project_id, name, created_at)"
                    " VALUES (:p, :n, :c) RETURNING id"
                ),
                {"p": project.id, "n": f"persona {i}", "c": created},
            ).scalar_one()
            project.persona_ids.append(pid)
        group_ids = []
        for i, status in enumerate(groups):
            group_ids.append(
                conn.execute(
                    text(
                        "INSERT INTO focus_groups (project_id, title, status, completed_at)"
                        " VALUES (:p, :t, :s, CASE WHEN :s = 'completed' THEN now() END)"
                        " RETURNING id"
                    ),
                    {"p": project.id, "t": f"group {i}", "s": status},
                ).scalar_one()
            )
        for latency in latencies:
            conn.execute(
                text(
                    "INSERT INTO focus_group_responses (focus_group_id, persona_id, answer,"
                    " latency_ms) VALUES (:g, :p, 'yes', :l)"
                ),
                {"g": group_ids[0], "p": project.persona_ids[0], "l": latency},
            )
    if graph_personas:
        ids = [str(uuid.uuid4()) for _ in range(graph_personas)]
        driver = deps.neo4j
        apply_graph_schema(driver)
        driver.execute_query(
            "MERGE (:Project {id: $pid}) WITH 1 AS x"
            " UNWIND $ids AS id CREATE (:Persona {id: id, project_id: $pid})",
            {"pid": str(project.id), "ids": ids},
        )
        pairs: list[dict[str, Any]] = [
            {"a": ids[i % len(ids)], "b": ids[(i + 1) % len(ids)]} for i in range(influences)
        ]
        driver.execute_query(
            "UNWIND $rows AS r MATCH (a:Persona {id: r.a}), (b:Persona {id: r.b})"
            " CREATE (a)-[:INFLUENCES]->(b)",
            {"rows": pairs},
        )
        driver.execute_query(
            "MERGE (t:Topic {name: 'kpi-test-topic'}) WITH t"
            " UNWIND $rows AS id MATCH (a:Persona {id: id}) CREATE (a)-[:INTERESTED_IN]->(t)",
            {"rows": [ids[i % len(ids)] for i in range(interests)]},
        )
    return project


def delete_graph(deps: Deps, project_ids: Sequence[uuid.UUID]) -> None:
    """Remove what :func:`insert_project` put in the shared Neo4j."""
    ids = [str(p) for p in project_ids]
    deps.neo4j.execute_query(
        "MATCH (n) WHERE (n:Persona AND n.project_id IN $ids) OR (n:Project AND n.id IN $ids)"
        " DETACH DELETE n",
        {"ids": ids},
    )


def plan_nodes(plan: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every node of a PostgreSQL ``EXPLAIN (FORMAT JSON)`` plan tree."""
    yield plan
    for child in plan.get("Plans", []):
        yield from plan_nodes(child)
