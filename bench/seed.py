"""Seed Sight data of any size into the real schema (PostgreSQL and Neo4j).

    .venv/bin/python bench/seed.py                          # 20 projects, 100k personas
    .venv/bin/python bench/seed.py --personas 1000000 --projects 100 --graph-personas 50000

Rows are generated server-side (``generate_series``), so a million personas take seconds,
not a million round trips. Projects get deterministic ids (uuid5 of ``--namespace`` and
their number), and seeding a namespace again first deletes what it seeded before, so
re-running is safe and never touches other data. After loading, the tables are
``VACUUM ANALYZE``d: the planner has real statistics and index-only scans have a
visibility map, as in a long-running production database.

Graph: ``--graph-personas`` of the seeded personas (spread over the projects) are
mirrored as ``(:Persona {id, project_id})`` with ``INFLUENCES`` between personas of the
same project and ``INTERESTED_IN`` to ``(:Topic)`` nodes, created in batches with UNWIND.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402
from sqlalchemy.pool import NullPool  # noqa: E402

_NAMESPACE = uuid.UUID("6f1c1d1e-5a7b-4c56-9a53-2f7d4b0d8e11")
_BATCH = 10_000


@dataclass(frozen=True)
class SeedSpec:
    projects: int = 20
    personas: int = 100_000
    archived: int = 2
    focus_groups: int = 10  # per project
    responses: int = 20  # per running or completed focus group
    new_share: float = 0.05  # share of personas created within the last 7 days
    graph_personas: int = 20_000
    influences: int = 2  # per mirrored persona
    interests: int = 2  # per mirrored persona
    topics: int = 50
    namespace: str = "bench"


def project_ids(spec: SeedSpec) -> list[uuid.UUID]:
    return [uuid.uuid5(_NAMESPACE, f"{spec.namespace}:{i}") for i in range(spec.projects)]


def seed_postgres(engine: Engine, spec: SeedSpec) -> dict[str, float]:
    """Replace the namespace's projects and everything under them; returns timings."""
    ids = project_ids(spec)
    timings: dict[str, float] = {}
    params: dict[str, Any] = {"ids": ids, "n": spec.projects, "ns": spec.namespace}
    with engine.begin() as conn:
        t0 = time.perf_counter()
        conn.execute(text("DELETE FROM projects WHERE id = ANY(CAST(:ids AS uuid[]))"), params)
        timings["delete_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        conn.execute(
            text(
                "INSERT INTO projects (id, name, created_at, archived_at)"
                " SELECT id, CAST(:ns AS text) || ' project ' || ord, now() - interval '400 days',"
                "  CASE WHEN ord > CAST(:n AS int) - CAST(:archived AS int)"
                "   THEN now() - interval '1 day' END"
                " FROM unnest(CAST(:ids AS uuid[])) WITH ORDINALITY AS t(id, ord)"
            ),
            {**params, "archived": spec.archived},
        )
        conn.execute(
            text(
                "INSERT INTO personas (project_id, name, attributes, spending_habits, created_at)"
                " SELECT (CAST(:ids AS uuid[]))[1 + mod(g, CAST(:n AS int))], 'persona ' || g,"
                "  jsonb_build_object('age_band', mod(g, 7) * 10 + 18, 'region', mod(g, 13)),"
                "  CASE WHEN mod(g, 3) = 0 THEN 'frugal' END,"
                "  CASE WHEN random() < CAST(:new_share AS float8)"
                "   THEN now() - random() * interval '6 days'"
                "   ELSE now() - interval '8 days' - random() * interval '390 days' END"
                " FROM generate_series(1, CAST(:personas AS int)) AS g"
            ),
            {**params, "personas": spec.personas, "new_share": spec.new_share},
        )
        timings["personas_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        conn.execute(
            text(
                "INSERT INTO focus_groups (project_id, title, status, created_at, completed_at)"
                " SELECT p.id, 'group ' || k,"
                "  (ARRAY['draft', 'running', 'completed'])[1 + mod(k, 3)],"
                "  now() - k * interval '1 day',"
                "  CASE WHEN mod(k, 3) = 2 THEN now() - k * interval '1 hour' END"
                " FROM unnest(CAST(:ids AS uuid[])) AS p(id),"
                "  generate_series(1, CAST(:groups AS int)) AS k"
            ),
            {**params, "groups": spec.focus_groups},
        )
        conn.execute(
            text(
                "INSERT INTO focus_group_responses (focus_group_id, persona_id, answer, latency_ms)"
                " SELECT g.id, pe.id, 'answer', CASE WHEN random() < 0.95"
                "  THEN (200 + random() * 1800)::int END"
                " FROM focus_groups g CROSS JOIN LATERAL ("
                "  SELECT id FROM personas WHERE project_id = g.project_id"
                "  ORDER BY created_at LIMIT CAST(:responses AS int)) pe"
                " WHERE g.project_id = ANY(CAST(:ids AS uuid[])) AND g.status <> 'draft'"
            ),
            {**params, "responses": spec.responses},
        )
        timings["focus_groups_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    # A dedicated autocommit engine: VACUUM cannot run in a transaction, and a pooled
    # connection may be inside one (e.g. after a pre-ping).
    autocommit = create_engine(engine.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with autocommit.connect() as conn:
        for table in ("projects", "personas", "focus_groups", "focus_group_responses"):
            conn.execute(text(f"VACUUM ANALYZE {table}"))
    autocommit.dispose()
    timings["vacuum_analyze_s"] = time.perf_counter() - t0
    return timings


def apply_graph_schema(driver: Any) -> None:
    """The constraints and index of graph/migrations (all ``IF NOT EXISTS``)."""
    for path in sorted((ROOT / "graph" / "migrations").glob("V*.cypher")):
        lines = [ln for ln in path.read_text().splitlines() if not ln.strip().startswith("//")]
        for statement in "\n".join(lines).split(";"):
            if statement.strip():
                driver.execute_query(statement)
    driver.execute_query("CALL db.awaitIndexes(60)")


def seed_graph(engine: Engine, driver: Any, spec: SeedSpec) -> dict[str, float]:
    """Mirror ``graph_personas`` personas with relationships; returns timings."""
    ids = [str(i) for i in project_ids(spec)]
    timings: dict[str, float] = {}
    apply_graph_schema(driver)
    t0 = time.perf_counter()
    with driver.session() as session:
        session.run(
            "MATCH (p:Persona) WHERE p.project_id IN $ids"
            " CALL (p) { DETACH DELETE p } IN TRANSACTIONS OF 10000 ROWS",
            ids=ids,
        ).consume()
        session.run("MATCH (p:Project) WHERE p.id IN $ids DETACH DELETE p", ids=ids).consume()
    timings["graph_delete_s"] = time.perf_counter() - t0
    if spec.graph_personas <= 0:
        return timings

    t0 = time.perf_counter()
    per_project = max(1, spec.graph_personas // max(1, spec.projects))
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT id::text AS id, project_id::text AS pid FROM ("
                " SELECT id, project_id, row_number() OVER (PARTITION BY project_id) AS k"
                " FROM personas WHERE project_id = ANY(CAST(:ids AS uuid[]))) s"
                " WHERE k <= CAST(:per_project AS int)"
            ),
            {"ids": [uuid.UUID(i) for i in ids], "per_project": per_project},
        ).all()
    by_project: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        by_project[row.pid].append(row.id)
    driver.execute_query("UNWIND $ids AS id MERGE (:Project {id: id})", {"ids": ids})
    topics = [f"{spec.namespace}-topic-{i}" for i in range(spec.topics)]
    driver.execute_query("UNWIND $names AS name MERGE (:Topic {name: name})", {"names": topics})
    nodes = [{"id": pid, "project_id": proj} for proj, lst in by_project.items() for pid in lst]
    for i in range(0, len(nodes), _BATCH):
        driver.execute_query(
            "UNWIND $rows AS r CREATE (:Persona {id: r.id, project_id: r.project_id})",
            {"rows": nodes[i : i + _BATCH]},
        )
    timings["graph_nodes_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rng = random.Random(spec.namespace)
    influences: list[dict[str, str]] = []
    interests: list[dict[str, str]] = []
    for members in by_project.values():
        for persona in members:
            for _ in range(spec.influences if len(members) > 1 else 0):
                other = rng.choice(members)
                if other != persona:
                    influences.append({"a": persona, "b": other})
            for topic in rng.sample(topics, min(spec.interests, len(topics))):
                interests.append({"a": persona, "t": topic})
    for i in range(0, len(influences), _BATCH):
        driver.execute_query(
            "UNWIND $rows AS r MATCH (a:Persona {id: r.a}) MATCH (b:Persona {id: r.b})"
            " CREATE (a)-[:INFLUENCES]->(b)",
            {"rows": influences[i : i + _BATCH]},
        )
    for i in range(0, len(interests), _BATCH):
        driver.execute_query(
            "UNWIND $rows AS r MATCH (a:Persona {id: r.a}) MATCH (t:Topic {name: r.t})"
            " CREATE (a)-[:INTERESTED_IN]->(t)",
            {"rows": interests[i : i + _BATCH]},
        )
    timings["graph_relationships_s"] = time.perf_counter() - t0
    return timings


def seed(engine: Engine, driver: Any | None, spec: SeedSpec) -> dict[str, Any]:
    """Seed PostgreSQL and (if a driver is given) Neo4j; returns ids and timings."""
    timings = seed_postgres(engine, spec)
    if driver is not None:
        timings.update(seed_graph(engine, driver, spec))
    return {
        "spec": asdict(spec),
        "project_ids": [str(i) for i in project_ids(spec)],
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }


def main(argv: list[str] | None = None) -> int:
    from shared.graph import create_driver
    from shared.settings import Settings

    defaults = SeedSpec()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=defaults.projects)
    parser.add_argument("--personas", type=int, default=defaults.personas, help="in total")
    parser.add_argument("--archived", type=int, default=defaults.archived)
    parser.add_argument("--focus-groups", type=int, default=defaults.focus_groups)
    parser.add_argument("--responses", type=int, default=defaults.responses)
    parser.add_argument("--new-share", type=float, default=defaults.new_share)
    parser.add_argument("--graph-personas", type=int, default=defaults.graph_personas)
    parser.add_argument("--influences", type=int, default=defaults.influences)
    parser.add_argument("--interests", type=int, default=defaults.interests)
    parser.add_argument("--topics", type=int, default=defaults.topics)
    parser.add_argument("--namespace", default=defaults.namespace)
    parser.add_argument("--no-graph", action="store_true", help="PostgreSQL only")
    parser.add_argument("--database-url", help="pg8000 URL (default: from settings)")
    args = parser.parse_args(argv)
    spec = SeedSpec(
        projects=args.projects,
        personas=args.personas,
        archived=min(args.archived, args.projects),
        focus_groups=args.focus_groups,
        responses=args.responses,
        new_share=args.new_share,
        graph_personas=0 if args.no_graph else args.graph_personas,
        influences=args.influences,
        interests=args.interests,
        topics=args.topics,
        namespace=args.namespace,
    )
    settings = Settings()
    engine = create_engine(args.database_url or settings.database_url_sync)
    driver = None if args.no_graph else create_driver(settings)
    started = time.perf_counter()
    try:
        result = seed(engine, driver, spec)
    finally:
        engine.dispose()
        if driver is not None:
            driver.close()
    result["total_s"] = round(time.perf_counter() - started, 2)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
