"""One maintenance run: under migrate's advisory lock, ANALYZE, estimate, rebuild, check
Neo4j; the result as the event payload and the ``ops.actions`` detail (docs/maintain.md).

The lock is the one every migrate run takes (``Settings.migrate.lock_name``), held on the
run's own session like migrate holds it: maintenance never overlaps a migration, and a
REINDEX never races a migration's DDL. When a migration holds it past
``Settings.maintain.lock_wait_s``, the run is *skipped*, not retried: the next scheduled
run is the retry, so a long migration never turns into a storm of redeliveries.
"""

from __future__ import annotations

import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.db import is_transient as db_is_transient
from shared.errors import LockTimeoutError, SightOpsError, TransientError
from shared.events import GraphIndexCare, IndexAction, IndexCare, MaintenanceResult
from shared.maintain._decide import (
    IndexDecision,
    Thresholds,
    decide_graph,
    decide_index,
    plan,
    select_graph,
)
from shared.maintain._postgres import (
    Analyzed,
    analyze,
    describe,
    index_facts,
    maintenance_session,
    reindex,
    set_timeouts,
    tables,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shared.maintain._decide import History
    from shared.runtime import Deps
    from shared.settings import MaintainConfig

#: No REINDEX starts with less than this left of the run's time budget.
MIN_REBUILD_S = 5.0
#: At most this many indexes are named in the event (every one is in the ops.actions row).
EVENT_INDEXES_MAX = 100
#: Earlier runs read for how long a Neo4j index has been populating.
HISTORY_RUNS = 60

Status = Literal["completed", "skipped", "attention"]


@dataclass(frozen=True)
class Report:
    """A run: the event payload, the ``ops.actions`` status and detail (every index)."""

    result: MaintenanceResult
    status: Status
    detail: dict[str, Any]

    def summary(self) -> str:
        """One line for the delivery's log and the CLI."""
        r = self.result
        if r.status == "skipped":
            return f"skipped: {r.reason}"
        verb = "would rebuild" if r.dry_run else "rebuilt"
        parts = [
            f"analyzed {r.tables_analyzed} tables",
            f"{r.indexes_checked} indexes checked, {len(r.done)} {verb}",
        ]
        failed = [i for i in r.indexes if i.action in {"failed", "attention"}]
        if failed:
            parts.append(f"{len(failed)} need attention")
        if r.graph_checked or r.graph:
            bad = sum(1 for g in r.graph if g.problem)
            parts.append(f"Neo4j: {r.graph_checked} checked, {bad} not ONLINE")
        if r.problems:
            parts.append(f"{len(r.problems)} problems")
        return "; ".join(parts)


def run_maintenance(deps: Deps, *, dry_run: bool = False) -> Report:
    """Run the routine database care once (the function and ``sightops maintain run``)."""
    return _Run(deps, dry_run).execute()


def _care(
    decision: IndexDecision, action: IndexAction, reason: str | None = None, **extra: Any
) -> IndexCare:
    facts, bloat = decision.facts, decision.bloat
    return IndexCare(
        schema_name=facts.schema,
        table=facts.table,
        index=facts.name,
        method=facts.method,
        size_bytes=facts.size_bytes,
        expected_bytes=decision.estimate.expected_bytes,
        bloat_ratio=None if bloat is None else round(bloat, 3),
        estimate=decision.estimate.method,
        action=action,
        reason=reason or decision.reason,
        **extra,
    )


@dataclass
class _Run:
    deps: Deps
    dry_run: bool
    run_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    started_at: datetime = field(init=False)
    lock_wait_ms: float = 0.0
    analyzed: list[Analyzed] = field(default_factory=list)
    cares: list[IndexCare] = field(default_factory=list)
    graph: list[GraphIndexCare] = field(default_factory=list)
    graph_checked: int = 0
    problems: list[str] = field(default_factory=list)
    cfg: MaintainConfig = field(init=False)

    def __post_init__(self) -> None:
        self.started_at = self.deps.clock()
        self.cfg = self.deps.settings.maintain

    def execute(self) -> Report:
        settings = self.deps.settings
        try:
            with maintenance_session(settings) as conn, ExitStack() as stack:
                from shared.migrate import advisory_lock

                try:
                    self.lock_wait_ms = stack.enter_context(
                        advisory_lock(
                            conn,
                            settings.migrate.lock_name,
                            wait_s=self.cfg.lock_wait_s,
                            poll_s=self.cfg.lock_poll_s,
                        )
                    )
                except LockTimeoutError as exc:
                    self.lock_wait_ms = self.cfg.lock_wait_s * 1000
                    return self.report("skipped", f"a migration holds the lock ({exc})")
                self.deps.metrics.timing("lock_wait_ms", self.lock_wait_ms, consumer="maintain")
                self.locked(conn)
        except SightOpsError:
            raise
        except Exception as exc:
            if db_is_transient(exc):
                raise TransientError(f"database unavailable: {describe(exc)}") from exc
            raise
        return self.report("completed")

    # --- the work, under the lock ------------------------------------------------------

    def locked(self, conn: Connection) -> None:
        deadline = time.monotonic() + self.cfg.budget_s
        self.analyze(conn, deadline)
        set_timeouts(conn, self.cfg.inspect_timeout_ms, self.cfg)
        thresholds = Thresholds(self.cfg.reindex_bloat_ratio, self.cfg.min_index_bytes)
        decisions = [decide_index(f, thresholds) for f in index_facts(conn, self.cfg.schemas)]
        rebuilt = {  # biggest reclaim first: what the budget leaves out is the least
            id(d): self.rebuild(conn, d, deadline) for d in plan(decisions, self.cfg.max_reindexes)
        }
        for decision in decisions:  # the record keeps the catalog's order
            care = rebuilt.get(id(decision))
            if care is None and decision.verdict == "reindex":
                care = _care(
                    decision,
                    "deferred",
                    f"{decision.reason}; over max_reindexes ({self.cfg.max_reindexes})"
                    " this run, the next run rebuilds it",
                )
            elif care is None:
                care = _care(decision, "attention" if decision.verdict == "attention" else "none")
            self.cares.append(care)
        if self.cfg.graph_enabled:
            self.check_graph(conn)

    def analyze(self, conn: Connection, deadline: float) -> None:
        found = tables(conn, self.cfg.schemas)
        for index, (schema, table) in enumerate(found):
            left_ms = (deadline - time.monotonic()) * 1000
            if left_ms <= 0:
                self.problems.append(
                    f"ANALYZE stopped: the time budget is spent ({len(found) - index} tables left)"
                )
                return
            done = analyze(conn, schema, table, min(self.cfg.analyze_timeout_ms, left_ms), self.cfg)
            self.analyzed.append(done)
            if done.error:
                self.problems.append(f"ANALYZE {done.table} failed: {done.error}")

    def rebuild(self, conn: Connection, decision: IndexDecision, deadline: float) -> IndexCare:
        if self.dry_run:
            return _care(decision, "would_reindex", f"{decision.reason} (dry run)")
        left = deadline - time.monotonic()
        if left < MIN_REBUILD_S:
            return _care(decision, "deferred", f"{decision.reason}; the run's time budget is spent")
        rebuilt = reindex(
            conn, decision.facts, min(self.cfg.reindex_timeout_ms, left * 1000), self.cfg
        )
        if rebuilt.ok:
            self.deps.metrics.incr("indexes_rebuilt", 1, method=decision.facts.method)
            return _care(
                decision,
                "reindexed",
                size_after_bytes=rebuilt.size_after_bytes,
                duration_ms=rebuilt.duration_ms,
            )
        reason = f"REINDEX INDEX CONCURRENTLY failed: {rebuilt.error}"
        if rebuilt.dropped:
            reason += f"; dropped the invalid copy it left ({', '.join(rebuilt.dropped)})"
        if rebuilt.left:
            left_behind = ", ".join(rebuilt.left)
            reason += f"; could not drop the invalid copy it left: {left_behind}"
            self.problems.append(
                f"invalid index left by a failed rebuild of {decision.facts.qualified}: "
                f"{left_behind}; drop it with DROP INDEX CONCURRENTLY"
                " (docs/runbooks/maintenance.md)"
            )
        return _care(decision, "failed", reason, duration_ms=rebuilt.duration_ms)

    def check_graph(self, conn: Connection) -> None:
        from shared.maintain._graph import read_graph

        try:
            indexes, constraints = read_graph(self.deps.neo4j)
        except Exception as exc:  # an outage or a refusal: reported, never retried
            from shared.log import REDACTOR

            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            message = REDACTOR.redact(first)
            self.problems.append(
                f"Neo4j not checked: {type(exc).__name__}" + (f": {message}" if message else "")
            )
            return
        indexes, constraints = select_graph(indexes, constraints, self.cfg.graph_name_pattern)
        self.graph_checked = len(indexes)
        self.graph = decide_graph(
            indexes,
            constraints,
            self.deps.clock(),
            self.history(conn),
            timedelta(seconds=self.cfg.graph_populating_max_s),
        )

    def history(self, conn: Connection) -> History:
        """Earlier runs, newest first, with the Neo4j indexes each saw POPULATING."""
        from sqlalchemy import text

        rows = conn.execute(
            text(
                "SELECT started_at, detail->'graph' AS graph FROM ops.actions"
                " WHERE kind = 'maintenance' AND status <> 'skipped'"
                " ORDER BY started_at DESC LIMIT :n"
            ),
            {"n": HISTORY_RUNS},
        ).all()
        return [
            (
                row.started_at,
                frozenset(
                    str(g.get("name"))
                    for g in (row.graph if isinstance(row.graph, list) else [])
                    if isinstance(g, dict) and g.get("state") == "POPULATING"
                ),
            )
            for row in rows
        ]

    # --- the result ----------------------------------------------------------------------

    def report(self, status: Literal["completed", "skipped"], reason: str | None = None) -> Report:
        finished = self.deps.clock()
        acted = [c for c in self.cares if c.action != "none"]
        result = MaintenanceResult(
            run_id=self.run_id,
            status=status,
            reason=reason,
            dry_run=self.dry_run,
            tables_analyzed=sum(1 for a in self.analyzed if a.error is None),
            indexes_checked=len(self.cares),
            indexes=acted[:EVENT_INDEXES_MAX],
            graph_checked=self.graph_checked,
            graph=self.graph,
            problems=self.problems,
            lock_wait_ms=round(self.lock_wait_ms, 1),
            started_at=self.started_at,
            finished_at=finished,
        )
        detail = result.model_dump(mode="json")
        detail["indexes"] = [c.model_dump(mode="json") for c in self.cares]
        detail["tables"] = [
            {"table": a.table, "duration_ms": a.duration_ms, "error": a.error}
            for a in self.analyzed
        ]
        kind: Status = status
        if status == "completed" and result.wrong:
            kind = "attention"
        return Report(result, kind, detail)
