"""kpi_refresh through functions-framework: our own events, Cloud Scheduler's fixed-attribute
messages, deduplication on the Pub/Sub message id, and what is left in the cache."""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import functions_framework
import neo4j
import pytest
from sqlalchemy import text

from shared.events import EventType, KpiRefreshRequested, OpsEvent
from shared.kpi.model import ProjectKpis
from shared.kpi.service import kpi_service
from shared.metrics import Metrics
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from tests.helpers import ROOT, envelope, post_cloudevent, push
from tests.shared.kpi.helpers import OwnRedis, SightProject, delete_graph, insert_project

SOURCE = ROOT / "functions" / "kpi" / "main.py"
SCHEDULER_ATTRIBUTES = {"type": EventType.KPI_REFRESH_REQUESTED.value, "source": "scheduler"}


@pytest.fixture
def client(deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="kpi_refresh", source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


@pytest.fixture
def projects(deps: Deps) -> Iterator[list[SightProject]]:
    made = [
        insert_project(deps, old_personas=2, graph_personas=1),
        insert_project(deps, new_personas=1),
        insert_project(deps, old_personas=1, archived=True),
    ]
    yield made
    delete_graph(deps, [p.id for p in made])


def our_event(payload: KpiRefreshRequested) -> tuple[bytes, dict[str, str]]:
    return OpsEvent.new(EventType.KPI_REFRESH_REQUESTED, payload, source="test").to_pubsub()


def cached(deps: Deps, project_id: uuid.UUID) -> ProjectKpis | None:
    entry, _ = kpi_service(deps).cache.peek(str(project_id))
    return ProjectKpis.model_validate_json(entry.payload) if entry else None


def outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        outcome: metrics.counter("events", consumer="kpi_refresh", outcome=outcome)
        for outcome in ("handled", "skipped", "duplicate", "rejected", "stale", "retry")
        if metrics.counter("events", consumer="kpi_refresh", outcome=outcome)
    }


def test_refresh_event_for_one_project_precomputes_its_kpis(
    client: Any, deps: Deps, metrics: Metrics, projects: list[SightProject]
) -> None:
    target = projects[0]
    data, attributes = our_event(KpiRefreshRequested(project_id=str(target.id)))
    assert push(client, "kpi-refresh", envelope(data, attributes)).status_code == 200
    kpis = cached(deps, target.id)
    assert kpis is not None and kpis.personas_total == 2
    assert outcomes(metrics) == {"handled": 1}
    assert cached(deps, projects[1].id) is None


def test_scheduler_message_without_id_or_time_refreshes_every_active_project(
    client: Any, deps: Deps, metrics: Metrics, projects: list[SightProject]
) -> None:
    body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES)
    assert post_cloudevent(client, "kpi-refresh", body).status_code == 200
    active, other_active, archived = projects
    assert cached(deps, active.id) is not None
    assert cached(deps, other_active.id) is not None
    assert cached(deps, archived.id) is None
    assert outcomes(metrics) == {"handled": 1}


def test_scheduler_runs_with_identical_attributes_are_each_handled(
    client: Any, metrics: Metrics, projects: list[SightProject]
) -> None:
    fixed = {**SCHEDULER_ATTRIBUTES, "id": "scheduler-job-kpi"}  # a misconfigured fixed id
    for _ in range(2):
        assert push(client, "kpi-refresh", envelope(b"", fixed)).status_code == 200
    assert outcomes(metrics) == {"handled": 2}


def test_redelivery_of_the_same_message_is_a_duplicate(
    client: Any, metrics: Metrics, projects: list[SightProject]
) -> None:
    data, attributes = our_event(KpiRefreshRequested(project_id=str(projects[0].id)))
    body = envelope(data, attributes)
    for _ in range(2):
        assert push(client, "kpi-refresh", body).status_code == 200
    assert outcomes(metrics) == {"handled": 1, "duplicate": 1}


def test_refresh_of_an_unknown_project_is_skipped(client: Any, metrics: Metrics) -> None:
    data, attributes = our_event(KpiRefreshRequested(project_id=str(uuid.uuid4())))
    assert push(client, "kpi-refresh", envelope(data, attributes)).status_code == 200
    assert outcomes(metrics) == {"skipped": 1}


def test_malformed_refresh_is_rejected_and_kept(client: Any, deps: Deps, metrics: Metrics) -> None:
    marker = f"not-a-uuid-{uuid.uuid4().hex}"
    body = envelope(json.dumps({"project_id": marker}), SCHEDULER_ATTRIBUTES)
    assert push(client, "kpi-refresh", body).status_code == 200
    assert outcomes(metrics) == {"rejected": 1}
    with deps.engine.connect() as conn:
        reason = conn.execute(
            text(
                "SELECT reason FROM ops.rejected_events WHERE consumer = 'kpi_refresh'"
                " AND convert_from(payload, 'UTF8') LIKE :m"
            ),
            {"m": f"%{marker}%"},
        ).scalar_one()
    assert "project_id" in reason


def test_refresh_request_older_than_its_maximum_age_is_dropped(
    client: Any, metrics: Metrics
) -> None:
    old = datetime.now(UTC) - timedelta(hours=1)
    body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES, publish_time=old)
    assert push(client, "kpi-refresh", body).status_code == 200
    assert outcomes(metrics) == {"stale": 1}


def test_refresh_with_redis_stopped_is_skipped_not_retried(
    own_redis: OwnRedis, settings: Settings, deps: Deps, projects: list[SightProject]
) -> None:
    own = own_redis.deps_on(settings, deps)
    set_process_deps(own)
    client = functions_framework.create_app(
        target="kpi_refresh", source=str(SOURCE), signature_type="cloudevent"
    ).test_client()
    own_redis.stop()
    body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES)
    assert push(client, "kpi-refresh", body).status_code == 200
    assert outcomes(own.metrics) == {"skipped": 1}
    own.redis.close()


# --- one project's failure stays that project's (docs/kpi.md, "kpi_refresh") -------------


class GraphFailingFor:
    """The real Neo4j driver, except that the KPI query of the given projects (or of every
    project) fails with Neo4j's own ``DatabaseError``, as a corrupt store or a server bug
    would fail it. Nothing in a project's graph data can make this read-only count fail
    for real, so the failure is injected at the driver boundary, scoped by the query's
    ``project_id`` parameter; everything else goes to the real Neo4j."""

    def __init__(self, driver: Any, failing: set[str] | None) -> None:
        self._driver = driver
        self._failing = failing

    def session(self, **config: Any) -> Any:
        return _SessionFailingFor(self._driver.session(**config), self._failing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._driver, name)


class _SessionFailingFor:
    def __init__(self, session: Any, failing: set[str] | None) -> None:
        self._session = session
        self._failing = failing

    def __enter__(self) -> _SessionFailingFor:
        self._session.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._session.__exit__(*exc)

    def run(self, query: Any, parameters: dict[str, Any] | None = None, **kw: Any) -> Any:
        project_id = (parameters or {}).get("project_id")
        if self._failing is None or project_id in self._failing:
            raise neo4j.exceptions.DatabaseError(f"simulated store failure for {project_id}")
        return self._session.run(query, parameters, **kw)


def refresh_client(settings: Settings, deps: Deps, metrics: Metrics, graph: Any) -> Any:
    """kpi_refresh served with ``graph`` as its Neo4j driver and the real everything else."""
    set_process_deps(
        Deps(
            settings,
            engine=deps.engine,
            redis_client=deps.redis,
            neo4j_driver=graph,
            metrics=metrics,
        )
    )
    return functions_framework.create_app(
        target="kpi_refresh", source=str(SOURCE), signature_type="cloudevent"
    ).test_client()


def delivery_log(caplog: pytest.LogCaptureFixture) -> logging.LogRecord:
    (record,) = [r for r in caplog.records if getattr(r, "message_id", None)]
    return record


def test_one_project_failing_in_neo4j_does_not_fail_the_sweep_of_the_others(
    settings: Settings,
    deps: Deps,
    metrics: Metrics,
    projects: list[SightProject],
    caplog: pytest.LogCaptureFixture,
) -> None:
    good, broken, _archived = projects
    client = refresh_client(settings, deps, metrics, GraphFailingFor(deps.neo4j, {str(broken.id)}))
    caplog.set_level(logging.INFO)
    body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES)
    assert push(client, "kpi-refresh", body).status_code == 200
    assert outcomes(metrics) == {"handled": 1}  # acknowledged once: not redelivered
    good_kpis = cached(deps, good.id)
    assert good_kpis is not None and good_kpis.personas_total == 2
    assert cached(deps, broken.id) is None
    delivery = delivery_log(caplog)
    assert delivery.failed == 1  # type: ignore[attr-defined]
    assert delivery.refreshed >= 1  # type: ignore[attr-defined]
    assert "1 failed" in delivery.reason  # type: ignore[attr-defined]
    (failure,) = [r for r in caplog.records if getattr(r, "project_id", None) == str(broken.id)]
    assert "DatabaseError" in failure.getMessage()


def test_a_sweep_where_every_project_fails_because_neo4j_is_down_is_redelivered(
    settings: Settings, deps: Deps, metrics: Metrics, projects: list[SightProject]
) -> None:
    down = neo4j.GraphDatabase.driver(
        "bolt://127.0.0.1:1", auth=("neo4j", "unused"), connection_timeout=1.0
    )
    try:
        client = refresh_client(settings, deps, metrics, down)
        body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES)
        assert push(client, "kpi-refresh", body).status_code == 503
    finally:
        down.close()
    assert outcomes(metrics) == {"retry": 1}
    assert cached(deps, projects[0].id) is None


def test_a_sweep_where_every_project_fails_on_its_own_is_acknowledged_as_failed(
    settings: Settings, deps: Deps, metrics: Metrics, projects: list[SightProject]
) -> None:
    client = refresh_client(settings, deps, metrics, GraphFailingFor(deps.neo4j, None))
    body = envelope(b'{"all_active": true}', SCHEDULER_ATTRIBUTES)
    assert push(client, "kpi-refresh", body).status_code == 200
    assert metrics.counter("events", consumer="kpi_refresh", outcome="failed") == 1
    assert outcomes(metrics) == {}
