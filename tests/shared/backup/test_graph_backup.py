"""Neo4j backup -> restore -> identical graph: typed properties, relationship properties,
labels, constraints and indexes (docs/backups.md, "Neo4j").

Source and target are the second Neo4j (scripts/services/neo4j-scratch.sh), which only
these tests write to: the graph is built, snapshotted, exported, wiped and restored."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from neo4j import Driver, GraphDatabase

from bench.seed import apply_graph_schema
from shared.backup import LocalBlobStore, Manifest, export_graph, restore_graph, wipe_graph
from shared.backup._neo4j import RestoreRefused, read_schema
from shared.backup._values import canonical
from tests.shared.backup.helpers import NEO4J_AUTH

BUILD = [
    # typed node properties, several labels, no label at all
    "CREATE (:Project {id: 'p1', name: 'ü漢字🙂', founded: date('2019-02-28'),"
    " budget: 1.0, seats: 12, tags: ['a', 'b'], weights: [0.5, 2.0], flags: [true, false],"
    " at: datetime('2024-10-27T02:30:00.123456789[Europe/Berlin]'),"
    " offset_at: datetime('2024-01-01T00:00:00.5-03:00'),"
    " local_at: localdatetime('2024-01-01T10:00:00.999999999'),"
    " opens: time('09:00:00+05:30'), local_opens: localtime('23:59:59.000000001'),"
    " term: duration('P1Y2M3DT4H5M6.000000007S'),"
    " hq: point({latitude: 52.52, longitude: 13.405}), desk: point({x: 1.5, y: -2, z: 3}),"
    " nan: 0.0 / 0.0, big: 9223372036854775807, empty: []})",
    "CREATE (:Persona:Vip {id: 'v1', project_id: 'p1'}), ()",
    "UNWIND range(1, 40) AS i CREATE (:Persona {id: 'x' + i, project_id: 'p1', score: i * 0.25})",
    "CREATE (:Topic {name: 'pricing'}), (:Topic {name: 'ux'})",
    # relationship properties of every kind, and parallel relationships
    "MATCH (a:Persona), (b:Persona) WHERE a.id = 'x' + 1 AND b.id STARTS WITH 'x'"
    " AND a <> b CREATE (a)-[:INFLUENCES {weight: toFloat(b.score), since: date('2020-01-01'),"
    " via: ['chat', 'mail'], at: datetime('2023-06-01T12:00:00Z'), span: duration('PT90M')}]->(b)",
    "MATCH (a:Persona {id: 'x2'}), (b:Persona {id: 'x3'}) CREATE (a)-[:INFLUENCES]->(b),"
    " (a)-[:INFLUENCES]->(b)",
    "MATCH (p:Persona), (t:Topic {name: 'pricing'}) CREATE (p)-[:INTERESTED_IN {bytes: $b}]->(t)",
    "MATCH (p:Persona {id: 'v1'}) MATCH (q:Project {id: 'p1'}) CREATE (p)-[:OF]->(q)",
    # schema beyond graph/migrations: a text index, a relationship index, a full-text index
    "CREATE TEXT INDEX topic_name_text IF NOT EXISTS FOR (t:Topic) ON (t.name)",
    "CREATE INDEX influences_since IF NOT EXISTS FOR ()-[r:INFLUENCES]-() ON (r.since)",
    "CREATE FULLTEXT INDEX project_names IF NOT EXISTS FOR (p:Project) ON EACH [p.name]",
]


@pytest.fixture(scope="module")
def graph(scratch_neo4j: str) -> Iterator[Driver]:
    driver = GraphDatabase.driver(scratch_neo4j, auth=NEO4J_AUTH)
    yield driver
    driver.close()


def build(driver: Driver) -> None:
    wipe_graph(driver)
    apply_graph_schema(driver)
    for statement in BUILD:
        driver.execute_query(statement, {"b": b"\x00\xffbytes"})
    driver.execute_query("CALL db.awaitIndexes(60)")


def snapshot(driver: Driver) -> dict[str, Any]:
    """The graph as multisets of canonical contents (ids aside), and its schema."""
    nodes = sorted(
        canonical(sorted(r["l"]), r["p"]).decode()
        for r in driver.execute_query("MATCH (n) RETURN labels(n) AS l, properties(n) AS p").records
    )
    rels = sorted(
        json.dumps(
            [
                canonical(r["t"], r["p"]).decode(),
                canonical(sorted(r["al"]), r["ap"]).decode(),
                canonical(sorted(r["bl"]), r["bp"]).decode(),
            ]
        )
        for r in driver.execute_query(
            "MATCH (a)-[r]->(b) RETURN type(r) AS t, properties(r) AS p, labels(a) AS al,"
            " properties(a) AS ap, labels(b) AS bl, properties(b) AS bp"
        ).records
    )
    schema = sorted(item.key() for item in read_schema(driver))
    return {"nodes": nodes, "relationships": rels, "schema": schema}


@pytest.fixture(scope="module")
def exported(
    graph: Driver, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Manifest, LocalBlobStore, dict[str, Any]]:
    build(graph)
    before = snapshot(graph)
    store = LocalBlobStore(tmp_path_factory.mktemp("graph-backups"))
    manifest = export_graph(graph, store, now=lambda: datetime.now(UTC), source="scratch")
    return manifest, store, before


def test_export_counts_labels_and_types_and_keeps_the_schema(
    exported: tuple[Manifest, LocalBlobStore, dict[str, Any]],
) -> None:
    manifest, _store, before = exported
    graph = manifest.graph
    assert graph is not None
    assert graph.nodes.count == len(before["nodes"]) == 45
    assert graph.labels["Persona"].count == 41
    assert graph.labels["Vip"].count == 1 and graph.labels[""].count == 1
    assert graph.relationship_types["INFLUENCES"].count == 41
    assert graph.relationship_types["INTERESTED_IN"].count == 41
    names = {item.name for item in graph.schema_items}
    assert {"persona_id", "project_id", "topic_name", "topic_name_text", "project_names"} <= names
    assert manifest.objects[0].name.startswith(f"neo4j/weekly/{manifest.started_at:%Y-%m-%d}/")


def test_a_restored_graph_is_identical_with_typed_and_relationship_properties_and_schema(
    exported: tuple[Manifest, LocalBlobStore, dict[str, Any]], graph: Driver
) -> None:
    manifest, store, before = exported
    wipe_graph(graph)
    assert snapshot(graph)["nodes"] == []

    report = restore_graph(manifest, store, graph, target="scratch")
    assert report.ok, report.summary()
    after = snapshot(graph)
    assert after == before
    # the temporary restore label, key and index are gone
    leftovers = graph.execute_query(
        "MATCH (n) WHERE n:__SightOpsRestore OR n.__sightops_restore_id IS NOT NULL"
        " RETURN count(n) AS c"
    ).records[0]["c"]
    assert leftovers == 0
    # a uniqueness constraint of the backup is enforced again
    with pytest.raises(Exception, match="already exists"):
        graph.execute_query("CREATE (:Persona {id: 'x1'})")


def test_restore_refuses_a_graph_that_is_not_empty_unless_forced(
    exported: tuple[Manifest, LocalBlobStore, dict[str, Any]], graph: Driver, tmp_path: Path
) -> None:
    manifest, store, before = exported
    graph.execute_query("MERGE (:Persona {id: 'x1', project_id: 'p1', score: 0.25})")
    with pytest.raises(RestoreRefused, match="--force"):
        restore_graph(manifest, store, graph, target="scratch")
    graph.execute_query("CREATE (:Stray {note: 'replaced by the forced restore'})")
    report = restore_graph(manifest, store, graph, target="scratch", force=True)
    assert report.ok, report.summary()
    assert snapshot(graph) == before
