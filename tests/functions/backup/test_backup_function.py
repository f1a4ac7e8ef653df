"""backup and backup_drill through their production entry point (functions/backup/main.py):
Cloud Scheduler's message -> backups of both stores in Cloud Storage (the stand-in) and
their ``ops.actions`` rows -> a drill request on ``backup-requests`` -> backup_drill
restores each into scratch targets -> ``sight.ops.backup.verified`` on ``ops-events``,
``restore_drill`` rows and the staleness metric (docs/backups.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.backup import VERIFIED_METRIC, list_manifests
from shared.metrics import Metrics
from shared.runtime import Deps, set_process_deps
from shared.settings import BackupConfig, Settings, Topics
from tests.helpers import ROOT, envelope, push
from tests.shared.backup.helpers import Gcs
from tests.shared.migrate.helpers import OpsTopic

SOURCE = ROOT / "functions" / "backup" / "main.py"
#: What Cloud Scheduler publishes (terraform/backup.tf): no id, no time.
SCHEDULED = {"type": "sight.ops.backup.requested", "source": "cloud-scheduler", "kind": "backup"}


@pytest.fixture
def requests_topic() -> Iterator[OpsTopic]:
    topic = OpsTopic()
    yield topic
    topic.close()


@pytest.fixture
def backup_deps(
    settings: Settings, gcs: Gcs, scratch_neo4j: str, ops_topic: OpsTopic, requests_topic: OpsTopic
) -> Iterator[Deps]:
    configured = settings.model_copy(
        update={
            "topics": Topics(ops_events=ops_topic.name, backup_requests=requests_topic.name),
            "backup": BackupConfig(
                bucket=gcs.bucket,
                storage_endpoint=gcs.url,
                chunk_bytes=256 * 1024,
                scratch_neo4j_uri=scratch_neo4j,
            ),
        }
    )
    deps = Deps(configured, metrics=Metrics())
    set_process_deps(deps)
    yield deps
    set_process_deps(None)
    deps.close()


def client(target: str) -> Any:
    app = functions_framework.create_app(
        target=target, source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


def actions(deps: Deps, kind: str) -> list[Any]:
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text("SELECT status, detail FROM ops.actions WHERE kind = :k ORDER BY id"),
                {"k": kind},
            ).all()
        )


def test_a_scheduled_backup_of_both_stores_is_drilled_and_verified(
    backup_deps: Deps, gcs: Gcs, ops_topic: OpsTopic, requests_topic: OpsTopic
) -> None:
    body = json.dumps({"stores": ["postgres", "neo4j"]})
    assert push(client("backup"), "backup-requests", envelope(body, SCHEDULED)).status_code == 200

    manifests = {m.store: m for m in list_manifests(gcs.store)}
    assert set(manifests) == {"postgres", "neo4j"}
    assert manifests["postgres"].prefix.startswith("postgres/daily/")
    assert manifests["neo4j"].prefix.startswith("neo4j/weekly/")
    rows = actions(backup_deps, "backup")[-2:]
    assert [(r.status, r.detail["store"]) for r in rows] == [
        ("succeeded", "postgres"),
        ("succeeded", "neo4j"),
    ]
    assert rows[0].detail["backup_id"] == manifests["postgres"].backup_id
    assert rows[0].detail["counts"]["ops.actions"] >= 0

    # backup asks for a drill of each backup; backup_drill skips nothing of its own kind
    drills = requests_topic.pull(wait_for=2)
    assert sorted(d["backup_id"] for d, _ in drills) == sorted(
        m.backup_id for m in manifests.values()
    )
    assert all(a["kind"] == "drill" and a["type"] == SCHEDULED["type"] for _, a in drills)
    skipped = push(client("backup"), "backup-requests", envelope(drills[0][0], drills[0][1]))
    assert skipped.status_code == 200
    for data, attributes in drills:
        answer = push(client("backup_drill"), "backup-requests", envelope(data, attributes))
        assert answer.status_code == 200

    verdicts = ops_topic.pull(wait_for=2)
    assert sorted((a["type"], d["store"]) for d, a in verdicts) == [
        ("sight.ops.backup.verified", "neo4j"),
        ("sight.ops.backup.verified", "postgres"),
    ], [d.get("reason") for d, _ in verdicts]
    for data, _ in verdicts:
        manifest = manifests[data["store"]]
        assert data["backup_id"] == manifest.backup_id and data["findings"] == []
    drilled = actions(backup_deps, "restore_drill")[-2:]
    assert {r.status for r in drilled} == {"verified"}
    metrics = backup_deps.metrics
    assert (
        metrics.counter(VERIFIED_METRIC, store="postgres")
        == manifests["postgres"].finished_at.timestamp()
    )
    # the drill's scratch databases are gone
    with backup_deps.engine.connect() as conn:
        left = conn.execute(
            text("SELECT count(*) FROM pg_database WHERE datname LIKE 'sightops_restore_%'")
        ).scalar()
    assert left == 0


def test_a_drill_without_any_backup_fails_loudly(backup_deps: Deps, ops_topic: OpsTopic) -> None:
    body = json.dumps({"stores": ["postgres"], "kind": "drill"})
    attributes = {**SCHEDULED, "kind": "drill"}
    assert (
        push(client("backup_drill"), "backup-requests", envelope(body, attributes)).status_code
        == 200
    )
    verdicts = ops_topic.pull(wait_for=1)
    assert [(a["type"], d["reason"]) for d, a in verdicts] == [
        (
            "sight.ops.backup.failed",
            f"no complete postgres backup in gs://{backup_deps.settings.backup.bucket}",
        )
    ]
    assert actions(backup_deps, "restore_drill")[-1].status == "failed"


def test_a_request_for_an_unknown_store_is_rejected(backup_deps: Deps) -> None:
    body = json.dumps({"stores": ["mysql"]})
    assert push(client("backup"), "backup-requests", envelope(body, SCHEDULED)).status_code == 200
    with backup_deps.engine.connect() as conn:
        reason = conn.execute(
            text(
                "SELECT reason FROM ops.rejected_events WHERE consumer = 'backup'"
                " ORDER BY id DESC LIMIT 1"
            )
        ).scalar()
    assert "stores" in reason
