"""migrate, through its production entry point: Pub/Sub pushes into the functions-framework
app, against real PostgreSQL, Neo4j and the Pub/Sub emulator (docs/migrate.md).

Every test gets its own database (at the project's head, with fixture migrations pending),
its own Neo4j namespace and its own ops-events topic, so it runs beside other suites.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from shared.events import MigrateSelector
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import serve
from tests.helpers import PROJECT, envelope, post_cloudevent, push
from tests.shared.migrate.helpers import (
    CI_TRIGGER_ID,
    GOLDEN_COMMIT,
    PROJECT_HEAD,
    SOURCE,
    GraphNamespace,
    OpsTopic,
    golden_build,
    install_migrations,
    make_deps,
    migrate_settings,
    migration_rows,
    rows,
    scalar,
    unreachable_neo4j,
)


@dataclass
class Env:
    """One configured migrate function and everything it talks to."""

    client: Any
    deps: Deps
    url: str
    topic: OpsTopic
    ns: GraphNamespace | None
    settings: Settings

    def push(self, data: bytes, attributes: dict[str, str], **kw: Any) -> int:
        return int(push(self.client, "cloud-builds", envelope(data, attributes, **kw)).status_code)

    def events(self, wait_for: int = 0) -> list[tuple[dict[str, Any], dict[str, str]]]:
        return self.topic.pull(wait_for=wait_for, timeout_s=10 if wait_for else 1)

    def revision(self) -> str:
        return str(scalar(self.url, "SELECT version_num FROM alembic_version"))

    def receipts(self) -> list[dict[str, Any]]:
        return rows(
            self.url,
            "SELECT event_id, outcome FROM ops.event_receipts WHERE consumer = 'migrate'"
            " ORDER BY received_at",
        )


@pytest.fixture
def make_env(
    settings: Settings,
    migration_db: str,
    graph_ns: GraphNamespace,
    ops_topic: OpsTopic,
    tmp_path: Path,
) -> Iterator[Any]:
    """``make_env(set_name, graph=True, neo4j_driver=None, **migrate_config)`` -> Env."""
    made: list[Deps] = []

    def make(
        name: str = "apply", graph: bool = True, neo4j_driver: Any = None, **config: Any
    ) -> Env:
        versions = install_migrations(name, tmp_path / "versions")
        graph_dir = graph_ns.install(tmp_path / "graph") if graph else None
        configured = migrate_settings(
            settings,
            migration_db,
            versions=versions,
            graph_dir=graph_dir,
            ns=graph_ns,
            topic=ops_topic.name,
            **config,
        ).model_copy(update={"db_pool_size": 25})
        deps = make_deps(configured, neo4j_driver=neo4j_driver)
        made.append(deps)
        set_process_deps(deps)
        app = functions_framework.create_app(
            target="migrate", source=str(SOURCE), signature_type="cloudevent"
        )
        return Env(app.test_client(), deps, migration_db, ops_topic, graph_ns, configured)

    yield make
    set_process_deps(None)
    for deps in made:
        deps.close()


def test_a_selected_success_build_migrates_both_stores_and_publishes_succeeded(
    make_env: Any,
) -> None:
    env: Env = make_env("apply")
    build_id = str(uuid.uuid4())
    assert env.push(*golden_build(build_id=build_id)) == 200

    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.succeeded"
    assert attributes["source"] == "migrate" and attributes["service"] == "sight-api"
    assert data["build_id"] == build_id and data["commit_sha"] == GOLDEN_COMMIT
    assert data["postgres"] == {"from": PROJECT_HEAD, "to": "t002"}
    assert data["graph"] == {"from": None, "to": 2}
    assert data["breaking"] is False and data["error"] is None
    assert env.revision() == "t002"
    [row] = migration_rows(env.url)
    assert row["status"] == "succeeded" and row["service"] == "sight-api"
    assert row["detail"]["build_id"] == build_id and row["finished_at"] is not None


def test_the_eventarc_cloudevent_form_is_handled_the_same(make_env: Any) -> None:
    env: Env = make_env("apply", graph=False)
    body = envelope(*golden_build())
    assert post_cloudevent(env.client, "cloud-builds", body).status_code == 200
    assert [a["type"] for _, a in env.events(wait_for=1)] == ["sight.ops.migration.succeeded"]
    assert env.revision() == "t002"


@pytest.mark.parametrize("golden", ["queued", "working", "failure", "timeout", "cancelled"])
def test_builds_that_are_not_a_success_change_nothing_and_publish_nothing(
    make_env: Any, golden: str
) -> None:
    env: Env = make_env("apply")
    assert env.push(*golden_build(golden)) == 200
    assert env.revision() == PROJECT_HEAD
    assert migration_rows(env.url) == []
    assert env.events() == []
    assert [r["outcome"] for r in env.receipts()] == ["skipped"]


def manual_build(**substitutions: str) -> tuple[bytes, dict[str, str]]:
    """``gcloud builds submit --substitutions=...``: no buildTriggerId, but every value
    and tag a caller can choose made to look like the CI trigger's build."""
    data, attributes = golden_build("success_manual", **substitutions)
    message = json.loads(data)
    message["tags"] = [f"trigger-{CI_TRIGGER_ID}", "sight-api", "ci"]
    return json.dumps(message).encode(), attributes


INJECTED = 'x"; touch /tmp/PWNED; echo "'


@pytest.mark.parametrize("commit", [GOLDEN_COMMIT, INJECTED])
def test_a_manual_build_naming_the_service_is_recorded_skipped_and_never_migrated(
    make_env: Any, commit: str
) -> None:
    env: Env = make_env("apply")
    data, attributes = manual_build(
        _SERVICE="sight-api", COMMIT_SHA=commit, TRIGGER_NAME="sight-api-ci"
    )
    assert env.push(data, attributes) == 200

    assert env.revision() == PROJECT_HEAD
    assert env.events() == [], "nothing published: no migration.succeeded, no Slack noise"
    assert [r["outcome"] for r in env.receipts()] == ["skipped"]
    [row] = migration_rows(env.url)
    assert row["status"] == "skipped" and row["finished_at"] is not None
    assert row["service"] == "sight-api" and row["dedupe_key"] is None
    assert row["detail"]["build_id"] == attributes["buildId"]
    assert row["detail"]["trigger_id"] is None and row["detail"]["commit_sha"] == commit
    assert "manual build" in row["detail"]["reason"]


def test_an_unselected_build_is_published_skipped_only_when_configured(make_env: Any) -> None:
    env: Env = make_env("apply", publish_skipped=True)
    data, attributes = manual_build(_SERVICE="sight-api", COMMIT_SHA=INJECTED)
    assert env.push(data, attributes) == 200
    assert env.revision() == PROJECT_HEAD
    [(payload, attrs)] = env.events(wait_for=1)
    assert attrs["type"] == "sight.ops.migration.skipped"
    assert "not selected" in payload["reason"]
    assert payload["commit_sha"] is None, "a malformed commit is never published"
    assert [row["status"] for row in migration_rows(env.url)] == ["skipped"]


def test_a_build_of_the_ci_trigger_for_another_service_is_skipped(make_env: Any) -> None:
    env: Env = make_env("apply")
    assert env.push(*golden_build(_SERVICE="sight-web")) == 200
    assert env.revision() == PROJECT_HEAD
    assert env.events() == []
    [row] = migration_rows(env.url)
    assert row["status"] == "skipped" and "_SERVICE" in row["detail"]["reason"]


@pytest.mark.parametrize(
    ("substitution", "value"),
    [
        ("COMMIT_SHA", INJECTED),
        ("COMMIT_SHA", "$(touch /tmp/PWNED)"),
        ("COMMIT_SHA", "3f2a9c1"),
        ("COMMIT_SHA", GOLDEN_COMMIT + "\n"),
        ("_SERVICE", "sight-api`touch /tmp/PWNED`"),
    ],
)
def test_a_build_of_the_ci_trigger_with_a_malformed_value_is_failed_and_never_succeeds(
    make_env: Any, substitution: str, value: str
) -> None:
    """A trigger run by hand can carry chosen values; they must never reach the deploy."""
    selector = MigrateSelector(trigger_ids=frozenset({CI_TRIGGER_ID}))  # any service
    env: Env = make_env("apply", selector=selector)
    body = envelope(*golden_build(**{substitution: value}))
    assert push(env.client, "cloud-builds", body).status_code == 200

    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.failed"
    assert substitution in data["error"] and "not migrated or deployed" in data["error"]
    assert value not in json.dumps([data, attributes]), "never published"
    assert env.revision() == PROJECT_HEAD, "nothing migrated for an untrusted commit"
    assert [r["outcome"] for r in env.receipts()] == ["failed"]
    [row] = migration_rows(env.url)
    assert row["status"] == "failed" and row["dedupe_key"] == f"migrate:{data['build_id']}"
    assert row["detail"]["rejected"] == {substitution: value}
    # Acknowledged for good: a redelivery is a duplicate and publishes nothing more.
    assert push(env.client, "cloud-builds", body).status_code == 200
    assert [a["type"] for _, a in env.events()] == ["sight.ops.migration.failed"]


def test_the_local_stack_migrates_the_golden_ci_build_and_no_manual_build(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`make dev` suggests publishing the golden triggered build: it must be selected."""
    from shared.events import parse_build_message
    from sightops.dev import dev_env

    monkeypatch.delenv("MIGRATE__SELECTOR", raising=False)
    selector = MigrateSelector.model_validate_json(dev_env()["MIGRATE__SELECTOR"])
    assert selector.selects(parse_build_message(*golden_build()))
    assert not selector.selects(parse_build_message(*manual_build(_SERVICE="sight-api")))


def test_a_queued_build_with_a_malformed_commit_is_skipped_quietly(make_env: Any) -> None:
    env: Env = make_env("apply", graph=False)
    assert env.push(*golden_build("queued", COMMIT_SHA=INJECTED)) == 200
    assert [r["outcome"] for r in env.receipts()] == ["skipped"]
    assert migration_rows(env.url) == [] and env.events() == []


def test_queued_and_working_messages_do_not_use_up_the_builds_one_run(make_env: Any) -> None:
    env: Env = make_env("apply", graph=False)
    build_id = str(uuid.uuid4())
    for status in ("queued", "working", "success_triggered"):
        assert env.push(*golden_build(status, build_id=build_id)) == 200
    assert env.revision() == "t002"
    assert [a["type"] for _, a in env.events(wait_for=1)] == ["sight.ops.migration.succeeded"]


def test_a_redelivered_success_message_runs_and_publishes_once(make_env: Any) -> None:
    env: Env = make_env("apply")
    body = envelope(*golden_build())
    for _ in range(3):
        assert push(env.client, "cloud-builds", body).status_code == 200
    assert len(env.events(wait_for=1)) == 1
    assert len(migration_rows(env.url)) == 1
    assert scalar(env.url, "SELECT count(*) FROM mig_applied") == 2


def test_a_migration_failing_halfway_is_published_failed_acked_and_not_retried(
    make_env: Any,
) -> None:
    env: Env = make_env("failing")
    body = envelope(*golden_build())
    assert push(env.client, "cloud-builds", body).status_code == 200
    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.failed"
    assert "t002_fails_halfway failed and was rolled back" in data["error"]
    assert data["postgres"] == {"from": PROJECT_HEAD, "to": "t001"}
    assert env.revision() == "t001"  # the previous revision: t002 rolled back as a whole
    assert scalar(env.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'") == 0
    assert [r["outcome"] for r in env.receipts()] == ["failed"]
    assert env.deps.metrics.counter("events", consumer="migrate", outcome="failed") == 1
    # Pub/Sub got a 2xx: no redelivery; a duplicate would be answered from the receipt.
    assert push(env.client, "cloud-builds", body).status_code == 200
    assert len(env.events()) == 1


def test_once_the_migration_is_fixed_the_next_build_succeeds(make_env: Any, tmp_path: Path) -> None:
    env: Env = make_env("failing", graph=False)
    assert env.push(*golden_build()) == 200
    fixed = tmp_path / "versions" / "t002_fails_halfway.py"
    fixed.write_text(fixed.read_text().replace("FAIL = True", "FAIL = False"))
    assert env.push(*golden_build()) == 200
    types = [a["type"] for _, a in env.events(wait_for=2)]
    assert types == ["sight.ops.migration.failed", "sight.ops.migration.succeeded"]
    assert env.revision() == "t002"


def test_a_lint_blocked_migration_is_published_failed_with_its_findings(make_env: Any) -> None:
    env: Env = make_env("blocked")
    assert env.push(*golden_build()) == 200
    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.failed"
    assert "blocked by migration lint" in data["error"]
    [finding] = data["lint_findings"]
    assert finding["rule"] == "add-index-non-concurrently" and finding["allowed"] is False
    assert env.revision() == PROJECT_HEAD


def test_an_allowed_destructive_migration_is_published_breaking(make_env: Any) -> None:
    env: Env = make_env("breaking", graph=False)
    assert env.push(*golden_build()) == 200
    [(data, _)] = env.events(wait_for=1)
    assert data["breaking"] is True
    assert data["lint_findings"][0]["rule"] == "drop-column"


def test_a_graph_file_edited_after_it_was_applied_is_refused_with_a_clear_error(
    make_env: Any, tmp_path: Path
) -> None:
    env: Env = make_env("apply")
    assert env.push(*golden_build()) == 200
    edited = tmp_path / "graph" / "V0001__thing_key_index.cypher"
    edited.write_text(edited.read_text().replace("ON (n.key)", "ON (n.other_key)"))
    assert env.push(*golden_build()) == 200
    (_, first), (data, second) = env.events(wait_for=2)
    assert (first["type"], second["type"]) == (
        "sight.ops.migration.succeeded",
        "sight.ops.migration.failed",
    )
    assert "V0001__thing_key_index.cypher was edited after it was applied" in data["error"]
    assert "PostgreSQL unchanged at t002" in data["error"]


def test_a_stale_build_message_is_dropped(make_env: Any) -> None:
    env: Env = make_env("apply")
    old = datetime.now(UTC) - timedelta(days=2)
    assert env.push(*golden_build(), publish_time=old) == 200
    assert env.revision() == PROJECT_HEAD and env.events() == []


def test_neo4j_down_after_postgres_is_retried_and_the_redelivery_does_only_the_graph(
    make_env: Any, settings: Settings
) -> None:
    down: Env = make_env("apply", neo4j_driver=unreachable_neo4j())
    body = envelope(*golden_build())
    assert push(down.client, "cloud-builds", body).status_code == 503
    assert down.revision() == "t002"  # PostgreSQL committed, migration by migration
    assert down.events() == []  # no verdict yet: the deploy stage keeps waiting
    [row] = migration_rows(down.url)
    assert row["status"] == "started"
    assert "Neo4j unavailable after PostgreSQL was migrated" in row["detail"]["error"]
    assert down.receipts() == []  # rolled back with the delivery, so the retry runs

    up: Env = make_env("apply")
    assert push(up.client, "cloud-builds", body).status_code == 200
    [(data, attributes)] = up.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.succeeded"
    assert data["postgres"] == {"from": PROJECT_HEAD, "to": "t002"}
    assert data["graph"] == {"from": None, "to": 2}
    assert scalar(up.url, "SELECT count(*) FROM mig_applied") == 2  # nothing re-applied
    assert up.ns is not None and up.ns.count(settings, "Applied") == 1


def test_when_attempts_run_out_neo4j_down_ends_failed_so_deploy_gets_an_answer(
    make_env: Any,
) -> None:
    env: Env = make_env("apply", neo4j_driver=unreachable_neo4j(), max_delivery_attempts=2)
    body = envelope(*golden_build())
    assert push(env.client, "cloud-builds", body).status_code == 503
    assert push(env.client, "cloud-builds", body).status_code == 200
    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.failed"
    assert "Neo4j unavailable after PostgreSQL was migrated" in data["error"]
    assert "final delivery attempt 2" in data["error"]
    assert data["postgres"] == {"from": PROJECT_HEAD, "to": "t002"}


def _deliver_until_acked(client: Any, body: dict[str, Any], deadline: float) -> list[int]:
    """What Pub/Sub does: redeliver on non-2xx, with a little backoff."""
    statuses: list[int] = []
    while time.monotonic() < deadline:
        status = push(client, "cloud-builds", body).status_code
        statuses.append(status)
        if status == 200:
            break
        time.sleep(0.2)
    return statuses


def test_ten_deliveries_of_one_build_and_ten_other_builds_apply_each_migration_once(
    make_env: Any, settings: Settings
) -> None:
    env: Env = make_env("apply", lock_wait_s=60)
    app = functions_framework.create_app(
        target="migrate", source=str(SOURCE), signature_type="cloudevent"
    )
    same = envelope(*golden_build())
    bodies = [same] * 10 + [envelope(*golden_build()) for _ in range(10)]
    results: list[list[int]] = [[] for _ in bodies]
    deadline = time.monotonic() + 90
    start = threading.Barrier(len(bodies))

    def deliver(i: int) -> None:
        client = app.test_client()
        start.wait()
        results[i] = _deliver_until_acked(client, bodies[i], deadline)

    threads = [threading.Thread(target=deliver, args=(i,)) for i in range(len(bodies))]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started

    assert all(r and r[-1] == 200 for r in results), results
    assert elapsed < 60  # bounded: nothing deadlocked or waited out a timeout
    events = env.events(wait_for=11)
    assert [a["type"] for _, a in events] == ["sight.ops.migration.succeeded"] * 11
    assert len({d["build_id"] for d, _ in events}) == 11
    changed = [d for d, _ in events if d["postgres"]["from"] != d["postgres"]["to"]]
    assert len(changed) == 1  # one applied, the others found the database at head
    assert scalar(env.url, "SELECT count(*) FROM mig_applied") == 2
    assert env.ns is not None and env.ns.count(settings, "Applied") == 1
    assert [r["status"] for r in migration_rows(env.url)] == ["succeeded"] * 11


def test_duplicates_racing_a_concurrent_index_build_do_not_stall_it(make_env: Any) -> None:
    """A duplicate blocked in its receipt INSERT would hold a snapshot that CREATE INDEX
    CONCURRENTLY waits for (tests/shared/migrate/test_deadlock.py); migrate answers
    duplicates 503 at once instead, so the index build goes through."""
    env: Env = make_env("slow_cic", graph=False, lock_timeout_ms=1500)
    app = functions_framework.create_app(
        target="migrate", source=str(SOURCE), signature_type="cloudevent"
    )
    body = envelope(*golden_build())
    first: list[int] = []
    runner = threading.Thread(
        target=lambda: first.append(push(app.test_client(), "cloud-builds", body).status_code)
    )
    runner.start()
    # Race only once the first delivery holds the migration lock (it is migrating).
    deadline = time.monotonic() + 10
    while not scalar(env.url, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"):
        assert time.monotonic() < deadline, "the first delivery never started migrating"
        time.sleep(0.02)
    duplicates: list[int] = []
    client = app.test_client()
    while runner.is_alive():
        duplicates.append(push(client, "cloud-builds", body).status_code)
        time.sleep(0.05)
    runner.join()
    assert first == [200]
    assert 503 in duplicates and set(duplicates) <= {503, 200}  # raced, answered at once
    [(data, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.succeeded", data["error"]
    assert scalar(
        env.url,
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'ix_projects_name'::regclass",
    )


def test_the_emulator_pushes_concurrent_builds_into_the_served_function(make_env: Any) -> None:
    """The real wiring: cloud-builds topic -> push subscription -> migrate -> ops-events."""
    env: Env = make_env("apply")
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = f"cloud-builds-mig-{uuid.uuid4().hex[:8]}"
    app = functions_framework.create_app(
        target="migrate", source=str(SOURCE), signature_type="cloudevent"
    )
    with serve(app) as function:
        ensure_topic(publisher, PROJECT, topic)
        subscription = ensure_subscription(
            subscriber,
            PROJECT,
            f"{topic}-push",
            topic,
            push_to=f"{function.url}/projects/{PROJECT}/topics/{topic}",
            min_backoff_s=0.2,
            max_backoff_s=1,
        )
        try:
            same = golden_build()
            messages = [same] * 5 + [golden_build() for _ in range(5)]
            futures = [
                publisher.publish(f"projects/{PROJECT}/topics/{topic}", data, **attributes)
                for data, attributes in messages
            ]
            for future in futures:
                future.result(timeout=10)
            events = env.topic.pull(wait_for=6, timeout_s=60)
            time.sleep(1.0)  # a late duplicate event would show up now
            events = env.topic.pull()
        finally:
            subscriber.delete_subscription(subscription=subscription)
            publisher.delete_topic(topic=f"projects/{PROJECT}/topics/{topic}")
    assert sorted(a["type"] for _, a in events) == ["sight.ops.migration.succeeded"] * 6
    assert len({d["build_id"] for d, _ in events}) == 6
    assert scalar(env.url, "SELECT count(*) FROM mig_applied") == 2
