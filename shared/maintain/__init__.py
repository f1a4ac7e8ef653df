"""The maintain function's library: routine database care (docs/maintain.md).

Under migrate's advisory lock (so it never overlaps a migration): ANALYZE Sight's
tables, estimate each index's bloat (statistics for B-trees, pgvector's page layout for
HNSW and IVFFlat), ``REINDEX INDEX CONCURRENTLY`` what is over the threshold, check that
every Neo4j index and constraint is ONLINE; one ``ops.actions`` row per run and
``sight.ops.maintain.completed``, which notify posts only when something was done or is
wrong.
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.events import MaintainRequested, MaintenanceResult
    from shared.maintain._decide import (
        ColumnStats,
        Estimate,
        GraphConstraint,
        GraphIndex,
        IndexDecision,
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
    from shared.maintain._handler import (
        completed_event,
        dedupe_key,
        handle,
        parse,
        publish,
        run_by_hand,
    )
    from shared.maintain._run import Report, run_maintenance
else:  # each name is imported on first use (docs/architecture.md, "Cold start")
    __getattr__ = lazy_attributes(
        __name__,
        {
            "shared.events": ("MaintainRequested", "MaintenanceResult"),
            "_decide": (
                "ColumnStats",
                "Estimate",
                "GraphConstraint",
                "GraphIndex",
                "IndexDecision",
                "IndexFacts",
                "Thresholds",
                "btree_expected_pages",
                "decide_graph",
                "decide_index",
                "estimate",
                "hnsw_expected_pages",
                "ivfflat_expected_pages",
                "plan",
                "populating_since",
                "select_graph",
            ),
            "_handler": (
                "completed_event",
                "dedupe_key",
                "handle",
                "parse",
                "publish",
                "run_by_hand",
            ),
            "_run": ("Report", "run_maintenance"),
        },
    )

__all__ = [
    "ColumnStats",
    "Estimate",
    "GraphConstraint",
    "GraphIndex",
    "IndexDecision",
    "IndexFacts",
    "MaintainRequested",
    "MaintenanceResult",
    "Report",
    "Thresholds",
    "btree_expected_pages",
    "completed_event",
    "decide_graph",
    "decide_index",
    "dedupe_key",
    "estimate",
    "handle",
    "hnsw_expected_pages",
    "ivfflat_expected_pages",
    "parse",
    "plan",
    "populating_since",
    "publish",
    "run_by_hand",
    "run_maintenance",
    "select_graph",
]
