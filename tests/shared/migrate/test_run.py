"""The migrate run itself (lock, lint, rendered SQL applied, graph, record) on real services.

The function tests (tests/functions/migrate) prove the same through the deployed entry
point; these pin down the run's contract where an HTTP round trip adds nothing: what is
recorded for rollback, where the database stands after a failure, the advisory lock.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from shared.errors import TransientError
from shared.migrate import (
    advisory_lock,
    lock_holder,
    lock_key,
    migration_engine,
    run_migrations,
)
from shared.runtime import Deps
from shared.settings import Settings
from tests.shared.migrate.helpers import (
    PROJECT_HEAD,
    GraphNamespace,
    advisory_lock_is_free,
    make_deps,
    migrate_settings,
    migration_rows,
    request,
    scalar,
    unreachable_neo4j,
)


def test_pending_migrations_are_applied_in_order_and_recorded_once(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "succeeded", outcome.result.error
    assert outcome.result.postgres.from_ == PROJECT_HEAD
    assert outcome.result.postgres.to == "t002"
    assert outcome.result.breaking is False
    assert (
        scalar(migration_db, "SELECT string_agg(revision, ',' ORDER BY revision) FROM mig_applied")
        == "t001,t002"
    )
    [row] = migration_rows(migration_db)
    assert row["status"] == "succeeded" and row["dedupe_key"] == "migrate:b-1"
    assert row["finished_at"] is not None
    detail = row["detail"]
    assert detail["postgres"] == {"from": PROJECT_HEAD, "to": "t002"}
    assert detail["applied"]["postgres"] == ["t001", "t002"]
    assert {
        "build_id",
        "commit_sha",
        "breaking",
        "graph",
        "lint_findings",
        "duration_ms",
        "error",
    } <= set(detail)


def test_a_second_build_finds_the_database_at_head_and_reports_from_equal_to(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply")  # type: ignore[operator]
    run_migrations(deps, request("b-1"))
    again = run_migrations(deps, request("b-2"))
    assert again.status == "succeeded"
    assert again.result.postgres.from_ == again.result.postgres.to == "t002"
    assert [r["status"] for r in migration_rows(migration_db)] == ["succeeded", "succeeded"]


def test_the_same_build_again_replays_its_recorded_result_without_running(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply")  # type: ignore[operator]
    first = run_migrations(deps, request("b-1"))
    again = run_migrations(deps, request("b-1"))
    assert again.replayed and again.result == first.result
    assert len(migration_rows(migration_db)) == 1


def test_a_migration_failing_halfway_leaves_the_previous_revision_and_a_free_lock(
    deps_for: object, migration_db: str, settings: Settings, tmp_path: Path
) -> None:
    deps = deps_for("failing")  # type: ignore[operator]
    outcome = run_migrations(deps, request("b-1"))
    assert outcome.status == "failed"
    assert "t002_fails_halfway failed and was rolled back" in (outcome.result.error or "")
    assert "23505" in (outcome.result.error or "")
    # t001 committed on its own; t002 rolled back entirely (its table is gone too).
    assert outcome.result.postgres.to == "t001"
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == "t001"
    assert scalar(migration_db, "SELECT to_regclass('mig_half') IS NULL") is True
    assert advisory_lock_is_free(migration_db)
    [row] = migration_rows(migration_db)
    assert row["status"] == "failed" and row["detail"]["error"] == outcome.result.error

    fixed = tmp_path / "versions" / "t002_fails_halfway.py"
    fixed.write_text(fixed.read_text().replace("FAIL = True", "FAIL = False"))
    next_run = run_migrations(deps, request("b-2"))
    assert next_run.status == "succeeded"
    assert (next_run.result.postgres.from_, next_run.result.postgres.to) == ("t001", "t002")


def test_an_allowed_destructive_migration_marks_the_run_breaking(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("breaking")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "succeeded" and outcome.result.breaking is True
    [finding] = outcome.result.lint_findings
    assert (finding.rule, finding.severity, finding.allowed) == ("drop-column", "destructive", True)
    [row] = migration_rows(migration_db)
    assert row["detail"]["breaking"] is True


def test_breaking_is_readable_with_the_rollback_functions_query(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("breaking")  # type: ignore[operator]
    run_migrations(deps, request())
    found = scalar(
        migration_db,
        "SELECT count(*) FROM ops.actions WHERE kind = 'migration' AND status = 'succeeded'"
        " AND (detail->>'breaking')::boolean AND finished_at > now() - interval '1 hour'",
    )
    assert found == 1


def test_an_unallowed_unsafe_migration_is_blocked_before_anything_is_applied(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("blocked")  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    assert "blocked by migration lint" in (outcome.result.error or "")
    assert "add-index-non-concurrently" in (outcome.result.error or "")
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD
    assert [f.rule for f in outcome.result.lint_findings] == ["add-index-non-concurrently"]


def test_statement_timeout_applies_to_each_migration(deps_for: object, migration_db: str) -> None:
    deps = deps_for("slow_cic", statement_timeout_ms=500)  # type: ignore[operator]
    outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    assert "57014" in (outcome.result.error or "")  # canceling statement due to timeout
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD


def test_a_held_advisory_lock_makes_the_run_wait_then_retry(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply", lock_wait_s=0.3)  # type: ignore[operator]
    with (
        migration_engine(deps.settings).connect() as holder,
        advisory_lock(holder, deps.settings.migrate.lock_name, wait_s=1),
        pytest.raises(TransientError, match="held by pid"),
    ):
        run_migrations(deps, request())
    [row] = migration_rows(migration_db)
    assert row["status"] == "started" and "not acquired within" in row["detail"]["error"]
    assert scalar(migration_db, "SELECT version_num FROM alembic_version") == PROJECT_HEAD


def test_the_lock_wait_is_measured(deps_for: object) -> None:
    deps = deps_for("apply")  # type: ignore[operator]
    run_migrations(deps, request())
    timings = deps.metrics.snapshot()["timings"]
    assert timings[("lock_wait_ms", (("consumer", "migrate"),))][0] == 1


def test_retryable_failures_end_failed_once_the_attempts_are_used_up(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply", lock_wait_s=0.3, max_delivery_attempts=3)  # type: ignore[operator]
    with (
        migration_engine(deps.settings).connect() as holder,
        advisory_lock(holder, deps.settings.migrate.lock_name, wait_s=1),
    ):
        for _ in range(2):
            with pytest.raises(TransientError):
                run_migrations(deps, request())
        outcome = run_migrations(deps, request())
    assert outcome.status == "failed"
    assert "final delivery attempt 3" in (outcome.result.error or "")
    [row] = migration_rows(migration_db)
    assert row["status"] == "failed" and row["detail"]["attempts"] == 3


def test_on_the_final_delivery_attempt_a_lock_timeout_ends_failed(
    deps_for: object, migration_db: str
) -> None:
    deps = deps_for("apply", lock_wait_s=0.3)  # type: ignore[operator]
    with (
        migration_engine(deps.settings).connect() as holder,
        advisory_lock(holder, deps.settings.migrate.lock_name, wait_s=1),
    ):
        outcome = run_migrations(deps, request(final_attempt=True))
    assert outcome.status == "failed" and "final delivery attempt" in (outcome.result.error or "")
    assert [r["status"] for r in migration_rows(migration_db)] == ["failed"]


def test_advisory_lock_is_released_when_the_body_raises(
    deps_for: object, migration_db: str, settings: Settings
) -> None:
    deps = deps_for(None)  # type: ignore[operator]
    name = deps.settings.migrate.lock_name
    with migration_engine(deps.settings).connect() as conn:
        with pytest.raises(RuntimeError), advisory_lock(conn, name, wait_s=1):
            assert lock_holder(conn, lock_key(name)) is not None
            raise RuntimeError("boom")
        assert lock_holder(conn, lock_key(name)) is None
    assert advisory_lock_is_free(migration_db)


def test_concurrent_runs_in_one_process_apply_each_migration_once(
    deps_for: object, migration_db: str
) -> None:
    """Alembic's command API is not thread-safe; the in-process and advisory locks make it."""
    deps = deps_for("apply")  # type: ignore[operator]
    outcomes: list[object] = []
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            outcomes.append(run_migrations(deps, request(f"b-{i}")))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    changed = [o for o in outcomes if o.result.postgres.changed]  # type: ignore[attr-defined]
    assert len(changed) == 1 and len(outcomes) == 6
    assert scalar(migration_db, "SELECT count(*) FROM mig_applied") == 2


def test_neo4j_down_after_postgres_is_recorded_precisely_and_the_rerun_does_only_the_graph(
    deps_for: object, migration_db: str, graph_ns: GraphNamespace, settings: Settings
) -> None:
    deps = deps_for("apply", graph_ns)  # type: ignore[operator]
    down = Deps(deps.settings, metrics=deps.metrics, neo4j_driver=unreachable_neo4j())
    try:
        with pytest.raises(TransientError, match=r"migrated .* -> t002 \(committed\)"):
            run_migrations(down, request("b-1"))
    finally:
        down.close()
    [row] = migration_rows(migration_db)
    assert row["status"] == "started" and row["finished_at"] is None
    assert row["detail"]["postgres"] == {"from": PROJECT_HEAD, "to": "t002"}
    assert "Neo4j unavailable after PostgreSQL was migrated" in row["detail"]["error"]

    rerun = run_migrations(deps, request("b-1"))
    assert rerun.status == "succeeded" and rerun.result.error is None
    assert (rerun.result.postgres.from_, rerun.result.postgres.to) == (PROJECT_HEAD, "t002")
    assert (rerun.result.graph.from_, rerun.result.graph.to) == (None, 2)
    assert scalar(migration_db, "SELECT count(*) FROM mig_applied") == 2
    assert graph_ns.count(settings, "Applied") == 1
    [row] = migration_rows(migration_db)
    assert row["status"] == "succeeded" and row["detail"]["attempts"] == 2


def test_without_ops_tables_the_run_still_migrates_and_records_once_they_exist(
    settings: Settings, tmp_path: Path
) -> None:
    """Bootstrap: a database without the ops schema can be brought to head (bench, CLI)."""
    from tests.conftest import create_scratch_database, drop_database

    url = create_scratch_database("sightops_mig_empty")
    deps = make_deps(migrate_settings(settings, url, versions=None, graph_dir=None, ns=None))
    try:
        outcome = run_migrations(deps, request())
        assert outcome.status == "succeeded", outcome.result.error
        assert (outcome.result.postgres.from_, outcome.result.postgres.to) == (None, PROJECT_HEAD)
        assert [r["status"] for r in migration_rows(url)] == ["succeeded"]
    finally:
        deps.close()
        drop_database(url)
