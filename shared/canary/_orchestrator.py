"""The canary orchestrator: lock the service, re-read, read Cloud Run and Monitoring,
decide, move the split, record, publish (docs/canary.md, "The function").

The canary function (``shared.canary._function``) and ``sightops canary`` (``_cli``) both
go through :class:`Canaries`, so they apply the same rules:

- the per-service lock is rollback's own (``shared.rollback._store.lock_service``): the
  canary and rollback never move one service's traffic at once;
- the row is re-read after the lock is taken, so a doubled tick or request decides
  nothing twice (a second analysis within half an alignment period is ``skipped``);
- traffic that is not the split the canary set last (a human, rollback, a deploy) stops
  the canary and touches nothing; so does a 409 or a changed service at the write;
- the known-good ledger: a promoted canary is marked ``good``, a rolled-back one ``bad``;
- a breaking migration applied since the canary started freezes a rollback (traffic
  stays, a human decides), as it freezes rollback's (docs/rollback.md);
- dry run decides, records and publishes, and never moves traffic.

Every decision is one ``ops.actions`` row (kind ``canary``), one span in the release's
trace with the evidence as attributes, and one ``sight.ops.canary.*`` event. Decisions are
committed in transactions of their own (rollback's :class:`~shared.rollback._store.
Journal`) right after the traffic write, so a failed COMMIT of the delivery never loses
the record of a move; their events go out through the row's ``outbox``: one that could
not be published is published by the next tick.
"""

from __future__ import annotations

import base64
import functools
import logging
import math
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.engine import Connection

from shared.canary import _store as store
from shared.canary._analysis import AnalysisConfig, analyse
from shared.canary._model import Evidence, Histogram, Interval
from shared.canary._plan import Action, StepPlan, next_step
from shared.errors import PermanentError, TransientError
from shared.events import (
    CanaryAction,
    CanaryRequest,
    CanaryResult,
    CanaryStep,
    CanaryTick,
    EventType,
    OpsEvent,
    OpsPayload,
    ReleaseResult,
)
from shared.rollback._cloudrun import (
    CloudRun,
    CloudRunError,
    OperationFailed,
    ServiceNotFound,
    TrafficChanged,
    TrafficConflict,
    UpdateOutcomeUnknown,
    cloud_run_for,
)
from shared.rollback._model import ServiceState, describe_split
from shared.runtime import Deps, Outcome
from shared.trace import current as current_trace
from shared.trace import outgoing_attributes

if TYPE_CHECKING:
    from shared.canary._monitoring import MonitoringReader

logger = logging.getLogger("sightops.canary")

#: The event of each action (a freeze is a ``held`` event that says why).
EVENT_TYPES: Mapping[CanaryAction, EventType] = {
    "started": EventType.CANARY_STARTED,
    "step": EventType.CANARY_STEPPED,
    "promote": EventType.CANARY_PROMOTED,
    "rollback": EventType.CANARY_ROLLED_BACK,
    "hold": EventType.CANARY_HELD,
    "frozen": EventType.CANARY_HELD,
    "stop": EventType.CANARY_STOPPED,
}
#: The row's status after each action.
STATUSES: Mapping[CanaryAction, store.CanaryStatus] = {
    "started": "running",
    "step": "running",
    "promote": "promoted",
    "rollback": "rolled_back",
    "hold": "held",
    "frozen": "frozen",
    "stop": "stopped",
}
_MAX_REASON = 1000
#: Namespace of the ids of the ticks a canary sends itself (one per release and period).
_TICKS = uuid.UUID("6f0b7a52-3c1e-4d8a-9f21-5b7c0d9e4a13")

Kind = CanaryAction | Literal["wait", "skip"]


class CanaryError(PermanentError):
    """A manual command that cannot apply (no active canary for the service, ...)."""


@dataclass(frozen=True)
class Decision:
    """What one canary came to: an action (``wait`` and ``skip`` record no action)."""

    service: str
    release_id: str | None
    kind: Kind
    reason: str
    percent_before: int = 0
    percent_after: int = 0
    dry_run: bool = False
    event_id: str | None = None
    published: bool = True

    def line(self) -> str:
        share = (
            f" {self.percent_before}% -> {self.percent_after}%"
            if self.kind not in ("wait", "skip")
            else ""
        )
        return f"{self.service} {self.kind}{share}: {self.reason}"


@dataclass
class Report:
    """The decisions of one request, tick or command, for the log line and the CLI."""

    decisions: list[Decision] = field(default_factory=list)

    def outcome(self) -> Outcome:
        acted = [d for d in self.decisions if d.kind != "skip"]
        fields: dict[str, Any] = {
            "canaries": [
                {
                    "service": d.service,
                    "release_id": d.release_id,
                    "action": d.kind,
                    "percent": d.percent_after,
                }
                for d in self.decisions
            ]
        }
        text = "; ".join(d.line() for d in self.decisions) or "no running canary"
        if not acted:
            return Outcome.skipped(text, **fields)
        return Outcome.handled(text, **fields)


class Canaries:
    """Canary decisions, under the service lock held on ``conn`` (the delivery's or the
    CLI's transaction); the decisions themselves commit on journal transactions.

    ``actor`` is recorded with every action (``manual:<user>`` from the CLI, which also
    makes the events ``manual``); ``trigger_event_id`` is the delivery's event id.
    """

    def __init__(
        self,
        deps: Deps,
        conn: Connection,
        *,
        actor: str = "automation",
        source: str = "canary",
        trigger_event_id: str | None = None,
    ) -> None:
        self.deps = deps
        self.conn = conn
        self.actor = actor
        self.source = source
        self.trigger_event_id = trigger_event_id
        self.manual = actor != "automation"
        self.config = deps.settings.canary
        self.journal = store.Journal(deps.settings)

    # ------------------------------------------------------------------ entry points

    def start(self, request: CanaryRequest) -> Report:
        """``sight.ops.canary.requested``: the first step (5 % by default), or ``stop``
        when the canary cannot start; a request already seen is ``skipped``."""
        try:
            decision = self._start(request)
            self._next_tick(decision)
            return Report([decision])
        finally:
            self.journal.close()

    def tick(self, tick: CanaryTick) -> Report:
        """``sight.ops.canary.tick``: analyse every running canary (of one service, when
        it says), each under its service's lock. One canary's unavailable dependency
        does not hold up the others: it is analysed again at the next tick."""
        report = Report()
        try:
            if tick.service is None:
                self._flush_all()
            for row in store.running(self.conn, tick.service, tick.region):
                decision = self._tick_one(row)
                self._next_tick(decision)
                report.decisions.append(decision)
        finally:
            self.journal.close()
        return report

    def promote_now(self, service: str) -> Report:
        """``sightops canary promote``: 100 % to the canary now, whatever the evidence."""
        try:
            row, state = self._manual(service)
            return Report(
                [self._move(row, state, "promote", 100, f"promoted by {self.actor}", None)]
            )
        finally:
            self.journal.close()

    def rollback_now(self, service: str, *, force: bool = False) -> Report:
        """``sightops canary rollback``: 100 % to the stable revision now; frozen instead
        when a breaking migration was applied since the canary started, unless ``force``."""
        try:
            row, state = self._manual(service)
            reason = f"rolled back by {self.actor}"
            if not force:
                frozen = self._frozen(row, reason, None)
                if frozen is not None:
                    return Report([frozen])
            return Report([self._move(row, state, "rollback", 0, reason, None)])
        finally:
            self.journal.close()

    def status(self, service: str | None = None) -> list[store.CanaryRow]:
        """The newest canaries (of ``service``), active ones first."""
        return store.latest(self.conn, service)

    # ------------------------------------------------------------------ start

    def _start(self, request: CanaryRequest) -> Decision:
        service = request.service
        store.lock_service(self.conn, service, self.config.lock_wait_s)
        existing = store.load(self.conn, request.release_id)
        if existing is not None:
            existing = self._flush(existing)
            if existing.revision == request.revision or existing.active:
                return self._skip(
                    existing,
                    f"the canary of {request.release_id} ({existing.revision}) is already "
                    f"{existing.status}",
                )
        now = self.deps.clock()
        plan = StepPlan.of(self.config.plan_for(service))
        row = store.CanaryRow(
            release_id=request.release_id,
            project=request.project,
            region=request.region,
            service=service,
            revision=request.revision,
            stable_revision=None,
            commit_sha=request.commit_sha,
            build_id=request.build_id,
            tag_url=request.tag_url,
            status="running",
            percent=0,
            steps=list(plan.steps),
            max_step_s=plan.max_step_time.total_seconds(),
            dry_run=self.config.dry_run,
            request_event_id=self.trigger_event_id,
            started_at=now,
            step_started_at=now,
            # a release deployed again after its canary ended: its events still to go out
            outbox=existing.outbox if existing is not None else [],
        )
        other = store.active(self.conn, service)
        if other is not None:
            return self._decide(
                row,
                "stop",
                0,
                f"the canary of {other.release_id} ({other.revision}) is still {other.status} "
                f"on {service}: one canary per service; {request.revision} was not started",
                None,
            )
        try:
            state = self._cloud().read(row.project, row.region, service)
        except ServiceNotFound as exc:
            return self._decide(row, "stop", 0, f"{exc}; nothing moved", None)
        stable = state.sole_server()
        if stable is None:
            return self._decide(
                row,
                "stop",
                0,
                "canary needs one revision serving 100 % (now: "
                f"{describe_split(state.serving())}); nothing moved",
                None,
            )
        row = row.model_copy(update={"stable_revision": stable})
        info = state.revision(request.revision)
        if stable == request.revision:
            return self._decide(
                row, "stop", 0, f"{request.revision} already serves 100 %; nothing to do", None
            )
        if info is None or not info.ready:
            return self._decide(
                row,
                "stop",
                0,
                f"{request.revision} of {service} is "
                f"{'not Ready' if info else 'not found'}; nothing moved",
                None,
            )
        first = row.steps[0]
        return self._move(
            row, state, "started", first, f"{first}% of {service} to {request.revision}", None
        )

    # ------------------------------------------------------------------ tick

    def _tick_one(self, row: store.CanaryRow) -> Decision:
        """One running canary, in a savepoint: a lock wait that times out (rollback holds
        the service) or a dependency that is down leaves it for the next tick."""
        try:
            with self.conn.begin_nested():
                store.lock_service(self.conn, row.service, self.config.lock_wait_s)
                fresh = store.load(self.conn, row.release_id)
                if fresh is None or fresh.status != "running":
                    status = fresh.status if fresh else "gone"
                    return self._skip(row, f"the canary is {status} (decided meanwhile)")
                return self._analyse(self._flush(fresh))
        except TransientError as exc:
            logger.warning("canary of %s not analysed this tick: %s", row.service, exc)
            return self._skip(row, f"{exc}; analysed again at the next tick")
        except Exception as exc:
            from shared.db import is_transient

            if not is_transient(exc):
                raise
            logger.warning(
                "canary of %s not analysed this tick: %s", row.service, type(exc).__name__
            )
            return self._skip(row, f"{type(exc).__name__}; analysed again at the next tick")

    def _analyse(self, row: store.CanaryRow) -> Decision:
        now = self.deps.clock()
        gap = timedelta(seconds=self._alignment_s(row.steps, row.percent) / 2)
        if row.last_analysis_at is not None and now - row.last_analysis_at < gap:
            return self._skip(
                row,
                f"analysed {(now - row.last_analysis_at).total_seconds():.0f}s ago "
                "(a doubled tick)",
            )
        try:
            state = self._cloud().read(row.project, row.region, row.service)
        except ServiceNotFound as exc:
            return self._decide(row, "stop", row.percent, f"{exc}; nothing moved", None)
        changed = self._traffic_changed(row, state)
        if changed is not None:
            return self._decide(row, "stop", row.percent, changed, None)
        plan = StepPlan(tuple(row.steps), timedelta(seconds=row.max_step_s))
        evidence = self._evidence(row, plan, now)
        if isinstance(evidence, str):  # Monitoring refused: a human looks
            return self._decide(row, "hold", row.percent, evidence, None)
        decided = next_step(plan, row.percent, evidence, now - row.step_started_at)
        if decided.action is Action.WAIT:
            return self._wait(row, evidence, now)
        if decided.action is Action.HOLD:
            return self._decide(row, "hold", row.percent, decided.reason, evidence)
        if decided.action is Action.ROLLBACK:
            frozen = self._frozen(row, decided.reason, evidence)
            if frozen is not None:
                return frozen
            return self._move(row, state, "rollback", 0, decided.reason, evidence)
        kind: CanaryAction = "promote" if decided.action is Action.PROMOTE else "step"
        return self._move(row, state, kind, decided.percent, decided.reason, evidence)

    def _traffic_changed(self, row: store.CanaryRow, state: ServiceState) -> str | None:
        """Why the canary must stop because its split is not what Cloud Run routes, or
        None. Both the spec and the statuses count: a change still rolling out is one."""
        expected = row.expected_split()
        spec, _statuses = state.routing()
        serving = state.serving()
        if serving == expected and spec == expected:
            return None
        return (
            f"traffic of {row.service} is {describe_split(serving)}, not the split the canary "
            f"set ({describe_split(expected)}): someone else changed it; nothing moved"
        )

    def _evidence(self, row: store.CanaryRow, plan: StepPlan, now: datetime) -> Evidence | str:
        """The step's evidence, from Cloud Run's request logs on the first
        ``logs_steps`` steps and from Cloud Monitoring after them, or why there is none
        (refused)."""
        from shared.canary._monitoring import monitoring_reader_for

        reader: MonitoringReader = monitoring_reader_for(self.deps)
        stable = row.stable_revision or ""
        try:
            baseline = None
            if self.config.baseline_s > 0:
                baseline = reader.baseline(
                    project=row.project,
                    region=row.region,
                    service=row.service,
                    stable=stable,
                    start=row.step_started_at - timedelta(seconds=self.config.baseline_s),
                    end=row.step_started_at,
                )
            read: Callable[..., list[Interval]] = reader.intervals
            if self._from_logs(row.steps, row.percent):
                from shared.canary._logs import logs_reader_for

                # the baseline's buckets, so that the latency test compares like with like
                read = functools.partial(
                    logs_reader_for(self.deps).intervals,
                    stable_fraction=self._stable_fraction(baseline),
                    bounds=baseline.bounds if baseline is not None else None,
                )
            intervals = read(
                project=row.project,
                region=row.region,
                service=row.service,
                canary=row.revision,
                stable=stable,
                start=row.step_started_at,
                end=now,
            )
        except PermanentError as exc:  # MonitoringError or LogsError: refused, not down
            return f"{exc}; no evidence, holding at {row.percent}% for a human"
        # ``step`` on every step: the false-rollback budget is split by step_weights (half
        # to the first), never the equal shares of step=None (docs/canary.md, "The
        # false-rollback budget"); a running canary's percent is always one of its steps.
        config = AnalysisConfig(analysed_steps=plan.analysed_steps)
        return analyse(intervals, config, baseline, step=plan.steps.index(row.percent))

    def _from_logs(self, steps: list[int], percent: int) -> bool:
        """Is this step read from the request logs (the first ``logs_steps`` steps)?"""
        return percent in steps and steps.index(percent) < self.config.logs_steps

    def _alignment_s(self, steps: list[int], percent: int) -> int:
        if self._from_logs(steps, percent):
            return self.config.logs_alignment_s
        return self.config.alignment_s

    def _stable_fraction(self, baseline: Histogram | None) -> float:
        """The share of the stable's log entries to read: all of them, unless the stable
        served more than ``logs_max_stable_per_s`` before the step (its baseline)."""
        from shared.canary._logs import stable_fraction

        if baseline is None or self.config.baseline_s <= 0:
            return 1.0
        rate = baseline.total / self.config.baseline_s
        return stable_fraction(rate, self.config.logs_max_stable_per_s)

    def _next_tick(self, decision: Decision) -> None:
        """A canary on a step read from the request logs is analysed every
        ``logs_alignment_s``: it sends itself the next tick, due at the next period's end
        (Cloud Scheduler wakes it only every minute). The tick's id is derived from the
        release and that period, so ticks from two analyses of one period (a scheduled
        tick and the chain) are one delivery. Best effort: a tick that cannot be sent is
        replaced by the next scheduled one, which restarts the chain."""
        if decision.release_id is None or decision.kind not in ("started", "step", "wait", "skip"):
            return
        row = store.load(self.conn, decision.release_id)
        if row is None or row.status != "running" or not self._from_logs(row.steps, row.percent):
            return
        period = self.config.logs_alignment_s
        now = self.deps.clock().timestamp()
        slot = int(now // period) + 1
        due = datetime.fromtimestamp(slot * period, tz=UTC)
        tick = CanaryTick(service=row.service, region=row.region, not_before=due)
        event: OpsEvent[OpsPayload] = OpsEvent.new(
            EventType.CANARY_TICK, tick, source=self.source, clock=self.deps.clock
        )
        event = event.model_copy(
            update={"id": str(uuid.uuid5(_TICKS, f"{row.release_id}/{period}/{slot}"))}
        )
        data, attributes = event.to_pubsub()
        try:
            self.deps.publisher.publish(
                self.deps.settings.topics.ops_events, data, outgoing_attributes(attributes)
            )
        except Exception as exc:  # the scheduled tick restarts the chain
            logger.warning(
                "canary of %s: next %ds tick not sent (%s); the scheduled tick analyses it",
                row.service,
                period,
                type(exc).__name__,
            )

    def _wait(self, row: store.CanaryRow, evidence: Evidence, now: datetime) -> Decision:
        """No decision yet: keep the evidence on the row (no action, no event)."""
        evidence_json = _finite(evidence.as_json())
        updated = row.model_copy(
            update={
                "evidence": evidence_json,
                "last_analysis_at": now,
                "reason": evidence.reason,
                "updated_at": now,
            }
        )
        with (
            self._span(row, "wait", row.percent, row.percent, evidence_json),
            self.journal.transaction() as conn,
        ):
            store.save(conn, updated)
        self.deps.metrics.incr("canary_analyses", action="wait")
        return Decision(
            row.service, row.release_id, "wait", evidence.reason, row.percent, row.percent
        )

    def _frozen(
        self, row: store.CanaryRow, reason: str, evidence: Evidence | None
    ) -> Decision | None:
        """A rollback after a breaking migration since the canary started: traffic stays,
        the canary is marked bad and a human decides (rollback's freeze rule)."""
        breaking = store.breaking_migrations(self.conn, row.started_at)
        if not breaking:
            return None
        labels = ", ".join(m.label for m in breaking)
        return self._decide(
            row,
            "frozen",
            row.percent,
            f"breaking migration {labels} applied since the canary started; not moving "
            f"traffic back to {row.stable_revision} ({reason})",
            evidence,
            mark="bad",
        )

    # ------------------------------------------------------------------ manual

    def _manual(self, service: str) -> tuple[store.CanaryRow, ServiceState]:
        store.lock_service(self.conn, service, self.config.lock_wait_s)
        row = store.active(self.conn, service)
        if row is None:
            raise CanaryError(f"no active canary for {service} (sightops canary status)")
        row = self._flush(row)
        state = self._cloud().read(row.project, row.region, service)
        return row, state

    # ------------------------------------------------------------------ acting

    def _move(
        self,
        row: store.CanaryRow,
        state: ServiceState,
        kind: CanaryAction,
        percent: int,
        reason: str,
        evidence: Evidence | None,
    ) -> Decision:
        """Set the split for ``percent`` (unless dry run), then record the decision; a
        refused or uncertain write stops the canary instead."""
        shares = row.split(percent)
        mark: Literal["good", "bad"] | None = (
            "good" if kind == "promote" else "bad" if kind == "rollback" else None
        )
        if row.dry_run:
            return self._decide(
                row,
                kind,
                percent,
                f"dry run: would route {describe_split(shares)} ({reason})",
                evidence,
                mark=mark,
            )
        started = time.perf_counter()
        try:
            after = self._cloud().set_split(state, shares)
        except TrafficChanged as exc:
            return self._decide(row, "stop", row.percent, str(exc), evidence)
        except TrafficConflict as exc:
            return self._decide(row, "stop", row.percent, f"{exc}; traffic not moved", evidence)
        except (OperationFailed, UpdateOutcomeUnknown) as exc:
            return self._decide(
                row, "stop", row.percent, f"{exc}; check the service's traffic by hand", evidence
            )
        except CloudRunError as exc:
            return self._decide(row, "stop", row.percent, f"{exc}; traffic not moved", evidence)
        finally:
            self.deps.metrics.timing(
                "canary_update_ms", (time.perf_counter() - started) * 1000, service=row.service
            )
        serving = after.serving()
        if serving != shares:
            return self._decide(
                row,
                "stop",
                row.percent,
                f"UpdateService finished but traffic_statuses show {describe_split(serving)}, "
                f"not {describe_split(shares)}; check the service's traffic by hand",
                evidence,
            )
        return self._decide(row, kind, percent, reason, evidence, mark=mark)

    def _decide(
        self,
        row: store.CanaryRow,
        kind: CanaryAction,
        percent: int,
        reason: str,
        evidence: Evidence | None,
        *,
        mark: Literal["good", "bad"] | None = None,
    ) -> Decision:
        """Record one decision: the row, its ``ops.actions`` row, the ledger mark and its
        events (in the outbox) in one journal transaction, inside the decision's span in
        the release's trace; then publish."""
        now = self.deps.clock()
        reason = reason[:_MAX_REASON]
        evidence_json = _finite(evidence.as_json()) if evidence is not None else None
        step = CanaryStep(
            percent=row.percent,
            started_at=row.step_started_at,
            decided_at=now,
            action=kind,
            reason=reason,
            evidence=evidence_json,
        )
        history = [*row.history, step.model_dump(mode="json")]
        with self._span(row, kind, row.percent, percent, evidence_json) as trace_id:
            result = CanaryResult(
                service=row.service,
                region=row.region,
                release_id=row.release_id,
                revision=row.revision,
                stable_revision=row.stable_revision,
                action=kind,
                percent_before=row.percent,
                percent_after=percent,
                reason=reason,
                evidence=evidence_json,
                steps=[CanaryStep.model_validate(s) for s in history],
                started_at=row.started_at,
                decided_at=now,
                manual=self.manual,
                actor=self.actor,
                dry_run=row.dry_run,
            )
            event: OpsEvent[OpsPayload] = OpsEvent.new(
                EVENT_TYPES[kind], result, source=self.source, clock=self.deps.clock
            )
            events = [event, *self._release_event(row, kind, reason, now)]
            updated = row.model_copy(
                update={
                    "status": STATUSES[kind],
                    "percent": percent,
                    "step_started_at": now if percent != row.percent else row.step_started_at,
                    "last_analysis_at": now if evidence is not None else row.last_analysis_at,
                    "evidence": evidence_json if evidence_json is not None else row.evidence,
                    "history": history,
                    "reason": reason,
                    "trace_id": trace_id or row.trace_id,
                    "outbox": [*row.outbox, *(self._wire(e) for e in events)],
                    "updated_at": now,
                }
            )
            with self.journal.transaction() as conn:
                store.save(conn, updated)
                record = store.action_recorder(conn, self.trigger_event_id, self.deps.clock)
                record(
                    "canary",
                    kind,
                    service=row.service,
                    actor=self.actor,
                    detail={
                        "percent_before": row.percent,
                        "percent_after": percent,
                        "evidence": evidence_json,
                        "reason": reason,
                        "revision": row.revision,
                        "stable_revision": row.stable_revision,
                        "manual": self.manual,
                        "dry_run": row.dry_run,
                        "event_id": event.id,
                        "event_type": event.type.value,
                    },
                )
                if mark is not None:
                    store.mark_health(
                        conn,
                        record,
                        service=row.service,
                        revision=row.revision,
                        health=mark,
                        reason=f"canary {kind} of {row.release_id}: {reason}"[:_MAX_REASON],
                        evidence_time=now,
                        actor=self.actor,
                    )
            published = not self._flush(updated).outbox
        self.deps.metrics.incr("canary_decisions", action=kind)
        return Decision(
            row.service,
            row.release_id,
            kind,
            reason,
            row.percent,
            percent,
            row.dry_run,
            event.id,
            published,
        )

    def _release_event(
        self, row: store.CanaryRow, kind: CanaryAction, reason: str, now: datetime
    ) -> list[OpsEvent[OpsPayload]]:
        """The release ends with the canary: ``release.promoted`` or ``release.failed``
        (``via: canary``), what the release metrics count (docs/metrics.md)."""
        if kind not in ("promote", "rollback") or row.dry_run:
            return []
        result = ReleaseResult(
            service=row.service,
            region=row.region,
            commit_sha=row.commit_sha,
            release_id=row.release_id,
            build_id=row.build_id,
            revision=row.revision,
            previous_revision=row.stable_revision,
            url=row.tag_url,
            reason=reason,
            started_at=row.started_at,
            finished_at=now,
            via="canary",
        )
        kind_type = EventType.RELEASE_PROMOTED if kind == "promote" else EventType.RELEASE_FAILED
        return [OpsEvent.new(kind_type, result, source=self.source, clock=self.deps.clock)]

    def _skip(self, row: store.CanaryRow, reason: str) -> Decision:
        return Decision(row.service, row.release_id, "skip", reason, row.percent, row.percent)

    # ------------------------------------------------------------------ events

    def _wire(self, event: OpsEvent[OpsPayload]) -> dict[str, Any]:
        """An event as the outbox keeps it: topic, data and attributes as published now
        (the current span's trace context included, so a later publication joins it)."""
        data, attributes = event.to_pubsub()
        return {
            "topic": self.deps.settings.topics.ops_events,
            "data": base64.b64encode(data).decode("ascii"),
            "attributes": outgoing_attributes(attributes),
        }

    def _flush(self, row: store.CanaryRow) -> store.CanaryRow:
        """Publish the row's outbox in order; what went out leaves it (a journal
        transaction). Returns the row as it is now: what did not go out waits for the
        next tick."""
        if not row.outbox:
            return row
        sent = 0
        try:
            for entry in row.outbox:
                self.deps.publisher.publish(
                    str(entry["topic"]),
                    base64.b64decode(str(entry["data"])),
                    {str(k): str(v) for k, v in dict(entry["attributes"]).items()},
                )
                sent += 1
        except Exception as exc:
            logger.error(  # noqa: TRY400 - the type is enough: the next tick publishes again
                "canary of %s: %d event(s) recorded but not published yet (%s); the next "
                "tick publishes them",
                row.service,
                len(row.outbox) - sent,
                type(exc).__name__,
            )
        with self.journal.transaction() as conn:
            store.set_outbox(conn, row.release_id, row.outbox[sent:])
        return row.model_copy(update={"outbox": row.outbox[sent:]})

    def _flush_all(self) -> None:
        """Events of any canary (ended ones too) whose publication failed earlier."""
        for service, release_id in store.with_outbox(self.conn):
            with self.conn.begin_nested():
                store.lock_service(self.conn, service, self.config.lock_wait_s)
                row = store.load(self.conn, release_id)
                if row is not None:
                    self._flush(row)

    # ------------------------------------------------------------------ plumbing

    def _cloud(self) -> CloudRun:
        return cloud_run_for(self.deps)

    @contextmanager
    def _span(
        self,
        row: store.CanaryRow,
        kind: Kind,
        before: int,
        after: int,
        evidence: dict[str, Any] | None,
    ) -> Iterator[str | None]:
        """A span ``canary <action>`` in the release's trace (a child of the delivery's
        span when that is the same release), the evidence flattened into attributes;
        yields the trace id. Tracing never stops a decision."""
        try:
            tracing = self.deps.tracing
        except Exception:
            logger.exception("canary: tracing unavailable; decision not traced")
            yield None
            return
        delivery = current_trace()
        parent = (
            delivery.traceparent
            if delivery is not None and delivery.release_id == row.release_id
            else None
        )
        attributes: dict[str, str | bool | int | float | None] = {
            "canary.service": row.service,
            "canary.revision": row.revision,
            "canary.stable_revision": row.stable_revision,
            "canary.action": kind,
            "canary.percent_before": before,
            "canary.percent_after": after,
            "canary.dry_run": row.dry_run,
            "canary.actor": self.actor,
            **_flatten("canary.evidence", evidence or {}),
        }
        with tracing.span(
            f"canary {kind}", traceparent=parent, release=row.release_id, attributes=attributes
        ) as trace:
            yield trace.trace_id


def _finite(value: Any) -> Any:
    """JSON without NaN or infinities (jsonb refuses them): those become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _flatten(prefix: str, value: Mapping[str, Any]) -> dict[str, str | bool | int | float | None]:
    out: dict[str, str | bool | int | float | None] = {}
    for key, item in value.items():
        name = f"{prefix}.{key}"
        if isinstance(item, Mapping):
            out.update(_flatten(name, item))
        elif item is None or isinstance(item, str | bool | int | float):
            out[name] = item
    return out
