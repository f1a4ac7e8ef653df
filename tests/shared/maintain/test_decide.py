"""The maintenance decisions, row by row (shared/maintain/_decide.py): no I/O.

The size estimates are checked against fresh builds measured on the local PostgreSQL 16
with pgvector 0.6.2 (docs/maintain.md, "How bloat is estimated")."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.events import GraphIndexCare, IndexCare, MaintenanceResult
from shared.maintain import (
    ColumnStats,
    GraphConstraint,
    GraphIndex,
    IndexFacts,
    Thresholds,
    btree_expected_pages,
    decide_graph,
    decide_index,
    estimate,
    hnsw_expected_pages,
    ivfflat_expected_pages,
    plan,
    populating_since,
    select_graph,
)

MB = 1024 * 1024
THRESHOLDS = Thresholds(reindex_bloat_ratio=0.5, min_index_bytes=8 * MB)
NOW = datetime(2026, 12, 5, 3, 30, tzinfo=UTC)
BIGINT = ColumnStats(avg_width=8, null_frac=0.0, type_name="int8")
VECTOR_384 = ColumnStats(avg_width=1544, type_name="vector", typmod=384)


# --- estimates: measured fresh builds (pages), each within a few percent ---------------


@pytest.mark.parametrize(
    ("reltuples", "columns", "measured"),
    [
        (50_000, [BIGINT], 139),  # bigserial primary key
        (50_000, [ColumnStats(16, 0.0, "uuid")], 194),
        (50_000, [ColumnStats(8, 0.0, "timestamptz")], 139),
        (50_000, [ColumnStats(4, 0.0, "int4"), ColumnStats(8, 0.0, "timestamptz")], 194),
        (50_000, [ColumnStats(48, 0.0, "text")], 444),
    ],
)
def test_the_btree_estimate_matches_a_fresh_build(
    reltuples: float, columns: list[ColumnStats], measured: int
) -> None:
    assert btree_expected_pages(reltuples, columns) == pytest.approx(measured, rel=0.1)


def test_the_btree_estimate_never_invents_bloat_for_nullable_or_duplicate_keys() -> None:
    """ioguix's estimate ignores deduplication and the per-tuple null bitmap: for such
    indexes it expects more than a build gives, so it can only under-report bloat."""
    nullable = btree_expected_pages(50_000, [ColumnStats(4, 0.3, "int4")])
    assert nullable >= 111  # measured
    duplicates = btree_expected_pages(50_000, [ColumnStats(4, 0.0, "int4")])
    assert duplicates >= 46  # measured: 1000 distinct keys, deduplicated


@pytest.mark.parametrize(
    ("elements", "dimensions", "m", "measured"),
    [(2000, 3, 16, 79), (3000, 16, 16, 137), (2000, 128, 16, 205), (1500, 384, 16, 376),
     (1500, 384, 8, 376), (5000, 32, 4, 176)],
)  # fmt: skip
def test_the_hnsw_layout_estimate_matches_a_fresh_build(
    elements: int, dimensions: int, m: int, measured: int
) -> None:
    assert hnsw_expected_pages(elements, dimensions, 4, m) == pytest.approx(measured, rel=0.03)


@pytest.mark.parametrize(
    ("entries", "dimensions", "measured"),
    [(2000, 3, 22), (3000, 16, 42), (2000, 128, 145), (1500, 384, 314), (5000, 32, 103)],
)
def test_the_ivfflat_estimate_is_an_upper_bound_by_at_most_one_page_a_list(
    entries: int, dimensions: int, measured: int
) -> None:
    expected = ivfflat_expected_pages(entries, dimensions, 4, lists=20)
    assert measured <= expected <= measured + 20


def facts(**changes: Any) -> IndexFacts:
    base: dict[str, Any] = {
        "schema": "public",
        "table": "personas",
        "name": "ix_personas_embedding",
        "method": "hnsw",
        "size_bytes": 60 * MB,  # a fresh build: 19.5 MB
        "reltuples": 10_000,
        "columns": (VECTOR_384,),
        "options": {"m": "16"},
    }
    base.update(changes)
    return IndexFacts(**base)


def test_vector_entries_leave_out_null_vectors_and_halfvec_counts_two_bytes() -> None:
    full = estimate(facts()).expected_bytes
    half_null = estimate(facts(columns=(ColumnStats(1544, 0.5, "vector", 384),))).expected_bytes
    halfvec = estimate(facts(columns=(ColumnStats(776, 0.0, "halfvec", 384),))).expected_bytes
    assert full and half_null and halfvec
    assert half_null == pytest.approx(full / 2, rel=0.01)
    assert halfvec < full * 0.6


@pytest.mark.parametrize(
    ("changes", "note"),
    [
        ({"reltuples": -1}, "never analyzed"),
        ({"method": "gin"}, "no bloat estimate for gin"),
        ({"columns": (ColumnStats(None, 0.0, "vector", 384),), "method": "btree"}, "no statistics"),
        ({"columns": (ColumnStats(64, 0.0, "name"),), "method": "btree"}, "name type"),
        ({"columns": (ColumnStats(10, 0.0, "sparsevec", 1000),)}, "no layout estimate"),
        ({"columns": (ColumnStats(1544, 0.0, "vector", -1),)}, "no layout estimate"),
    ],
)
def test_what_cannot_be_estimated_is_left_alone_and_says_why(
    changes: dict[str, Any], note: str
) -> None:
    decision = decide_index(facts(**changes), THRESHOLDS)
    assert decision.verdict == "none" and decision.bloat is None
    assert note in decision.reason


def test_an_emptied_table_needs_only_the_metapage() -> None:
    empty = facts(method="btree", reltuples=0, columns=(ColumnStats(None),), size_bytes=9 * MB)
    decision = decide_index(empty, THRESHOLDS)
    assert decision.estimate.expected_bytes == 8192
    assert decision.verdict == "reindex"


# --- the decision table, row by row ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "verdict", "says"),
    [
        ({"valid": False, "name": "ix_personas_embedding_ccnew"}, "attention", "failed REINDEX"),
        ({"valid": False, "name": "ix_personas_embedding_ccnew2"}, "attention", "failed REINDEX"),
        ({"valid": False, "name": "ix_personas_embedding_ccold"}, "attention", "could not drop"),
        ({"valid": False}, "attention", "CREATE INDEX CONCURRENTLY"),
        ({"size_bytes": 4 * MB}, "none", "under the 8.0 MB worth rebuilding"),
        ({"size_bytes": 20 * MB}, "none", "under 50 %"),
        ({"exclusion": True}, "attention", "exclusion constraint"),
        ({}, "reindex", "60.0 MB, a fresh build about 19.5 MB: bloat 67 % ≥ 50 %"),
    ],
)
def test_each_row_of_the_decision_table(changes: dict[str, Any], verdict: str, says: str) -> None:
    decision = decide_index(facts(**changes), THRESHOLDS)
    assert decision.verdict == verdict
    assert says in decision.reason


def test_the_bloat_ratio_is_the_share_a_rebuild_would_reclaim() -> None:
    decision = decide_index(facts(), THRESHOLDS)
    expected = decision.estimate.expected_bytes
    assert expected is not None
    assert decision.bloat == pytest.approx(1 - expected / (60 * MB))
    assert decision.reclaim_bytes == 60 * MB - expected
    tiny = decide_index(facts(size_bytes=expected // 2), THRESHOLDS)
    assert tiny.bloat == 0.0, "smaller than a fresh build is no bloat, never negative"


def test_rebuilds_go_biggest_reclaim_first_up_to_the_maximum() -> None:
    decisions = [
        decide_index(facts(name=name, size_bytes=size * MB), THRESHOLDS)
        for name, size in (("a", 20), ("b", 90), ("c", 40), ("d", 4))
    ]
    assert [d.facts.name for d in plan(decisions, 2)] == ["b", "c"]
    assert [d.facts.name for d in plan(decisions, 5)] == ["b", "c"], "only the bloated ones"
    assert plan(decisions, 0) == []


# --- Neo4j -----------------------------------------------------------------------------

POPULATING_MAX = timedelta(hours=1)


def graph(
    *indexes: GraphIndex, constraints: tuple[GraphConstraint, ...] = (), history: Any = ()
) -> list[GraphIndexCare]:
    return decide_graph(indexes, constraints, NOW, history, POPULATING_MAX)


def test_online_indexes_are_fine_and_not_listed() -> None:
    assert graph(GraphIndex("persona_project_id", "RANGE", "ONLINE", 100.0)) == []


def test_a_failed_index_is_a_problem_with_the_first_line_of_its_failure_message() -> None:
    trace = "java.lang.IllegalArgumentException: Property value is too large\n\tat org.neo4j"
    [found] = graph(GraphIndex("t_big", "RANGE", "FAILED", 0.0, failure_message=trace))
    assert (
        found.problem == "FAILED: java.lang.IllegalArgumentException: Property value is too large"
    )
    long = graph(GraphIndex("t", "RANGE", "FAILED", failure_message="x" * 1000))[0].problem
    assert long is not None and len(long) < 320 and long.endswith("…")


def test_a_constraint_is_judged_by_the_index_it_owns() -> None:
    failed = GraphIndex("persona_id", "RANGE", "FAILED", owning_constraint="persona_id")
    [found] = graph(
        failed, constraints=(GraphConstraint("persona_id", "UNIQUENESS", "persona_id"),)
    )
    assert found.kind == "constraint" and found.problem and found.problem.startswith("FAILED")
    [missing] = graph(constraints=(GraphConstraint("topic_name", "UNIQUENESS", "topic_name"),))
    assert missing.state == "MISSING" and missing.problem == "its index topic_name is missing"
    assert graph(constraints=(GraphConstraint("exists", "NODE_PROPERTY_EXISTENCE", None),)) == []


def test_populating_is_news_only_once_it_has_lasted_too_long() -> None:
    index = GraphIndex("t_text", "TEXT", "POPULATING", 37.0)
    [fresh] = graph(index)
    assert fresh.state == "POPULATING" and fresh.problem is None
    history = [(NOW - timedelta(minutes=30), frozenset({"t_text"}))]
    assert graph(index, history=history)[0].problem is None
    history = [
        (NOW - timedelta(days=1), frozenset({"t_text"})),
        (NOW - timedelta(days=2), frozenset({"t_text", "other"})),
        (NOW - timedelta(days=3), frozenset()),  # ONLINE then: the series starts after it
        (NOW - timedelta(days=4), frozenset({"t_text"})),
    ]
    [stuck] = graph(index, history=history)
    assert stuck.problem == "POPULATING for 2 days (at least since 2026-12-03 03:30 UTC), 37 % done"


def test_populating_since_walks_back_the_unbroken_series_of_runs() -> None:
    history = [(NOW - timedelta(hours=h), frozenset({"i"} if h < 3 else set())) for h in (1, 2, 3)]
    assert populating_since("i", NOW, history) == NOW - timedelta(hours=2)
    assert populating_since("j", NOW, history) == NOW


def test_an_unknown_state_is_a_problem() -> None:
    [odd] = graph(GraphIndex("t", "RANGE", "NONEXISTENT"))
    assert odd.problem == "state NONEXISTENT"


def test_the_name_pattern_selects_indexes_by_their_own_or_their_constraints_name() -> None:
    indexes = [
        GraphIndex("tab_big", "RANGE", "FAILED"),
        GraphIndex("index_12", "RANGE", "ONLINE", owning_constraint="tab_unique"),
        GraphIndex("persona_id", "RANGE", "ONLINE"),
    ]
    constraints = [GraphConstraint("tab_unique", "UNIQUENESS", "index_12")]
    kept, kept_constraints = select_graph(indexes, constraints, "^tab")
    assert [i.name for i in kept] == ["tab_big", "index_12"]
    assert kept_constraints == constraints
    assert select_graph(indexes, constraints, None) == (indexes, constraints)


# --- when notify posts a run -------------------------------------------------------------


def result(**changes: Any) -> MaintenanceResult:
    base: dict[str, Any] = {
        "run_id": "r",
        "status": "completed",
        "started_at": NOW,
        "finished_at": NOW,
    }
    base.update(changes)
    return MaintenanceResult(**base)


def care(action: str) -> IndexCare:
    return IndexCare(
        schema_name="public", table="t", index="i", method="btree", size_bytes=1, action=action
    )


@pytest.mark.parametrize(
    ("changes", "posted"),
    [
        ({}, False),
        ({"status": "skipped", "reason": "a migration holds the lock"}, False),
        ({"indexes": [care("deferred")]}, False),
        ({"indexes": [care("reindexed")]}, True),
        ({"indexes": [care("would_reindex")], "dry_run": True}, True),
        ({"indexes": [care("failed")]}, True),
        ({"indexes": [care("attention")]}, True),
        ({"problems": ["ANALYZE public.t failed: 55P03"]}, True),
        ({"graph": [GraphIndexCare(name="g", type="TEXT", state="POPULATING")]}, False),
        ({"graph": [GraphIndexCare(name="g", type="RANGE", state="FAILED", problem="x")]}, True),
    ],
)
def test_slack_hears_of_a_run_only_when_something_was_done_or_is_wrong(
    changes: dict[str, Any], posted: bool
) -> None:
    assert result(**changes).worth_posting is posted
