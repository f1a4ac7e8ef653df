"""The rollback decision as pure functions over typed inputs.

The table, in the order it is applied (docs/rollback.md has it with examples):

| trigger | condition | verdict |
|---|---|---|
| smoke | a newer smoke.passed already marked the revision good | skip (superseded) |
| smoke | the failed revision serves no traffic | skip, mark it bad |
| alert | the incident names a revision that serves no traffic | skip |
| alert | no revision label, and no one revision provably served 100 % since before it | fail |
| alert | the incident started before, or longer than the alert window after, the promotion | skip |
| smoke, alert | the anti-flap cap of automatic rollbacks is reached | escalate, mark bad |
| any | no revision is Ready, known-good and older than the failed one | fail, mark bad |
| any | a breaking migration finished after the target was created | freeze, mark bad |
| any | otherwise | rollback to the newest Ready known-good revision, mark bad |

A manual rollback (``sightops rollback``) goes through the same table without the
anti-flap cap, without the "older than" rule and without marking; ``--force`` skips the
health and migration checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

from shared.events import IncidentNotification
from shared.rollback._model import (
    BreakingMigration,
    Decision,
    HealthRecord,
    Policy,
    RevisionInfo,
    ServiceState,
    TrafficItem,
    Trigger,
    Verdict,
    describe_split,
)

#: Incidents carry whole seconds and metrics are aligned to a minute or so: an incident
#: that started this little before a promotion still belongs to the promoted revision.
ALERT_SLACK = timedelta(seconds=60)


def decide(
    trigger: Trigger,
    state: ServiceState,
    health: Mapping[str, HealthRecord],
    breaking: Sequence[BreakingMigration] = (),
    recent_auto_rollbacks: int = 0,
    promoted_at: Mapping[str, datetime] | None = None,
    policy: Policy | None = None,
) -> Decision:
    """What to do about ``trigger`` given everything known right now. No I/O."""
    policy = policy or Policy()
    serving = state.serving()
    service = trigger.service

    def verdict(
        kind: Verdict,
        reason: str,
        *,
        from_revision: str | None = None,
        to_revision: str | None = None,
        mark_bad: str | None = None,
    ) -> Decision:
        return Decision(kind, service, reason, from_revision, to_revision, mark_bad)

    if trigger.kind == "manual":
        return _decide_manual(trigger, state, health, breaking, serving)

    if trigger.kind == "smoke":
        failed = trigger.revision or ""
        known = health.get(failed)
        if (
            known is not None
            and known.health == "good"
            and known.evidence_time is not None
            and known.evidence_time > trigger.evidence_time
        ):
            return verdict(
                Verdict.SKIP,
                f"smoke.failed for {failed} at {_t(trigger.evidence_time)} is older than the "
                f"evidence that marked it good at {_t(known.evidence_time)}; superseded",
                from_revision=failed,
            )
        if serving.get(failed, 0) <= 0:
            return verdict(
                Verdict.SKIP,
                f"{failed} serves no traffic; marked bad",
                from_revision=failed,
                mark_bad=failed,
            )
        reason = f"smoke.failed for {failed} while serving {serving[failed]}% of traffic"
    else:  # alert
        started = trigger.incident_started_at or trigger.evidence_time
        ours = promoted_at or {}
        if trigger.revision is not None:
            if serving.get(trigger.revision, 0) <= 0:
                return verdict(
                    Verdict.SKIP,
                    f"incident {trigger.event_id} is about {trigger.revision}, which serves no "
                    "traffic",
                    from_revision=trigger.revision,
                )
            failed = trigger.revision
        else:
            unlabelled = _unlabelled_incident(trigger, state, ours, started)
            if isinstance(unlabelled, Decision):
                return unlabelled
            failed = unlabelled
        info = state.revision(failed)
        our_move = ours.get(failed)
        if our_move is not None and started < our_move:
            # Our own move is exact: no slack. The incident is older than the moment we
            # put traffic on this revision, so it is about what served before.
            return verdict(
                Verdict.SKIP,
                f"incident {trigger.event_id} started at {_t(started)}, before we moved "
                f"traffic to {failed} at {_t(our_move)}",
                from_revision=failed,
            )
        promoted = _promotion_time(info, our_move)
        if promoted is not None and started < promoted - ALERT_SLACK:
            return verdict(
                Verdict.SKIP,
                f"incident {trigger.event_id} started at {_t(started)}, before {failed} was "
                f"promoted at {_t(promoted)}",
                from_revision=failed,
            )
        if promoted is not None and started - promoted > policy.alert_window:
            return verdict(
                Verdict.SKIP,
                f"incident {trigger.event_id} started {_span(started - promoted)} after "
                f"{failed} was promoted, outside the {_span(policy.alert_window)} alert window",
                from_revision=failed,
            )
        reason = (
            f"auto-rollback incident {trigger.event_id} on {failed} "
            f"({_span(started - promoted) if promoted else 'unknown time'} after promotion)"
        )

    # Automatic triggers only go back: a newer revision (a candidate that passed its tag
    # smoke but was never promoted) is not a rollback target.
    failed_info = state.revision(failed)
    target = (
        newest_known_good(state, health, exclude=failed, created_before=failed_info.create_time)
        if failed_info is not None
        else None
    )
    if recent_auto_rollbacks >= policy.max_per_window:
        return verdict(
            Verdict.ESCALATE,
            f"anti-flap cap reached: {recent_auto_rollbacks} automatic rollbacks of {service} "
            f"in the last {_span(policy.window)} (cap {policy.max_per_window}); traffic not moved",
            from_revision=failed,
            to_revision=target.name if target else None,
            mark_bad=failed,
        )
    if target is None:
        return verdict(
            Verdict.FAIL,
            f"no known-good revision of {service} to roll back to (no Ready revision created "
            f"before {failed} is marked good); traffic not moved",
            from_revision=failed,
            mark_bad=failed,
        )
    blocking = breaking_after(breaking, target)
    if blocking is not None:
        return verdict(
            Verdict.FREEZE,
            f"breaking migration {blocking.label} applied after {target.name} was deployed; "
            "traffic not moved",
            from_revision=failed,
            to_revision=target.name,
            mark_bad=failed,
        )
    return verdict(
        Verdict.ROLLBACK,
        reason,
        from_revision=failed,
        to_revision=target.name,
        mark_bad=failed,
    )


def _decide_manual(
    trigger: Trigger,
    state: ServiceState,
    health: Mapping[str, HealthRecord],
    breaking: Sequence[BreakingMigration],
    serving: Mapping[str, int],
) -> Decision:
    service = trigger.service
    current = state.primary()
    if trigger.target is not None:
        target = state.revision(trigger.target)
        if target is None:
            return Decision(
                Verdict.FAIL, service, f"{trigger.target} is not a revision of {service}", current
            )
    else:
        target = newest_known_good(state, health, exclude=current)
        if target is None:
            return Decision(
                Verdict.FAIL,
                service,
                f"no known-good revision of {service} to roll back to (no Ready revision other "
                f"than {current} is marked good); name one with --to",
                current,
            )
    if serving.get(target.name, 0) >= 100:
        return Decision(
            Verdict.SKIP,
            service,
            f"{target.name} already serves 100% of traffic",
            current,
            target.name,
        )
    if not target.ready:
        # Not a safety check --force could waive: Cloud Run cannot route to it.
        return Decision(
            Verdict.FAIL,
            service,
            f"{target.name} is not Ready; traffic not moved",
            current,
            target.name,
        )
    if not trigger.force:
        known = health.get(target.name)
        if known is None or known.health != "good":
            state_word = known.health if known else "unknown"
            return Decision(
                Verdict.FAIL,
                service,
                f"{target.name} is {state_word}, not known-good; use --force to move anyway",
                current,
                target.name,
            )
        blocking = breaking_after(breaking, target)
        if blocking is not None:
            return Decision(
                Verdict.FREEZE,
                service,
                f"breaking migration {blocking.label} applied after {target.name} was deployed; "
                "traffic not moved (use --force to move anyway)",
                current,
                target.name,
            )
    forced = " (forced)" if trigger.force else ""
    return Decision(
        Verdict.ROLLBACK,
        service,
        f"manual rollback to {target.name}{forced}",
        current,
        target.name,
    )


def newest_known_good(
    state: ServiceState,
    health: Mapping[str, HealthRecord],
    exclude: str | None,
    *,
    created_before: datetime | None = None,
) -> RevisionInfo | None:
    """The newest revision (by create time) that is Ready and marked good (and, with
    ``created_before``, older than that: automatic rollbacks never roll forward)."""
    candidates = [
        rev
        for rev in state.revisions
        if rev.ready
        and rev.name != exclude
        and (created_before is None or rev.create_time < created_before)
        and (known := health.get(rev.name)) is not None
        and known.health == "good"
    ]
    return max(candidates, key=lambda r: (r.create_time, r.name), default=None)


def breaking_after(
    breaking: Sequence[BreakingMigration], target: RevisionInfo
) -> BreakingMigration | None:
    """The most recent breaking migration that finished after ``target`` was created."""
    later = [m for m in breaking if m.finished_at > target.create_time]
    return max(later, key=lambda m: m.finished_at, default=None)


def rollback_traffic(spec: Sequence[TrafficItem], target: str) -> list[TrafficItem]:
    """The new traffic spec: 100 % pinned to ``target``, every tagged entry kept at 0 %.

    Tags are URLs someone relies on (a candidate's tag URL, a ``stable`` tag); keeping them
    at 0 % changes who gets user traffic and nothing else.
    """
    return split_traffic(spec, {target: 100})


def split_traffic(spec: Sequence[TrafficItem], shares: Mapping[str, int]) -> list[TrafficItem]:
    """The new traffic spec: ``shares`` (revision -> percent, summing to 100) pinned by
    revision, every tagged entry kept at 0 % (as :func:`rollback_traffic`, whose 100 %
    pin is the one-revision case; the canary's steps are the others)."""
    if sum(shares.values()) != 100 or any(p < 0 for p in shares.values()):
        raise ValueError(f"traffic shares must be >= 0 and add up to 100: {dict(shares)}")
    tagged = [
        TrafficItem(item.type, item.revision if item.type == "REVISION" else "", 0, item.tag)
        for item in spec
        if item.tag
    ]
    pinned = [
        TrafficItem("REVISION", revision, percent)
        for revision, percent in sorted(shares.items(), key=lambda kv: (-kv[1], kv[0]))
        if percent > 0
    ]
    return [*pinned, *tagged]


def incident_trigger(notification: IncidentNotification, received_at: datetime) -> Trigger | str:
    """The trigger an incident notification stands for, or why it is not one.

    Only an open incident of a policy labelled ``auto_rollback=true`` on a
    ``cloud_run_revision`` resource counts; test notifications never do.
    """
    incident = notification.incident
    if notification.is_test:
        return "test notification"
    if not incident.is_open:
        return f"incident {incident.incident_id} is {incident.state or 'of unknown state'}"
    if not incident.auto_rollback:
        return f"incident {incident.incident_id}: policy is not labelled auto_rollback=true"
    service = incident.cloud_run_service
    if service is None:
        return f"incident {incident.incident_id} is not about a Cloud Run revision"
    started = incident.started_at or received_at
    return Trigger(
        kind="alert",
        service=service,
        event_id=incident.incident_id,
        evidence_time=started,
        revision=incident.cloud_run_revision,
        incident_started_at=incident.started_at,
    )


def _unlabelled_incident(
    trigger: Trigger, state: ServiceState, ours: Mapping[str, datetime], started: datetime
) -> str | Decision:
    """The revision an incident without a revision label is about, or why we cannot tell.

    Only a revision that is shown to have served 100 % since before the incident started
    is accused: exactly one revision serves, and the service's traffic last changed
    (Cloud Run's ``update_time``, or our own last move, whichever is later; no slack)
    before the incident started. Anything else is a guess (a split, a promotion or a
    rollback while the incident was already running), so traffic is not moved and a
    human is asked to look (``failed``, nothing marked).
    """
    service, incident = trigger.service, trigger.event_id

    def cannot_tell(why: str, revision: str | None = None) -> Decision:
        return Decision(
            Verdict.FAIL,
            service,
            f"incident {incident} has no revision label and {why}; not guessing which "
            "revision it is about, traffic not moved",
            from_revision=revision,
        )

    serving = state.serving()
    if not serving:
        return Decision(Verdict.SKIP, service, f"no revision of {service} serves traffic")
    sole = state.sole_server()
    if sole is None:
        return cannot_tell(f"traffic is split ({describe_split(serving)})")
    if state.update_time is None:
        return cannot_tell(f"Cloud Run does not say when {service} last changed", sole)
    last_change = max([state.update_time, *ours.values()])
    if started <= last_change:
        return cannot_tell(
            f"started at {_t(started)}, not after the last traffic change of {service} at "
            f"{_t(last_change)} (now {sole} 100%)",
            sole,
        )
    return sole


def _promotion_time(info: RevisionInfo | None, our_move: datetime | None) -> datetime | None:
    """When the revision started serving: our own traffic move to it if we made one, else
    its creation time (a lower bound: the window then closes early, never late)."""
    times = [t for t in (info.create_time if info else None, our_move) if t is not None]
    return max(times) if times else None


def _t(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds % 3600 == 0 and seconds >= 3600:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds >= 60:
        return f"{seconds // 60}min"
    if seconds >= 120:
        return f"{seconds // 60}min {seconds % 60}s"
    return f"{seconds}s"
