"""maintain, through its production entry point, on real PostgreSQL (pgvector), Neo4j and
the Pub/Sub emulator (docs/maintain.md)."""

from __future__ import annotations

import threading
import time
from typing import Any

from sqlalchemy import text

from shared.events import MaintenanceResult
from shared.migrate import lock_key
from tests.functions.maintain.conftest import Env
from tests.functions.maintain.helpers import INDEX, TABLE, sync_engine


def index_care(run: dict[str, Any], name: str = INDEX) -> dict[str, Any]:
    return next(i for i in run["detail"]["indexes"] if i["index"] == name)


def results(env: Env, count: int) -> list[MaintenanceResult]:
    events = env.events(wait_for=count)
    assert [a["type"] for _, a in events] == ["sight.ops.maintain.completed"] * count
    return [MaintenanceResult.model_validate(data) for data, _ in events]


def test_a_bloated_hnsw_index_is_rebuilt_concurrently_then_there_is_nothing_to_do(
    make_env: Any,
) -> None:
    env: Env = make_env()
    bloated = env.index_size()

    assert env.push({"dry_run": True}) == 200
    assert env.index_size() == bloated, "a dry run rebuilds nothing"
    assert env.push() == 200
    rebuilt = env.index_size()
    assert rebuilt < bloated / 2
    assert env.push() == 200

    dry, real, again = env.runs()
    assert [r["status"] for r in (dry, real, again)] == ["completed"] * 3
    assert index_care(dry)["action"] == "would_reindex"
    care = index_care(real)
    assert care["action"] == "reindexed" and care["method"] == "hnsw"
    assert care["estimate"] == "pgvector hnsw layout"
    assert care["size_bytes"] == bloated and care["size_after_bytes"] == rebuilt
    assert care["bloat_ratio"] >= 0.7  # three quarters of the vectors are gone
    # The layout estimate is what a fresh build weighs, within a page or two.
    assert abs(care["expected_bytes"] - rebuilt) <= 2 * 8192
    assert index_care(again)["action"] == "none" and index_care(again)["bloat_ratio"] < 0.1
    # Every index is in the row with its estimate, the primary key too (under the minimum).
    assert index_care(real, f"{TABLE}_pkey")["action"] == "none"
    assert {t["table"] for t in real["detail"]["tables"]} == {f"{env.schema}.{TABLE}"}
    assert env.receipts() == ["handled"] * 3

    first, second, third = results(env, 3)
    assert [i.action for i in first.indexes] == ["would_reindex"] and first.dry_run
    assert [i.index for i in second.done] == [INDEX] and second.indexes_checked == 2
    assert third.indexes == [] and third.tables_analyzed == 1
    # Slack hears of the two runs that did (or would do) something, not of the third.
    assert [r.worth_posting for r in (first, second, third)] == [True, True, False]


def test_a_rebuild_over_the_maximum_is_deferred_to_the_next_run_and_not_posted(
    make_env: Any,
) -> None:
    env: Env = make_env(max_reindexes=0)
    bloated = env.index_size()
    assert env.push() == 200
    [run] = env.runs()
    care = index_care(run)
    assert care["action"] == "deferred" and "the next run rebuilds it" in care["reason"]
    assert env.index_size() == bloated
    [result] = results(env, 1)
    assert [i.action for i in result.indexes] == ["deferred"] and not result.worth_posting


def hold_migration_lock(env: Env) -> Any:
    """A session holding migrate's advisory lock, as a running migration does."""
    conn = sync_engine(env.url).connect()
    key = lock_key(env.deps.settings.migrate.lock_name)
    conn.execute(text("SELECT set_config('application_name', 'sightops-migrate b-42', false)"))
    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
    return conn


def test_while_a_migration_holds_the_lock_maintain_waits_then_skips_without_an_error(
    make_env: Any,
) -> None:
    env: Env = make_env(lock_wait_s=0.5)
    bloated = env.index_size()
    migration = hold_migration_lock(env)
    try:
        started = time.monotonic()
        assert env.push() == 200, "acknowledged: the next scheduled run is the retry"
        waited = time.monotonic() - started
    finally:
        migration.close()

    assert waited >= 0.5
    assert env.index_size() == bloated, "nothing rebuilt during a migration"
    [run] = env.runs()
    assert run["status"] == "skipped"
    assert "a migration holds the lock" in run["detail"]["reason"]
    assert "sightops-migrate b-42" in run["detail"]["reason"], "names who holds it"
    assert run["detail"]["indexes"] == [] and run["detail"]["tables"] == []
    assert env.receipts() == ["skipped"]
    [result] = results(env, 1)
    assert result.status == "skipped" and not result.worth_posting


def test_maintain_waits_for_a_running_migration_and_runs_once_the_lock_is_released(
    make_env: Any,
) -> None:
    env: Env = make_env(lock_wait_s=10.0)
    bloated = env.index_size()
    migration = hold_migration_lock(env)

    def end_the_migration_once_maintain_waits() -> None:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not env.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sightops-maintain'"
        ):
            time.sleep(0.02)
        time.sleep(0.3)
        migration.close()

    ender = threading.Thread(target=end_the_migration_once_maintain_waits)
    ender.start()
    assert env.push() == 200
    ender.join()

    [run] = env.runs()
    assert run["status"] == "completed"
    assert run["detail"]["lock_wait_ms"] >= 300
    assert index_care(run)["action"] == "reindexed"
    assert env.index_size() < bloated / 2


def test_a_rebuild_an_old_snapshot_holds_up_fails_cleanly_and_drops_the_copy_it_left(
    make_env: Any,
) -> None:
    """REINDEX CONCURRENTLY waits for every older snapshot in the database: past
    lock_timeout it fails and leaves an invalid ``_ccnew`` copy, which maintain drops."""
    env: Env = make_env(lock_timeout_ms=300)
    bloated = env.index_size()
    reader = sync_engine(env.url).execution_options(isolation_level="REPEATABLE READ").connect()
    try:
        reader.execute(text("SELECT count(*) FROM pg_class")).scalar()  # a long report
        assert env.push() == 200
    finally:
        reader.close()

    [run] = env.runs()
    care = index_care(run)
    assert care["action"] == "failed"
    assert "55P03 canceling statement due to lock timeout" in care["reason"]
    assert f"dropped the invalid copy it left ({env.schema}.{INDEX}_ccnew)" in care["reason"]
    assert run["status"] == "attention", "a failed rebuild is news"
    assert env.index_size() == bloated
    assert env.sql("SELECT count(*) FROM pg_index WHERE NOT indisvalid") == 0
    [result] = results(env, 1)
    assert result.wrong and result.worth_posting


def test_a_rebuild_a_writer_holds_up_names_the_copy_it_could_not_drop_and_the_next_run_flags_it(
    make_env: Any,
) -> None:
    env: Env = make_env(lock_timeout_ms=300)
    writer = sync_engine(env.url).execution_options(isolation_level="READ COMMITTED").connect()
    try:
        writer.execute(text(f"INSERT INTO {env.schema}.{TABLE} (v) VALUES ('[1,2,3,4,5,6,7,8]')"))
        assert env.push() == 200  # the writer's transaction stays open throughout
    finally:
        writer.close()  # rolls back

    assert env.push() == 200

    blocked, after = env.runs()
    assert index_care(blocked)["action"] == "failed"
    [problem] = blocked["detail"]["problems"]
    assert f"{env.schema}.{INDEX}_ccnew" in problem and "DROP INDEX CONCURRENTLY" in problem
    leftover = index_care(after, f"{INDEX}_ccnew")
    assert leftover["action"] == "attention"
    assert "left by a failed REINDEX CONCURRENTLY" in leftover["reason"]
    assert index_care(after)["action"] == "reindexed", "the original is rebuilt all the same"
    assert after["status"] == "attention"


def test_a_failed_neo4j_index_is_reported_with_its_failure_message(make_env: Any) -> None:
    """Neo4j 5 fails a RANGE index whose population meets a value over its key size limit
    (8 kB): a real FAILED index, with Neo4j's own failure message."""
    env: Env = make_env(bloated=False)
    label, name = f"{env.ns.ns}Thing", f"{env.ns.ns.lower()}_too_large"
    online = f"{env.ns.ns.lower()}_fine"
    driver = env.deps.neo4j
    driver.execute_query(f"CREATE (:`{label}` {{big: $v, small: 1}})", v="x" * 40_000)
    driver.execute_query(f"CREATE INDEX {online} IF NOT EXISTS FOR (n:`{label}`) ON (n.small)")
    driver.execute_query(f"CREATE INDEX {name} IF NOT EXISTS FOR (n:`{label}`) ON (n.big)")
    driver.execute_query("CALL db.awaitIndex($name, 30)", name=online)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # population is asynchronous: wait for its verdict
        records, _, _ = driver.execute_query(
            "SHOW INDEXES YIELD name, state WHERE name = $name RETURN state", name=name
        )
        if records and records[0]["state"] != "POPULATING":
            break
        time.sleep(0.05)

    assert env.push() == 200

    [run] = env.runs()
    assert run["status"] == "attention"
    [failed] = run["detail"]["graph"]
    assert failed["name"] == name and failed["state"] == "FAILED"
    assert failed["problem"].startswith("FAILED: java.lang.IllegalArgumentException: Property")
    assert "too large to index" in failed["problem"]
    assert "\n" not in failed["problem"], "the first line only, not Neo4j's stack trace"
    assert run["detail"]["graph_checked"] == 2, "the ONLINE index is checked, not listed"
    [result] = results(env, 1)
    assert result.worth_posting and result.graph[0].problem == failed["problem"]
