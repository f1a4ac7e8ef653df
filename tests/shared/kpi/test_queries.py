"""The KPI aggregates on real PostgreSQL and Neo4j: exact numbers, and index-driven plans
at a million personas. Plus the response model's checked-in JSON schema."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine

from bench.seed import SeedSpec, project_ids, seed
from shared.errors import TransientError
from shared.graph import create_driver
from shared.kpi.model import ProjectKpis, json_schema
from shared.kpi.queries import (
    KPI_CYPHER,
    KPI_SQL,
    ProjectNotFoundError,
    compute_project_kpis,
    read_single,
)
from shared.runtime import Deps
from shared.settings import Settings
from tests.conftest import create_scratch_database, drop_database, upgrade_to_head
from tests.helpers import ROOT
from tests.shared.kpi.helpers import delete_graph, insert_project, plan_nodes

SCHEMA_FILE = ROOT / "docs" / "kpi.schema.json"
REGEN = os.environ.get("REGEN_GOLDEN") == "1"


def test_kpis_count_exactly_what_is_in_both_stores(deps: Deps) -> None:
    now = datetime.now(UTC)
    project = insert_project(
        deps,
        old_personas=5,
        new_personas=3,
        groups=["draft", "running", "completed", "completed"],
        latencies=[100, 200, None, 600],
        graph_personas=4,
        influences=3,
        interests=5,
        now=now,
    )
    try:
        kpis = compute_project_kpis(deps.engine, deps.neo4j, project.id, now)
    finally:
        delete_graph(deps, [project.id])
    assert kpis.model_dump(exclude={"computed_at", "compute_ms"}) == {
        "schema_version": 1,
        "project_id": project.id,
        "project_name": project.name,
        "archived_at": None,
        "personas_total": 8,
        "personas_new_7d": 3,
        "focus_groups_total": 4,
        "focus_groups_running": 1,
        "focus_groups_completed": 2,
        "completion_rate": 0.5,
        "responses_total": 4,
        "avg_response_latency_ms": 300.0,
        "graph": {"personas": 4, "influences": 3, "interested_in": 5, "relationships_total": 8},
    }
    assert kpis.computed_at == now and kpis.compute_ms > 0


def test_project_without_any_data_has_zero_counts_and_null_ratios(deps: Deps) -> None:
    project = insert_project(deps, archived=True)
    kpis = compute_project_kpis(deps.engine, deps.neo4j, project.id, datetime.now(UTC))
    assert kpis.personas_total == kpis.focus_groups_total == kpis.responses_total == 0
    assert kpis.completion_rate is None and kpis.avg_response_latency_ms is None
    assert kpis.graph.relationships_total == 0
    assert kpis.archived_at is not None


def test_unknown_project_is_not_found(deps: Deps) -> None:
    with pytest.raises(ProjectNotFoundError):
        compute_project_kpis(deps.engine, deps.neo4j, uuid.uuid4(), datetime.now(UTC))


def test_graph_read_past_its_timeout_is_ended_by_neo4j_and_raised_as_transient(
    deps: Deps,
) -> None:
    """Neo4j's own transaction timeout is unlimited: without the client's, this runs for
    about a minute and returns; with it, the server terminates it. The KPI Cypher goes
    through the same ``read_single`` (graph_aggregates has no other way to Neo4j)."""
    with pytest.raises(TransientError, match=r"neo4j query timed out after 0\.05s"):
        read_single(deps.neo4j, "UNWIND range(1, $n) AS x RETURN sum(x) AS s", {"n": 10**9}, 0.05)


def test_response_json_schema_matches_the_checked_in_docs() -> None:
    if REGEN:
        SCHEMA_FILE.write_text(json.dumps(json_schema(), indent=2) + "\n")
    assert json.loads(SCHEMA_FILE.read_text()) == json_schema()


def test_model_round_trips_through_its_json() -> None:
    kpis = ProjectKpis.model_validate(
        {
            "project_id": str(uuid.uuid4()),
            "project_name": "p",
            "archived_at": None,
            "personas_total": 1,
            "personas_new_7d": 0,
            "focus_groups_total": 0,
            "focus_groups_running": 0,
            "focus_groups_completed": 0,
            "completion_rate": None,
            "responses_total": 0,
            "avg_response_latency_ms": None,
            "graph": {"personas": 0, "influences": 0, "interested_in": 0, "relationships_total": 0},
            "computed_at": "2026-01-01T00:00:00Z",
            "compute_ms": 1.5,
        }
    )
    assert ProjectKpis.model_validate_json(kpis.model_dump_json()) == kpis
    assert set(json.loads(kpis.model_dump_json())) == set(json_schema()["required"])


# --- plans at a million personas ----------------------------------------------------------

MILLION = SeedSpec(
    projects=100,
    personas=1_000_000,
    archived=0,
    focus_groups=10,
    responses=200,
    graph_personas=5_000,
    namespace=f"plan-{uuid.uuid4().hex[:6]}",
)


@pytest.fixture(scope="module")
def million(settings: Settings) -> Iterator[tuple[Engine, Any]]:
    """A scratch database with 1M personas over 100 projects (and a graph sample)."""
    url = create_scratch_database("kpi_plan")
    scratch = Settings(database_url=url)  # type: ignore[arg-type]
    upgrade_to_head(scratch)
    engine = create_engine(scratch.database_url_sync)
    driver = create_driver(settings)
    try:
        seed(engine, driver, MILLION)
        yield engine, driver
    finally:
        ids = [str(i) for i in project_ids(MILLION)]
        driver.execute_query(
            "MATCH (n) WHERE (n:Persona AND n.project_id IN $ids) OR (n:Project AND n.id IN $ids)"
            " DETACH DELETE n",
            {"ids": ids},
        )
        driver.execute_query(
            "MATCH (t:Topic) WHERE t.name STARTS WITH $prefix DETACH DELETE t",
            {"prefix": f"{MILLION.namespace}-topic-"},
        )
        driver.close()
        engine.dispose()
        drop_database(url)


def test_sql_plan_at_a_million_personas_uses_the_project_indexes_and_no_seq_scan_on_personas(
    million: tuple[Engine, Any],
) -> None:
    engine, _ = million
    project_id = project_ids(MILLION)[7]
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM personas")).scalar_one() == 1_000_000
        [[plan]] = conn.execute(
            text("EXPLAIN (FORMAT JSON) " + KPI_SQL),
            {"project_id": project_id, "since": datetime.now(UTC) - timedelta(days=7)},
        ).all()
    nodes = list(plan_nodes((plan if isinstance(plan, list) else json.loads(plan))[0]["Plan"]))
    scans = {(n.get("Relation Name"), n["Node Type"], n.get("Index Name")) for n in nodes}
    assert not any(rel == "personas" and kind == "Seq Scan" for rel, kind, _ in scans), scans
    used = {index for _, _, index in scans if index}
    assert "ix_personas_project_id_created_at" in used, scans
    assert "ix_focus_groups_project_id_status" in used, scans
    assert "ix_focus_group_responses_focus_group_id" in used, scans
    persona_scans = [n for n in nodes if n.get("Index Name") == "ix_personas_project_id_created_at"]
    assert {n["Node Type"] for n in persona_scans} == {"Index Only Scan"}


def test_cypher_plan_seeks_personas_through_the_project_id_index(
    million: tuple[Engine, Any],
) -> None:
    _, driver = million
    project_id = str(project_ids(MILLION)[7])
    records, summary, _ = driver.execute_query("PROFILE " + KPI_CYPHER, {"project_id": project_id})
    operators: list[str] = []

    def walk(plan: Any) -> None:
        operators.append(plan["operatorType"].split("@")[0])
        for child in plan.get("children", []):
            walk(child)

    walk(summary.profile)
    assert "NodeIndexSeek" in operators, operators
    assert not {"NodeByLabelScan", "AllNodesScan", "Expand(All)"} & set(operators), operators
    assert records[0]["personas"] == MILLION.graph_personas // MILLION.projects
