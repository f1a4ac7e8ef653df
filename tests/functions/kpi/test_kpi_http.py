"""kpi over HTTP, through functions-framework: status codes, headers, the cache seen from
the dashboard, stampedes across real served instances, and a stopped Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import functions_framework
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import event, text
from sqlalchemy.engine import Engine

from shared.kpi.cache import Entry
from shared.kpi.model import ProjectKpis
from shared.kpi.service import kpi_service
from shared.metrics import Metrics
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from tests.helpers import ROOT
from tests.shared.kpi.helpers import (
    OwnRedis,
    SightProject,
    delete_graph,
    free_port,
    insert_project,
)

SOURCE = ROOT / "functions" / "kpi" / "main.py"


@pytest.fixture
def client(deps: Deps) -> Any:
    app = functions_framework.create_app(target="kpi", source=str(SOURCE), signature_type="http")
    return app.test_client()


@pytest.fixture
def project(deps: Deps) -> Iterator[SightProject]:
    made = insert_project(
        deps,
        old_personas=4,
        new_personas=2,
        groups=["running", "completed"],
        latencies=[100, 300],
        graph_personas=3,
        influences=2,
        interests=1,
    )
    yield made
    delete_graph(deps, [made.id])


def url(project_id: object) -> str:
    return f"/v1/projects/{project_id}/kpis"


def test_kpis_are_computed_on_a_miss_then_served_from_the_cache(
    client: Any, project: SightProject
) -> None:
    first = client.get(url(project.id))
    assert first.status_code == 200
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["X-Cache"] == "miss"
    assert float(first.headers["X-Compute-Ms"]) > 0
    assert first.headers["Cache-Control"].startswith("private, max-age=")
    kpis = ProjectKpis.model_validate_json(first.data)
    assert (kpis.project_id, kpis.personas_total, kpis.personas_new_7d) == (project.id, 6, 2)
    assert (kpis.focus_groups_total, kpis.focus_groups_completed, kpis.completion_rate) == (
        2,
        1,
        0.5,
    )
    assert (kpis.responses_total, kpis.avg_response_latency_ms) == (2, 200.0)
    assert kpis.graph.relationships_total == 3

    second = client.get(url(project.id))
    assert second.status_code == 200
    assert second.headers["X-Cache"] == "hit"
    assert second.data == first.data
    assert second.headers["X-Compute-Ms"] == first.headers["X-Compute-Ms"]


def test_unknown_project_is_404_with_a_json_error(client: Any, deps: Deps) -> None:
    response = client.get(url(uuid.uuid4()))
    assert response.status_code == 404
    assert response.json["error"]["code"] == "project_not_found"
    assert response.headers["Cache-Control"] == "no-store"


@pytest.mark.parametrize(
    "raw", ["nope", "123", uuid.uuid4().hex, "%7B" + str(uuid.uuid4())[:34], "x" * 36]
)
def test_malformed_project_id_is_400(client: Any, raw: str) -> None:
    response = client.get(url(raw))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_project_id"


def test_uppercase_uuid_is_the_same_project(client: Any, project: SightProject) -> None:
    response = client.get(url(str(project.id).upper()))
    assert response.status_code == 200
    assert ProjectKpis.model_validate_json(response.data).project_id == project.id


def test_other_routes_are_404_and_other_methods_405(client: Any, project: SightProject) -> None:
    assert client.get("/").status_code == 404
    assert client.get(f"/v1/projects/{project.id}").status_code == 404
    response = client.post(url(project.id))
    assert response.status_code == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert client.head(url(project.id)).status_code == 200


def test_archived_project_is_still_served(client: Any, deps: Deps) -> None:
    archived = insert_project(deps, old_personas=1, archived=True)
    response = client.get(url(archived.id))
    assert response.status_code == 200
    assert ProjectKpis.model_validate_json(response.data).archived_at is not None


def test_stale_entry_is_served_with_the_stale_header_while_another_caller_recomputes(
    client: Any, deps: Deps, project: SightProject
) -> None:
    client.get(url(project.id))
    cache = kpi_service(deps).cache
    key = str(project.id)
    entry, _ = cache.peek(key)
    assert entry is not None
    expired = Entry(entry.payload, time.time() - 1, entry.delta_s, entry.stored_at - 400)
    cache.client.set(cache.value_key(key), expired.encode(), px=60_000)
    cache.client.set(cache.lock_key(key), "another-instance", px=5_000)
    response = client.get(url(project.id))
    assert response.status_code == 200
    assert response.headers["X-Cache"] == "stale"
    assert response.headers["Cache-Control"] == "private, max-age=0, must-revalidate"
    assert response.data == entry.payload


def test_200_concurrent_requests_for_a_cold_project_compute_once(
    client: Any, deps: Deps, metrics: Metrics, project: SightProject
) -> None:
    barrier = threading.Barrier(200)

    def call(_: int) -> tuple[int, bytes]:
        barrier.wait()
        response = client.get(url(project.id))
        return response.status_code, response.data

    with ThreadPoolExecutor(200) as pool:
        responses = list(pool.map(call, range(200)))
    assert {status for status, _ in responses} == {200}
    assert len({body for _, body in responses}) == 1
    assert metrics.counter("cache_computations", cache="kpi", reason="cold") == 1


def _serve(port: int, database_url: str, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOG_LEVEL": "INFO",
        "THREADS": "80",
        "PYTHONPATH": str(ROOT),
    }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            "kpi",
            "--source",
            str(SOURCE),
            "--signature-type",
            "http",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, "functions-framework exited"
        try:
            httpx.get(base + "/", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise TimeoutError(base)


def test_200_concurrent_http_requests_across_three_served_instances_compute_once(
    database_url: str, project: SightProject, tmp_path: Path
) -> None:
    ports = [free_port() for _ in range(3)]
    logs = [tmp_path / f"kpi-{port}.log" for port in ports]
    procs = [_serve(port, database_url, log) for port, log in zip(ports, logs, strict=True)]
    try:
        bases = [f"http://127.0.0.1:{port}" for port in ports]
        for base, proc in zip(bases, procs, strict=True):
            _wait_ready(base, proc)
        barrier = threading.Barrier(200)
        with httpx.Client(timeout=30, limits=httpx.Limits(max_connections=200)) as http:

            def call(i: int) -> httpx.Response:
                barrier.wait()
                return http.get(bases[i % 3] + url(project.id))

            with ThreadPoolExecutor(200) as pool:
                responses = list(pool.map(call, range(200)))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(10)
    assert {r.status_code for r in responses} == {200}
    assert len({r.content for r in responses}) == 1
    computed = [
        line
        for log in logs
        for line in log.read_text().splitlines()
        if line.startswith("{") and json.loads(line).get("cache_reason") is not None
    ]
    assert len(computed) == 1, computed


def test_redis_stopped_requests_still_succeed_with_correct_values(
    own_redis: OwnRedis, settings: Settings, deps: Deps, project: SightProject
) -> None:
    own = own_redis.deps_on(settings, deps)
    set_process_deps(own)
    client = functions_framework.create_app(
        target="kpi", source=str(SOURCE), signature_type="http"
    ).test_client()
    before = client.get(url(project.id))
    assert before.headers["X-Cache"] == "miss"
    own_redis.stop()
    after = [client.get(url(project.id)) for _ in range(3)]
    assert [r.status_code for r in after] == [200, 200, 200]
    assert {r.headers["X-Cache"] for r in after} == {"miss"}
    expected = ProjectKpis.model_validate_json(before.data).model_dump(
        exclude={"computed_at", "compute_ms"}
    )
    for response in after:
        got = ProjectKpis.model_validate_json(response.data)
        assert got.model_dump(exclude={"computed_at", "compute_ms"}) == expected
    own.redis.close()


def test_database_down_with_nothing_cached_is_503_with_retry_after(
    settings: Settings, deps: Deps
) -> None:
    dead = Deps(
        settings.model_copy(
            update={
                "database_url": SecretStr("postgresql+asyncpg://sight:x@127.0.0.1:1/sight"),
                "db_connect_timeout_s": 1.0,
            }
        ),
        neo4j_driver=deps.neo4j,
        metrics=Metrics(),
    )
    set_process_deps(dead)
    client = functions_framework.create_app(
        target="kpi", source=str(SOURCE), signature_type="http"
    ).test_client()
    response = client.get(url(uuid.uuid4()))
    assert response.status_code == 503
    assert response.json["error"]["code"] == "unavailable"
    assert response.headers["Retry-After"] == "5"
    assert "x@" not in response.get_data(as_text=True)
    dead.close()


# --- unknown projects and floods (docs/kpi.md, "Unknown projects and overload") -----------


class QueryCounter:
    """Counts the SQL statements an engine sends to PostgreSQL (a SQLAlchemy event)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: object, _cursor: object, statement: str, *_args: object) -> None:
        self.statements.append(statement)

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_an_unknown_project_is_remembered_as_not_found_so_a_repeat_costs_no_query(
    client: Any, deps: Deps, metrics: Metrics
) -> None:
    unknown = uuid.uuid4()
    first = client.get(url(unknown))
    assert first.status_code == 404
    queries = QueryCounter(deps.engine)
    try:
        again = [client.get(url(unknown)) for _ in range(3)]
    finally:
        queries.close()
    assert [r.status_code for r in again] == [404, 404, 404]
    assert {r.json["error"]["code"] for r in again} == {"project_not_found"}
    assert queries.statements == []
    assert metrics.counter("cache_requests", cache="kpi", status="absent", reason="not_found") == 3
    # Remembered for not_found_ttl_s only: a project created meanwhile shows after it.
    cache = kpi_service(deps).cache
    remembered_ms = cache.client.pttl(cache.value_key(str(unknown)))
    assert 0 < remembered_ms <= deps.settings.kpi.not_found_ttl_s * 1000


def test_a_project_created_after_its_404_is_served_once_refreshed(client: Any, deps: Deps) -> None:
    late = uuid.uuid4()
    assert client.get(url(late)).status_code == 404
    with deps.engine.begin() as conn:
        conn.execute(
            text("INSERT INTO projects (id, name) VALUES (:id, 'created late')"), {"id": late}
        )
    assert client.get(url(late)).status_code == 404  # still remembered as not found
    assert kpi_service(deps).refresh(late) is not None  # `sightops kpi refresh <id> --local`
    response = client.get(url(late))
    assert response.status_code == 200
    assert ProjectKpis.model_validate_json(response.data).project_name == "created late"


def test_a_flood_of_random_ids_is_refused_fast_while_cached_projects_are_still_served(
    settings: Settings, deps: Deps, project: SightProject
) -> None:
    """40 distinct unknown ids at once on an instance with kpi's production pool (2+1),
    while the database is slow (a lock on `projects`, as a migration would hold): the
    requests beyond the instance's computation slots are answered 503 `overloaded` without
    waiting for the database, the cached project is served from Redis throughout, and no
    connection is left checked out."""
    flood_size, slots = 40, 2
    instance = Deps(
        settings.model_copy(
            update={
                "db_pool_size": slots,
                "db_max_overflow": 1,
                "db_pool_timeout_s": 2.0,
                "kpi": settings.kpi.model_copy(update={"xfetch_beta": 0.0}),
            }
        ),
        redis_client=deps.redis,
        neo4j_driver=deps.neo4j,
        metrics=Metrics(),
    )
    set_process_deps(instance)
    client = functions_framework.create_app(
        target="kpi", source=str(SOURCE), signature_type="http"
    ).test_client()
    assert client.get(url(project.id)).status_code == 200  # now cached

    blocker = deps.engine.connect()
    blocker.begin()
    blocker.execute(text("LOCK TABLE projects IN ACCESS EXCLUSIVE MODE"))
    answered: list[Any] = []
    answered_lock = threading.Lock()
    most_refused = threading.Event()
    barrier = threading.Barrier(flood_size)

    def flood(_: int) -> Any:
        barrier.wait()
        response = client.get(url(uuid.uuid4()))
        with answered_lock:
            answered.append(response)
            if len(answered) >= flood_size - slots:
                most_refused.set()
        return response

    try:
        with ThreadPoolExecutor(flood_size) as pool:
            futures = [pool.submit(flood, i) for i in range(flood_size)]
            try:
                most_refused.wait(30)
                with answered_lock:
                    while_blocked = list(answered)
                cached = [client.get(url(project.id)) for _ in range(5)]
            finally:
                blocker.close()  # rolls the lock back: the computations in the slots go on
            responses = [future.result() for future in futures]
        checked_out = instance.engine.pool.checkedout()
    finally:
        instance.engine.dispose()

    assert len(while_blocked) >= flood_size - slots
    assert {(r.status_code, r.json["error"]["code"]) for r in while_blocked} == {
        (503, "overloaded")
    }
    assert {r.headers["Retry-After"] for r in while_blocked} == {"1"}
    assert [(r.status_code, r.headers["X-Cache"]) for r in cached] == [(200, "hit")] * 5
    assert {r.status_code for r in responses} <= {404, 503}
    overloaded = [r for r in responses if r.status_code == 503]
    assert {r.json["error"]["code"] for r in overloaded} == {"overloaded"}
    assert instance.metrics.counter("kpi_overloaded") == len(overloaded)
    assert checked_out == 0
