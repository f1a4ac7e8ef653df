"""The orchestrator: lock the service, read, decide, mark, act, record, publish.

The rollback function (``shared.rollback._function``) and the manual ``sightops rollback``
(``shared.rollback._cli``) both go through :class:`Rollbacks`, so they apply the same
checks. It takes what it needs -- deps, the open connection, a recorder of ``ops.actions``
rows, the actor -- never a delivery's Context. Every decision ends as one ``ops.actions``
row and one ``sight.ops.rollback.*`` event (docs/rollback.md).
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.engine import Connection

from shared.errors import TransientError
from shared.events import OpsEvent, RollbackResult, SmokeResult
from shared.rollback import _store as store
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
from shared.rollback._decide import decide
from shared.rollback._model import (
    Decision,
    Health,
    Policy,
    ServiceState,
    Trigger,
    Verdict,
    describe_split,
)
from shared.runtime import Deps, Outcome

logger = logging.getLogger("sightops.rollback")


@dataclass(frozen=True)
class Report:
    """What one decision came to, for the function's log line and the CLI."""

    decision: Decision
    verdict: Verdict
    reason: str
    dry_run: bool
    event: OpsEvent[RollbackResult]
    published: bool
    serving_before: dict[str, int] = field(default_factory=dict)
    serving_after: dict[str, int] | None = None

    def outcome(self) -> Outcome:
        fields = {
            "verdict": self.verdict.value,
            "service": self.decision.service,
            "from_revision": self.decision.from_revision,
            "to_revision": self.decision.to_revision,
            "dry_run": self.dry_run,
            "rollback_event_id": self.event.id,
        }
        text = f"{self.event.type.value}: {self.reason}"
        if self.verdict is Verdict.SKIP:
            return Outcome.skipped(text, **fields)
        return Outcome.handled(text, **fields)


class Rollbacks:
    """Decisions about services, on one open transaction (``conn``).

    ``record`` appends to ``ops.actions`` in that transaction (a delivery's
    ``Context.record_action``; the CLI's :func:`~shared.rollback._store.action_recorder`).
    ``actor`` is recorded with every action; ``source`` is the events' source.
    """

    def __init__(
        self,
        deps: Deps,
        conn: Connection,
        record: store.Recorder,
        *,
        actor: str = "automation",
        source: str = "rollback",
        redeliver_unpublished: bool = False,
    ) -> None:
        self.deps = deps
        self.conn = conn
        self.record = record
        self.actor = actor
        self.source = source
        # The function's deliveries: an outcome recorded whose event could not be published
        # is answered 503, so Pub/Sub redelivers and the resumed decision publishes it
        # (docs/rollback.md). A terminal has no redelivery: the CLI reports it instead.
        self.redeliver_unpublished = redeliver_unpublished
        self.config = deps.settings.rollback
        self.journal = store.Journal(deps.settings)

    # ------------------------------------------------------------------ entry points

    def smoke_passed(self, event_id: str, evidence_time: datetime, smoke: SmokeResult) -> Outcome:
        """Mark the revision known-good (unless newer evidence says otherwise)."""
        store.lock_service(self.conn, smoke.service, self.config.lock_wait_s)
        try:
            state = self._bootstrap_read(smoke.service, smoke.region)
        finally:
            self.journal.close()
        applied = self.mark(
            smoke.service,
            smoke.revision,
            "good",
            f"smoke.passed {event_id} ({len(smoke.checks)} checks at {smoke.url})",
            evidence_time,
            state=state,
            build_id=smoke.build_id,
            commit_sha=smoke.commit_sha,
        )
        if applied:
            return Outcome.handled(f"{smoke.revision} of {smoke.service} marked good")
        return Outcome.skipped(
            f"smoke.passed for {smoke.revision} is older than the evidence already recorded"
        )

    def run(
        self,
        trigger: Trigger,
        region: str | None = None,
        *,
        dry_run: bool = False,
        bad_reason: str | None = None,
        trigger_key: str | None = None,
    ) -> Report:
        """Decide about ``trigger`` under the service lock, act, record and publish.

        ``trigger_key`` names the trigger across redeliveries (the consumer and the
        delivery's dedupe key): a decision already taken for it is resumed, not retaken.
        """
        try:
            return self._run(trigger, region, dry_run, bad_reason, trigger_key)
        finally:
            self.journal.close()

    def _run(
        self,
        trigger: Trigger,
        region: str | None,
        dry_run: bool,
        bad_reason: str | None,
        trigger_key: str | None,
    ) -> Report:
        settings = self.deps.settings
        service = trigger.service
        store.lock_service(self.conn, service, self.config.lock_wait_s)
        project = self.config.project or settings.gcp_project
        region = region or self.config.region or settings.gcp_region
        key = trigger_key or f"{self.source}:{trigger.kind}:{trigger.event_id}"
        cloud = cloud_run_for(self.deps)
        existing = store.find_decision(self.conn, key)
        if existing is not None:
            return self._resume(cloud, trigger, existing, project, region)
        try:
            state = cloud.read(project, region, service)
        except ServiceNotFound as exc:
            decision = Decision(
                Verdict.FAIL,
                service,
                f"{exc}; traffic not moved",
                from_revision=trigger.revision,
                mark_bad=trigger.revision if trigger.kind == "smoke" else None,
            )
            self._mark_bad(decision, trigger, None, bad_reason)
            return self._finish(trigger, decision, decision.verdict, decision.reason, dry_run, {})

        if trigger.kind != "manual":
            self._bootstrap(state, exclude=trigger.revision or state.primary())
        decision = self._decide(trigger, state)
        moving = decision.verdict is Verdict.ROLLBACK and bool(decision.to_revision)
        if moving and not dry_run:
            return self._act(cloud, trigger, key, state, decision, bad_reason)
        self._mark_bad(decision, trigger, state, bad_reason)

        verdict, reason = decision.verdict, decision.reason
        if moving:  # dry run
            verdict = Verdict.SKIP
            reason = (
                f"dry run: would move 100% of {service} from {decision.from_revision} to "
                f"{decision.to_revision} ({decision.reason})"
            )
        return self._finish(trigger, decision, verdict, reason, dry_run, state.serving())

    def _act(
        self,
        cloud: CloudRun,
        trigger: Trigger,
        key: str,
        state: ServiceState,
        decision: Decision,
        bad_reason: str | None,
    ) -> Report:
        """Move traffic with the decision durable on its own: the intent and the ``bad``
        mark are committed before Cloud Run is called, the outcome after, each in a
        journal transaction, so a failure of the delivery's own COMMIT loses neither."""
        decision_id = store.decision_id_for(key)
        intent = store.DecisionRecord(
            decision_id=decision_id,
            trigger_key=key,
            service=decision.service,
            trigger_kind=trigger.kind,
            trigger_event_id=None if trigger.kind == "manual" else trigger.event_id,
            actor=self.actor,
            from_revision=decision.from_revision,
            to_revision=decision.to_revision or "",
            reason=decision.reason,
            event_id=store.event_id_for(decision_id),
            serving_before=state.serving(),
            created_at=self.deps.clock(),
        )
        evidence = self._bad_evidence(decision, trigger, moving_away=True)
        with self.journal.transaction() as conn:
            store.record_intent(conn, intent)
            if decision.mark_bad is not None and evidence is not None:
                store.mark_health(
                    conn,
                    store.action_recorder(conn, trigger.event_id, self.deps.clock),
                    service=decision.service,
                    revision=decision.mark_bad,
                    health="bad",
                    reason=bad_reason or f"{trigger.kind} {trigger.event_id}",
                    evidence_time=evidence,
                    info=state.revision(decision.mark_bad),
                    actor=self.actor,
                )
        verdict, reason, serving_after, sent = self._move(cloud, state, decision)
        return self._conclude(intent, trigger, decision, verdict, reason, serving_after, sent=sent)

    def _resume(
        self,
        cloud: CloudRun,
        trigger: Trigger,
        journal: store.DecisionRecord,
        project: str,
        region: str,
    ) -> Report:
        """A redelivery of a trigger whose decision was already taken (the delivery's
        COMMIT failed, or it was answered 503 after the intent): never decide again.

        Outcome recorded: publish it if that had failed, otherwise nothing. Only the
        intent: read Cloud Run and reconcile -- traffic already on the target is a
        success; traffic still as it was at the decision is moved now; anything else was
        changed by someone else and is not touched.
        """
        decision = Decision(
            Verdict.ROLLBACK,
            journal.service,
            journal.reason,
            from_revision=journal.from_revision,
            to_revision=journal.to_revision,
            mark_bad=journal.from_revision,
        )
        if journal.status == "done":
            verdict = Verdict.ROLLBACK if journal.verdict == "succeeded" else Verdict.FAIL
            event = self._event(
                verdict, decision, journal.reason, trigger, False, journal.event_id
            ).model_copy(update={"time": journal.finished_at or journal.created_at})
            published = journal.event_published
            if not published:
                published = self._publish(event, decision.service, verdict, sent=True)
                if published:
                    with self.journal.transaction() as conn:
                        store.mark_published(conn, journal.decision_id)
                else:
                    self._unpublished(journal.service, verdict)
            return Report(
                decision,
                verdict,
                journal.reason,
                False,
                event,
                published,
                journal.serving_before,
                journal.serving_after,
            )
        try:
            state = cloud.read(project, region, journal.service)
        except ServiceNotFound as exc:
            return self._conclude(
                journal,
                trigger,
                decision,
                Verdict.FAIL,
                f"{exc}; check the service's traffic by hand",
                None,
                sent=True,
            )
        serving = state.serving()
        after: dict[str, int] | None
        if serving.get(journal.to_revision, 0) >= 100:
            verdict, reason, after, sent = Verdict.ROLLBACK, journal.reason, serving, True
        elif serving == journal.serving_before:
            verdict, reason, after, sent = self._move(cloud, state, decision)
        else:
            verdict, reason, after, sent = (
                Verdict.FAIL,
                f"traffic of {journal.service} changed since the decision (was "
                f"{describe_split(journal.serving_before)}, now {describe_split(serving)}); "
                "not touching it",
                serving,
                True,
            )
        return self._conclude(journal, trigger, decision, verdict, reason, after, sent=sent)

    def _conclude(
        self,
        journal: store.DecisionRecord,
        trigger: Trigger,
        decision: Decision,
        verdict: Verdict,
        reason: str,
        serving_after: dict[str, int] | None,
        *,
        sent: bool,
    ) -> Report:
        """Publish under the decision's own event id, then commit the outcome and its
        ``ops.actions`` row (write-once, keyed by the decision) in a journal transaction."""
        event = self._event(verdict, decision, reason, trigger, False, journal.event_id)
        published = self._publish(event, decision.service, verdict, sent=sent)
        report = Report(
            decision,
            verdict,
            reason,
            False,
            event,
            published,
            journal.serving_before,
            serving_after,
        )
        with self.journal.transaction() as conn:
            store.record_outcome(
                conn,
                journal.decision_id,
                verdict="succeeded" if verdict is Verdict.ROLLBACK else "failed",
                reason=reason,
                serving_after=serving_after,
                published=published,
                finished_at=self.deps.clock(),
            )
            record = store.action_recorder(conn, trigger.event_id, self.deps.clock)
            self._record_decision(record, trigger, report, journal.decision_id)
        self.deps.metrics.incr("rollback_decisions", verdict=verdict.value)
        if not published:
            self._unpublished(journal.service, verdict)
        return report

    def _unpublished(self, service: str, verdict: Verdict) -> None:
        """The outcome is committed but nobody was told: have the trigger redelivered (the
        redelivery finds the decision done and only publishes), or, from a terminal, let
        the report say so."""
        if self.redeliver_unpublished:
            raise TransientError(
                f"rollback of {service} recorded ({verdict.value}) but its event is not "
                "published yet; redelivered to publish it"
            )

    def mark(
        self,
        service: str,
        revision: str,
        health: Health,
        reason: str,
        evidence_time: datetime,
        *,
        state: ServiceState | None = None,
        build_id: str | None = None,
        commit_sha: str | None = None,
    ) -> bool:
        return store.mark_health(
            self.conn,
            self.record,
            service=service,
            revision=revision,
            health=health,
            reason=reason,
            evidence_time=evidence_time,
            info=state.revision(revision) if state else None,
            build_id=build_id,
            commit_sha=commit_sha,
            actor=self.actor,
        )

    # ------------------------------------------------------------------ steps

    def _bootstrap_read(self, service: str, region: str | None) -> ServiceState | None:
        """On the first event about a service, read it and record its baseline."""
        if store.service_known(self.conn, service):
            return None
        settings = self.deps.settings
        try:
            state = cloud_run_for(self.deps).read(
                self.config.project or settings.gcp_project,
                region or self.config.region or settings.gcp_region,
                service,
            )
        except ServiceNotFound:
            return None
        self._bootstrap(state, exclude=None)
        return state

    def _bootstrap(self, state: ServiceState, exclude: str | None) -> None:
        """The first time a service is seen, the revision serving 100 % is the baseline
        known-good -- unless it is the very revision this event accuses.

        Its evidence time is the revision's creation time, so any real smoke result
        about it (always later) overrides the baseline. Committed on its own (a journal
        transaction): it is often the target of the rollback about to happen, and must
        survive a failure of the delivery's own COMMIT after traffic moved to it.
        """
        if store.service_known(self.conn, state.service):
            return
        baseline = state.sole_server()
        info = state.revision(baseline) if baseline else None
        if baseline is None or info is None or baseline == exclude:
            return
        with self.journal.transaction() as conn:
            store.mark_health(
                conn,
                store.action_recorder(conn, None, self.deps.clock),
                service=state.service,
                revision=baseline,
                health="good",
                reason=f"baseline: served 100% of traffic when sight-ops first saw {state.service}",
                evidence_time=info.create_time,
                info=info,
                actor=self.actor,
            )

    def _decide(self, trigger: Trigger, state: ServiceState) -> Decision:
        now = self.deps.clock()
        window = timedelta(seconds=self.config.window_s)
        oldest = min((r.create_time for r in state.revisions), default=now)
        return decide(
            trigger,
            state,
            store.load_health(self.conn, trigger.service),
            breaking=store.breaking_migrations(self.conn, oldest),
            recent_auto_rollbacks=(
                0
                if trigger.kind == "manual"
                else store.recent_auto_rollbacks(self.conn, trigger.service, now - window)
            ),
            promoted_at=(
                store.our_promotions(self.conn, trigger.service) if trigger.kind == "alert" else {}
            ),
            policy=Policy(
                max_per_window=self.config.max_per_window,
                window=window,
                alert_window=timedelta(seconds=self.config.alert_window_s),
            ),
        )

    def _mark_bad(
        self,
        decision: Decision,
        trigger: Trigger,
        state: ServiceState | None,
        bad_reason: str | None,
    ) -> None:
        """Mark the accused revision bad as of the trigger's evidence time (a decision
        that moves no traffic: in the delivery's own transaction)."""
        evidence = self._bad_evidence(decision, trigger)
        if decision.mark_bad is None or evidence is None:
            return
        self.mark(
            decision.service,
            decision.mark_bad,
            "bad",
            bad_reason or f"{trigger.kind} {trigger.event_id}",
            evidence,
            state=state,
        )

    def _bad_evidence(
        self, decision: Decision, trigger: Trigger, *, moving_away: bool = False
    ) -> datetime | None:
        """The evidence time of the ``bad`` mark: the trigger's -- or, when we are about to
        move traffic away from the revision, the decision's (and no older than any evidence
        about it): a revision we rolled back from must never stay ``good`` and be picked
        again because an earlier smoke.passed outranked an incident's start time."""
        if decision.mark_bad is None:
            return None
        evidence = trigger.evidence_time
        if moving_away:
            latest = store.latest_evidence(self.conn, decision.service, decision.mark_bad)
            evidence = max(t for t in (evidence, self.deps.clock(), latest) if t is not None)
        return evidence

    def _move(
        self, cloud: CloudRun, state: ServiceState, decision: Decision
    ) -> tuple[Verdict, str, dict[str, int] | None, bool]:
        """Pin traffic; map what Cloud Run answered to the final verdict, and whether the
        update was sent (traffic may have moved: the record must then survive)."""
        target = decision.to_revision or ""
        started = time.perf_counter()
        try:
            after = cloud.pin_traffic(state, target)
        except TrafficChanged as exc:
            return Verdict.FAIL, str(exc), None, False
        except TrafficConflict as exc:
            return Verdict.FAIL, f"{exc}; traffic not moved", None, False
        except (OperationFailed, UpdateOutcomeUnknown) as exc:
            return Verdict.FAIL, f"{exc}; check the service's traffic by hand", None, True
        except CloudRunError as exc:
            return Verdict.FAIL, f"{exc}; traffic not moved", None, False
        finally:
            self.deps.metrics.timing(
                "rollback_update_ms", (time.perf_counter() - started) * 1000, service=state.service
            )
        serving = after.serving()
        if serving.get(target, 0) < 100:
            return (
                Verdict.FAIL,
                f"UpdateService finished but traffic_statuses show {describe_split(serving)}, not "
                f"{target} at 100%",
                serving,
                True,
            )
        return Verdict.ROLLBACK, decision.reason, serving, True

    def _finish(
        self,
        trigger: Trigger,
        decision: Decision,
        verdict: Verdict,
        reason: str,
        dry_run: bool,
        serving_before: dict[str, int],
    ) -> Report:
        """Publish the ``sight.ops.rollback.*`` event of a decision that moved no traffic
        and record the action in the delivery's own transaction (a failed publish is
        transient: nothing happened yet)."""
        event = self._event(verdict, decision, reason, trigger, dry_run)
        published = self._publish(event, decision.service, verdict, sent=False)
        report = Report(decision, verdict, reason, dry_run, event, published, serving_before)
        self._record_decision(self.record, trigger, report)
        self.deps.metrics.incr("rollback_decisions", verdict=verdict.value)
        return report

    def _event(
        self,
        verdict: Verdict,
        decision: Decision,
        reason: str,
        trigger: Trigger,
        dry_run: bool,
        event_id: str | None = None,
    ) -> OpsEvent[RollbackResult]:
        """The ``sight.ops.rollback.*`` event; a traffic move's carries its decision's id,
        so a republication after a redelivery is the same event to notify."""
        manual = trigger.kind == "manual"
        event = OpsEvent.new(
            verdict.event_type,
            RollbackResult(
                service=decision.service,
                from_revision=decision.from_revision,
                to_revision=decision.to_revision,
                reason=reason,
                trigger_event_id=None if manual else trigger.event_id,
                dry_run=dry_run,
                manual=manual,
            ),
            source=self.source,
            clock=self.deps.clock,
        )
        return event.model_copy(update={"id": event_id}) if event_id else event

    def _publish(
        self, event: OpsEvent[RollbackResult], service: str, verdict: Verdict, *, sent: bool
    ) -> bool:
        """Publish; whether it was. Once an update was sent (traffic moved, or may have),
        a failed publish must not undo the record of it: it is logged and noted instead
        of raised. Before that, it is transient (redelivered; nothing happened yet)."""
        try:
            self.deps.publisher.publish_event(self.deps.settings.topics.ops_events, event)
        except Exception as exc:
            if not sent:
                if isinstance(exc, TransientError):
                    raise
                raise TransientError(f"publish failed: {type(exc).__name__}") from exc
            logger.error(  # noqa: TRY400 - the reason is enough; the action keeps the rest
                "rollback of %s sent to Cloud Run (%s) but %s not published: %s",
                service,
                verdict.value,
                event.type.value,
                type(exc).__name__,
            )
            return False
        return True

    def _record_decision(
        self,
        record: store.Recorder,
        trigger: Trigger,
        report: Report,
        decision_id: uuid.UUID | None = None,
    ) -> None:
        """The decision's ``ops.actions`` row; a traffic move's is keyed by its decision
        (write-once: a redelivery resuming the decision never records it twice)."""
        keyed: dict[str, object] = {}
        more: dict[str, object] = {}
        if decision_id is not None:
            keyed["dedupe_key"] = f"rollback:{decision_id}"
            more["decision_id"] = str(decision_id)
        record(
            report.verdict.action_kind,
            report.verdict.action_status,
            service=report.decision.service,
            actor=self.actor,
            detail=self._detail(trigger, report, **more),
            **keyed,
        )

    def _detail(self, trigger: Trigger, report: Report, **more: object) -> dict[str, object]:
        """The ``ops.actions`` detail of a decision (docs/rollback.md): the audit record,
        never read back to decide."""
        return {
            "from": report.decision.from_revision,
            "to": report.decision.to_revision,
            "reason": report.reason,
            "trigger": trigger.kind,
            "trigger_event_id": trigger.event_id,
            "dry_run": report.dry_run,
            "manual": trigger.kind == "manual",
            "forced": trigger.force,
            "event_id": report.event.id,
            "event_type": report.event.type.value,
            "event_published": report.published,
            "serving_before": report.serving_before,
            "serving_after": report.serving_after,
            **more,
        }
