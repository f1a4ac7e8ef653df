"""The restore drill catches a corrupted object, a truncated export and a manifest that
does not match (issue 16's acceptance; docs/backups.md, "The drill").

Each backup is written to the Cloud Storage stand-in through the official client, then
damaged behind the client's back, then drilled: restored into a scratch database (or the
scratch Neo4j) and compared with its manifest."""

from __future__ import annotations

import base64
import gzip
import hashlib
from datetime import UTC, datetime

import google_crc32c
import pytest
from pydantic import SecretStr

from shared.backup import Manifest, drill, export_graph, export_postgres, manifest_json
from shared.backup._service import source_target
from shared.settings import BackupConfig, Settings
from tests.shared.backup.helpers import SCRATCH_URI, Gcs

PERSONAS = "public.personas"
PROJECTS = "public.projects"
RESPONSES = "public.focus_group_responses"


@pytest.fixture
def settings(source_db: str, gcs: Gcs) -> Settings:
    return Settings(
        database_url=SecretStr(source_db),
        backup=BackupConfig(bucket=gcs.bucket, storage_endpoint=gcs.url, chunk_bytes=256 * 1024),
    )


def pg_backup(settings: Settings, gcs: Gcs) -> Manifest:
    return export_postgres(source_target(settings), gcs.store, now=lambda: datetime.now(UTC))


def personas_object(manifest: Manifest) -> str:
    return next(t.object for t in manifest.tables if t.qualified == PERSONAS)


def problems(report: object) -> list[str]:
    return [str(f) for f in report.findings]  # type: ignore[attr-defined]


def test_a_corrupted_object_and_a_truncated_export_are_each_caught(
    settings: Settings, gcs: Gcs
) -> None:
    manifest = pg_backup(settings, gcs)
    corrupted = personas_object(manifest)
    gcs.state.corrupt(gcs.bucket, corrupted, offset=manifest.object(corrupted).size // 2)
    truncated = next(t.object for t in manifest.tables if t.qualified == RESPONSES)
    whole = gcs.read(truncated)
    gcs.replace(truncated, whole[: len(whole) // 2])

    report = drill(manifest, settings, gcs.store)
    assert not report.ok
    found = problems(report)
    assert f"{PERSONAS}: object {corrupted}: SHA-256 differs from the manifest" in found
    assert (
        f"{RESPONSES}: object {truncated} has {len(whole) // 2} bytes, the manifest says"
        f" {len(whole)}"
    ) in found
    assert f"{RESPONSES}: object {truncated} cannot be read: EOFError" in " ".join(found)
    # every other table is intact and says nothing
    assert {f.split(":")[0] for f in found} == {PERSONAS, RESPONSES}


def test_a_manifest_mismatch_and_an_export_cut_short_are_each_caught(
    settings: Settings, gcs: Gcs
) -> None:
    """The manifest's checksum of one table is wrong; another table's export stopped
    after half its rows but closed its stream, and the manifest records that object's
    size and hashes: only its rows against the manifest's count can tell."""
    manifest = pg_backup(settings, gcs)
    name = personas_object(manifest)
    lines = gzip.decompress(gcs.read(name)).splitlines(keepends=True)
    half = gzip.compress(b"".join(lines[: len(lines) // 2]))
    gcs.replace(name, half)
    entry = manifest.object(name).model_copy(
        update={
            "size": len(half),
            "sha256": hashlib.sha256(half).hexdigest(),
            "crc32c": base64.b64encode(google_crc32c.Checksum(half).digest()).decode(),
        }
    )
    tables = [
        t.model_copy(update={"checksum": "0" * 64}) if t.qualified == PROJECTS else t
        for t in manifest.tables
    ]
    doctored = manifest.model_copy(
        update={
            "objects": [entry if o.name == name else o for o in manifest.objects],
            "tables": tables,
        }
    )
    gcs.replace(doctored.manifest_name, manifest_json(doctored))

    report = drill(doctored, settings, gcs.store)
    assert problems(report) == [
        f"{PROJECTS}: checksum in the object differs from the manifest",
        f"{PERSONAS}: {len(lines) // 2} rows in the object, the manifest says {len(lines)}",
    ]


def test_a_damaged_graph_backup_is_caught(settings: Settings, gcs: Gcs, scratch_neo4j: str) -> None:
    from neo4j import GraphDatabase

    from tests.shared.backup.helpers import NEO4J_AUTH

    assert scratch_neo4j == SCRATCH_URI == settings.backup.scratch_neo4j_uri
    driver = GraphDatabase.driver(scratch_neo4j, auth=NEO4J_AUTH)
    try:
        driver.execute_query("MATCH (n) DETACH DELETE n")
        driver.execute_query(
            "UNWIND range(1, 30) AS i CREATE (:Persona {id: 'd' + i})-[:INFLUENCES {w: i}]->"
            "(:Topic {name: 'topic ' + i})"
        )
        manifest = export_graph(driver, gcs.store, now=lambda: datetime.now(UTC), source="scratch")
    finally:
        driver.close()

    graph = manifest.graph
    assert graph is not None
    labels = dict(graph.labels)
    labels["Persona"] = labels["Persona"].model_copy(update={"count": 31})
    doctored = manifest.model_copy(update={"graph": graph.model_copy(update={"labels": labels})})
    assert "label Persona: 30 in the objects, the manifest says 31" in problems(
        drill(doctored, settings, gcs.store)
    )

    gcs.state.corrupt(
        gcs.bucket, graph.nodes_object, offset=manifest.object(graph.nodes_object).size // 2
    )
    found = problems(drill(manifest, settings, gcs.store))
    assert (
        f"{graph.nodes_object}: object {graph.nodes_object}: SHA-256 differs from the manifest"
        in found
    )
