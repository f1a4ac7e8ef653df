"""Neo4j schema migrations: applied once, recorded, refused when edited, under a lock.

Neo4j Community has one database shared with every other suite: each test works under its
own namespace (labels, index and constraint names) and removes it afterwards.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.errors import LockTimeoutError, TransientError
from shared.graph import create_driver
from shared.migrate import GraphMigrationError, GraphMigrator, load_files, split_statements
from shared.settings import Settings
from tests.helpers import ROOT
from tests.shared.migrate.helpers import GraphNamespace, unreachable_neo4j


@pytest.fixture
def driver(settings: Settings) -> Iterator[Any]:
    d = create_driver(settings)
    yield d
    d.close()


def migrator(driver: Any, ns: GraphNamespace, directory: Path, **kwargs: Any) -> GraphMigrator:
    return GraphMigrator(
        driver, directory, record_label=ns.record_label, lock_label=ns.lock_label, **kwargs
    )


def records(driver: Any, ns: GraphNamespace) -> list[dict[str, Any]]:
    result, _, _ = driver.execute_query(
        f"MATCH (m:`{ns.record_label}`) RETURN m.version AS version, m.name AS name,"
        " m.checksum AS checksum, m.applied_at IS NOT NULL AS stamped ORDER BY m.version"
    )
    return [r.data() for r in result]


def test_files_are_applied_in_order_and_each_recorded_with_its_checksum(
    driver: Any, graph_ns: GraphNamespace, settings: Settings, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    run = migrator(driver, graph_ns, directory).run("owner-1")
    assert (run.from_version, run.to_version, run.applied) == (None, 2, [1, 2])
    files = load_files(directory)
    assert records(driver, graph_ns) == [
        {"version": f.version, "name": f.name, "checksum": f.checksum, "stamped": True}
        for f in files
    ]
    assert graph_ns.count(settings, "Applied") == 1


def test_a_second_run_applies_nothing(
    driver: Any, graph_ns: GraphNamespace, settings: Settings, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    migrator(driver, graph_ns, directory).run("owner-1")
    again = migrator(driver, graph_ns, directory).run("owner-2")
    assert (again.from_version, again.to_version, again.applied) == (2, 2, [])
    assert graph_ns.count(settings, "Applied") == 1


def test_a_file_edited_after_it_was_applied_is_refused_and_nothing_runs(
    driver: Any, graph_ns: GraphNamespace, settings: Settings, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path, ["V0001__thing_key_index.cypher"])
    migrator(driver, graph_ns, directory).run("owner-1")
    edited = directory / "V0001__thing_key_index.cypher"
    edited.write_text(edited.read_text() + "// a harmless-looking edit\n")
    graph_ns.install(tmp_path, ["V0002__thing_id_and_marker.cypher"])
    with pytest.raises(GraphMigrationError) as refused:
        migrator(driver, graph_ns, directory).run("owner-2")
    message = str(refused.value)
    assert "V0001__thing_key_index.cypher was edited after it was applied" in message
    assert "put the change in a new migration" in message
    assert graph_ns.count(settings, "Applied") == 0  # V0002 did not run
    assert [r["version"] for r in records(driver, graph_ns)] == [1]


def test_an_applied_version_whose_file_is_gone_is_refused(
    driver: Any, graph_ns: GraphNamespace, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    migrator(driver, graph_ns, directory).run("owner-1")
    (directory / "V0002__thing_id_and_marker.cypher").unlink()
    with pytest.raises(GraphMigrationError, match=r"V0002 .* file is missing"):
        migrator(driver, graph_ns, directory).run("owner-2")


def test_a_failing_statement_names_the_file_and_leaves_it_unrecorded(
    driver: Any, graph_ns: GraphNamespace, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path, ["V0001__thing_key_index.cypher"])
    (directory / "V0002__broken.cypher").write_text("CREATE INDEX FOR;\n")
    with pytest.raises(GraphMigrationError, match=r"V0002__broken\.cypher statement 1 failed"):
        migrator(driver, graph_ns, directory).run("owner-1")
    assert [r["version"] for r in records(driver, graph_ns)] == [1]


def test_concurrent_runners_apply_each_file_exactly_once(
    driver: Any, graph_ns: GraphNamespace, settings: Settings, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    errors: list[BaseException] = []
    runs: list[Any] = []

    def one(i: int) -> None:
        try:
            runs.append(migrator(driver, graph_ns, directory, lock_poll_s=0.05).run(f"o-{i}"))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(len(r.applied) for r in runs) == [0, 0, 0, 0, 2]
    assert graph_ns.count(settings, "Applied") == 1
    assert graph_ns.count(settings, "Lock") == 1


def test_a_lock_left_by_a_crashed_runner_is_taken_over_after_its_expiry(
    driver: Any, graph_ns: GraphNamespace, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    m = migrator(driver, graph_ns, directory)
    m.ensure_bookkeeping()
    driver.execute_query(
        f"CREATE (:`{graph_ns.lock_label}` {{name: 'graph', owner: 'crashed-host:42',"
        " expires_at: datetime() - duration({seconds: 1})})"
    )
    run = m.run("owner-1")
    assert run.took_over_from == "crashed-host:42" and run.applied == [1, 2]
    result, _, _ = driver.execute_query(
        f"MATCH (l:`{graph_ns.lock_label}`) RETURN l.owner AS owner"
    )
    assert result[0]["owner"] is None  # released after the run


def test_a_live_lock_makes_a_runner_wait_then_give_up_without_applying(
    driver: Any, graph_ns: GraphNamespace, tmp_path: Path
) -> None:
    directory = graph_ns.install(tmp_path)
    holder = migrator(driver, graph_ns, directory)
    holder.ensure_bookkeeping()
    with holder.lock("live-runner"), pytest.raises(LockTimeoutError, match="held by live-runner"):
        migrator(driver, graph_ns, directory, lock_wait_s=0.5).run("owner-2")
    assert records(driver, graph_ns) == []


def test_neo4j_unreachable_is_transient(graph_ns: GraphNamespace, tmp_path: Path) -> None:
    down = unreachable_neo4j()
    try:
        with pytest.raises(TransientError, match="neo4j unavailable"):
            migrator(down, graph_ns, graph_ns.install(tmp_path)).run("owner-1")
    finally:
        down.close()


def test_the_projects_graph_migrations_apply_cleanly(driver: Any, graph_ns: GraphNamespace) -> None:
    """Idempotent statements on the shared database: harmless to re-apply, never removed."""
    directory = ROOT / "graph" / "migrations"
    run = migrator(driver, graph_ns, directory).run("owner-1")
    assert run.applied == [f.version for f in load_files(directory)]


def test_statements_split_at_line_end_semicolons_and_comment_lines_are_dropped() -> None:
    text = (
        "// header; with a semicolon\nCREATE INDEX a\nFOR (n:X) ON (n.y);\n\nMATCH (n) RETURN n;\n"
    )
    assert split_statements(text) == ["CREATE INDEX a\nFOR (n:X) ON (n.y)", "MATCH (n) RETURN n"]


def test_malformed_or_duplicate_file_names_are_rejected(tmp_path: Path) -> None:
    (tmp_path / "constraints.cypher").write_text("RETURN 1;\n")
    with pytest.raises(GraphMigrationError, match="V<version>__<slug>"):
        load_files(tmp_path)
    (tmp_path / "constraints.cypher").unlink()
    (tmp_path / "V0001__a.cypher").write_text("RETURN 1;\n")
    (tmp_path / "V001__b.cypher").write_text("RETURN 1;\n")
    with pytest.raises(GraphMigrationError, match="share version 1"):
        load_files(tmp_path)
