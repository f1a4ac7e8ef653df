"""Release metrics from the ledger: a pure function over ``ops.actions`` facts.

The DORA four keys as GoogleCloudPlatform/fourkeys computes them (median lead time,
deployment frequency buckets, change failure rate, median time to restore) and the seed's
targets (deployment success rate, rollback rate, MTTR), from the rows sight-ops already
writes: no ETL, no second store. :mod:`shared.kpi.release_report` reads the facts with
a few SQL statements; everything here is arithmetic on them, so a decision table of
known answers pins every definition (docs/metrics.md says each one in words). Alert noise
(likely false positives per alert policy and month) is computed here too.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Literal

from shared.events import ReleaseReport, ServiceReleaseMetrics
from shared.events._ops import (
    AlertNoise,
    ChangeFailure,
    DeploymentFrequency,
    MetricDurations,
    MetricRatio,
    PolicyNoise,
    TargetCheck,
)

#: The seed's targets (docs/metrics.md): (name, comparison, threshold).
TARGETS: tuple[tuple[str, Literal[">=", "<"], float], ...] = (
    ("deployment_success_rate", ">=", 0.99),
    ("rollback_rate", "<", 0.01),
    ("mttr_s", "<", 15 * 60.0),
)
DEFAULT_FAILURE_WINDOW = timedelta(hours=24)
Cause = Literal["rolled_back", "frozen", "incident"]


# ---- facts: one row of the ledger each ---------------------------------------------


@dataclass(frozen=True)
class ReleaseFact:
    """A ``kind='release'`` row: ``status`` deployed | promoted | failed, at ``at``."""

    service: str
    status: str
    at: datetime
    release_id: str | None = None
    revision: str | None = None
    build_id: str | None = None


@dataclass(frozen=True)
class RollbackFact:
    """A ``rollback`` / ``freeze`` / ``escalation`` row of the rollback function.

    ``from_revision`` is the revision traffic was (or would have been) moved away from;
    ``decided_at`` is when the decision was taken (``ops.rollback_decisions.created_at``,
    traffic moves only): for a smoke trigger, the moment the failure was acted on."""

    service: str
    kind: str  # rollback | freeze | escalation
    status: str  # succeeded | frozen | failed | skipped
    at: datetime
    from_revision: str | None = None
    trigger: str | None = None  # smoke | alert | manual
    trigger_event_id: str | None = None
    dry_run: bool = False
    manual: bool = False
    decided_at: datetime | None = None

    @property
    def moved_traffic(self) -> bool:
        return self.kind == "rollback" and self.status == "succeeded" and not self.dry_run

    @property
    def frozen(self) -> bool:
        return self.kind in {"freeze", "escalation"} and not self.dry_run


@dataclass(frozen=True)
class IncidentFact:
    """A ``kind='incident'`` row: one state (``open`` / ``closed``) of one incident."""

    incident_id: str
    state: str
    at: datetime
    service: str | None = None
    revision: str | None = None
    auto_rollback: bool = False
    started_at: datetime | None = None
    ended_at: datetime | None = None
    policy: str | None = None  # the alert policy's display name


@dataclass(frozen=True)
class ActionFact:
    """A row that may be someone (or something) acting on a service: a rollback decision,
    a canary decision, a promotion, or anything an operator did (``actor`` not
    ``automation``). :attr:`acted` says whether it acted; alert noise asks whether
    anything did while an incident was open. Rollback acted unless it skipped (it moved
    traffic, failed to, or froze and escalated to a human); dry runs never act."""

    service: str
    kind: str
    status: str
    at: datetime
    actor: str = "automation"
    dry_run: bool = False

    @property
    def acted(self) -> bool:
        if self.dry_run:
            return False
        if self.actor != "automation":
            return True  # sightops rollback, revisions --mark-*, canary promote/rollback
        if self.kind in {"rollback", "freeze", "escalation"}:
            return self.status != "skipped"
        if self.kind == "release":
            return self.status == "promoted"
        return self.kind == "canary"


@dataclass(frozen=True)
class NoiseRule:
    """What counts as a likely false positive, and how many a policy may have a month:
    ``KPI__NOISE_CLOSE_WITHIN_S`` and ``KPI__NOISE_MAX_PER_MONTH`` (the seed's 5)."""

    close_within: timedelta = timedelta(minutes=15)
    max_per_month: int = 5


@dataclass(frozen=True)
class LedgerFacts:
    """What the report is computed from; ``build_created`` maps a build id to when the
    CI build was created (migrate's ``build_created_at``, else its run's start);
    ``actions`` are read for alert noise only."""

    releases: Sequence[ReleaseFact] = ()
    rollbacks: Sequence[RollbackFact] = ()
    incidents: Sequence[IncidentFact] = ()
    build_created: Mapping[str, datetime] = field(default_factory=dict)
    actions: Sequence[ActionFact] = ()


# ---- the computation ---------------------------------------------------------------


def compute_report(
    facts: LedgerFacts,
    *,
    since: datetime,
    until: datetime,
    computed_at: datetime,
    service: str | None = None,
    failure_window: timedelta = DEFAULT_FAILURE_WINDOW,
    noise: NoiseRule | None = None,
) -> ReleaseReport:
    """Per service and overall, for facts in ``[since, until)``; ``service`` narrows the
    report to one service (listed even without any fact, so its Nones say "no data").
    Alert noise counts whole calendar months (:func:`compute_alert_noise`)."""
    if until <= since:
        raise ValueError("the window must end after it starts")
    names = [service] if service else _services(facts, since, until)
    per_service = [
        _metrics(facts, name, since, until, failure_window) for name in sorted(set(names))
    ]
    overall = _metrics(facts, service, since, until, failure_window)
    return ReleaseReport(
        since=since,
        until=until,
        days=round((until - since).total_seconds() / 86400, 4),
        service=service,
        failure_window_h=round(failure_window.total_seconds() / 3600, 4),
        computed_at=computed_at,
        services=per_service,
        overall=overall,
        alert_noise=compute_alert_noise(
            facts, since=since, until=until, service=service, rule=noise or NoiseRule()
        ),
    )


def _in(at: datetime, since: datetime, until: datetime) -> bool:
    return since <= at < until


def _services(facts: LedgerFacts, since: datetime, until: datetime) -> list[str]:
    found = {r.service for r in facts.releases if _in(r.at, since, until)}
    found |= {r.service for r in facts.rollbacks if _in(r.at, since, until)}
    found |= {i.service for i in facts.incidents if i.service and _in(i.at, since, until)}
    return sorted(found)


def _metrics(
    facts: LedgerFacts,
    service: str | None,
    since: datetime,
    until: datetime,
    failure_window: timedelta,
) -> ServiceReleaseMetrics:
    """One service's metrics (``service`` None: every service, incidents without one too)."""

    def ours(name: str | None) -> bool:
        return service is None or name == service

    releases = [r for r in facts.releases if ours(r.service) and _in(r.at, since, until)]
    promoted = _promotions(releases)
    failed = [r for r in releases if r.status == "failed"]
    rollbacks = [r for r in facts.rollbacks if ours(r.service) and r.at < until]
    moves = [r for r in rollbacks if r.moved_traffic and r.at >= since]
    incidents = [i for i in facts.incidents if ours(i.service) and i.at < until]
    failures = _change_failures(promoted, rollbacks, _opened(incidents), failure_window)
    restore = _restore_times(moves, _opened(incidents))
    success = _ratio(len(promoted), len(promoted) + len(failed))
    rollback_rate = _ratio(len(moves), len(promoted))
    durations = _durations(restore)
    return ServiceReleaseMetrics(
        service=service,
        promoted=len(promoted),
        failed=len(failed),
        rollbacks=len(moves),
        deployment_frequency=_frequency([r.at for r in promoted], since, until),
        lead_time=_durations(_lead_times(promoted, facts.build_created)),
        change_failure_rate=_ratio(len(failures), len(promoted)),
        time_to_restore=durations,
        incident_duration=_durations(_incident_durations(incidents, since, until)),
        deployment_success_rate=success,
        rollback_rate=rollback_rate,
        mttr_s=durations.mean_s,
        failures=failures,
        targets=_targets(
            {
                "deployment_success_rate": success.value,
                "rollback_rate": rollback_rate.value,
                "mttr_s": durations.mean_s,
            }
        ),
    )


def _promotions(releases: Iterable[ReleaseFact]) -> list[ReleaseFact]:
    """Promoted releases, once per revision (a redelivered or re-published event about
    the same revision is the same deployment), oldest first."""
    seen: set[tuple[str, str]] = set()
    out: list[ReleaseFact] = []
    for release in sorted(releases, key=lambda r: r.at):
        if release.status != "promoted":
            continue
        if release.revision is not None:
            if (release.service, release.revision) in seen:
                continue
            seen.add((release.service, release.revision))
        out.append(release)
    return out


def _ratio(numerator: int, denominator: int) -> MetricRatio:
    value = round(numerator / denominator, 4) if denominator else None
    return MetricRatio(value=value, numerator=numerator, denominator=denominator)


def _durations(seconds: Sequence[float]) -> MetricDurations:
    if not seconds:
        return MetricDurations()
    return MetricDurations(
        median_s=round(statistics.median(seconds), 3),
        mean_s=round(statistics.fmean(seconds), 3),
        samples=len(seconds),
    )


def _frequency(times: Sequence[datetime], since: datetime, until: datetime) -> DeploymentFrequency:
    """Per week over the window, and fourkeys' bucket over its weeks, counted back from
    its end (a 28-day window is four whole weeks; the oldest may be partial): *daily* when
    the median week has deploys on 3 days or more, *weekly* when most weeks have one,
    *monthly* when the median week's month (of the week's start) has a week with one,
    *yearly* otherwise; None without any deploy."""
    week = timedelta(days=7)
    days = {t.astimezone(UTC).date() for t in times}
    result = DeploymentFrequency(
        per_week=round(len(times) / ((until - since) / week), 4), deploy_days=len(days)
    )
    if not times:
        return result
    count = max(1, math.ceil((until - since) / week))
    starts = [max(since, until - (count - k) * week) for k in range(count)]  # oldest first
    deploy_days: list[set[date]] = [set() for _ in starts]
    for at in times:
        deploy_days[count - 1 - min(int((until - at) / week), count - 1)].add(
            at.astimezone(UTC).date()
        )
    days_per_week = [len(d) for d in deploy_days]
    deployed = [1 if n else 0 for n in days_per_week]
    per_month: dict[tuple[int, int], int] = {}
    for start, flag in zip(starts, deployed, strict=True):
        per_month[(start.year, start.month)] = per_month.get((start.year, start.month), 0) + flag
    monthly = [per_month[(start.year, start.month)] for start in starts]
    if statistics.median(days_per_week) >= 3:
        bucket = "daily"
    elif statistics.median(deployed) >= 1:
        bucket = "weekly"
    elif statistics.median(monthly) >= 1:
        bucket = "monthly"
    else:
        bucket = "yearly"
    return result.model_copy(update={"bucket": bucket})


def _lead_times(
    promoted: Iterable[ReleaseFact], build_created: Mapping[str, datetime]
) -> list[float]:
    """Build created -> promoted, per promotion whose build migrate recorded; like fourkeys,
    only positive spans count (a clock-skewed or replayed record is not a lead time)."""
    out = []
    for release in promoted:
        created = build_created.get(release.build_id or "")
        if created is None:
            continue
        span = (release.at - created).total_seconds()
        if span > 0:
            out.append(span)
    return out


def _opened(incidents: Iterable[IncidentFact]) -> dict[str, IncidentFact]:
    """Each incident once, as first reported open (its start time when known)."""
    out: dict[str, IncidentFact] = {}
    for incident in sorted(incidents, key=lambda i: (i.state != "open", i.at)):
        out.setdefault(incident.incident_id, incident)
    return out


def _start(incident: IncidentFact) -> datetime:
    return incident.started_at or incident.at


def _change_failures(
    promoted: Sequence[ReleaseFact],
    rollbacks: Sequence[RollbackFact],
    incidents: Mapping[str, IncidentFact],
    failure_window: timedelta,
) -> list[ChangeFailure]:
    """Promotions that were rolled back or frozen (traffic moved, or would have been,
    away from their revision after the promotion) or followed, within ``failure_window``,
    by an ``auto_rollback`` incident on their service: the incident's own revision when it
    names one, else the latest promotion before it started. One cause per promotion, the
    earliest."""
    causes: dict[int, tuple[datetime, ChangeFailure]] = {}

    def blame(index: int, when: datetime, cause: Cause, evidence: str | None) -> None:
        release = promoted[index]
        if index in causes and causes[index][0] <= when:
            return
        causes[index] = (
            when,
            ChangeFailure(
                release_id=release.release_id,
                revision=release.revision,
                promoted_at=release.at,
                cause=cause,
                evidence=evidence,
            ),
        )

    by_revision: dict[tuple[str, str | None], list[int]] = {}
    by_service: dict[str, list[int]] = {}
    for index, release in enumerate(promoted):
        by_revision.setdefault((release.service, release.revision), []).append(index)
        by_service.setdefault(release.service, []).append(index)
    for rollback in rollbacks:
        if not (rollback.moved_traffic or rollback.frozen) or rollback.from_revision is None:
            continue
        cause: Cause = "rolled_back" if rollback.moved_traffic else "frozen"
        for index in by_revision.get((rollback.service, rollback.from_revision), ()):
            if rollback.at >= promoted[index].at:
                blame(index, rollback.at, cause, rollback.trigger_event_id)
    for incident in incidents.values():
        if not incident.auto_rollback or incident.service is None:
            continue
        started = _start(incident)
        candidates = [
            index
            for index in by_service.get(incident.service, ())
            if promoted[index].at <= started <= promoted[index].at + failure_window
            and incident.revision in {None, promoted[index].revision}
        ]
        if candidates:
            latest = max(candidates, key=lambda i: promoted[i].at)
            blame(latest, started, "incident", incident.incident_id)
    return [failure for _, (_, failure) in sorted(causes.items())]


def _restore_times(
    moves: Iterable[RollbackFact], incidents: Mapping[str, IncidentFact]
) -> list[float]:
    """Failure detected -> traffic on a good revision, per automatic rollback: detected
    is the incident's start for an alert, the decision's time for a smoke failure (the
    smoke event's own time is not in the ledger); manual rollbacks have no detection."""
    out = []
    for move in moves:
        if move.manual:
            continue
        detected: datetime | None = move.decided_at
        incident = incidents.get(move.trigger_event_id or "")
        if move.trigger == "alert" and incident is not None:
            detected = _start(incident)
        if detected is None:
            continue
        out.append(max(0.0, (move.at - detected).total_seconds()))
    return out


def _incident_durations(
    incidents: Sequence[IncidentFact], since: datetime, until: datetime
) -> list[float]:
    """Open -> closed, per incident that started in the window and closed before its end
    (fourkeys' time to restore: ``time_resolved - time_created``)."""
    closed: dict[str, IncidentFact] = {}
    for incident in sorted(incidents, key=lambda i: i.at):
        if incident.state == "closed":
            closed.setdefault(incident.incident_id, incident)
    out = []
    for incident_id, first in _opened(incidents).items():
        end = closed.get(incident_id)
        started = _start(first)
        if end is None or not _in(started, since, until):
            continue
        ended = end.ended_at or end.at
        if end.started_at is not None and first.started_at is None:
            started = end.started_at
        out.append(max(0.0, (ended - started).total_seconds()))
    return out


def _targets(values: Mapping[str, float | None]) -> list[TargetCheck]:
    checks = []
    for name, op, threshold in TARGETS:
        value = values[name]
        ok = None if value is None else (value >= threshold if op == ">=" else value < threshold)
        checks.append(TargetCheck(name=name, op=op, threshold=threshold, value=value, ok=ok))
    return checks


# ---- alert noise ---------------------------------------------------------------------


def month_start(at: datetime) -> datetime:
    """The first instant of ``at``'s calendar month, UTC."""
    utc = at.astimezone(UTC)
    return utc.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def _next_month(start: datetime) -> datetime:
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


UNNAMED_POLICY = "(unnamed policy)"


def compute_alert_noise(
    facts: LedgerFacts,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    rule: NoiseRule | None = None,
) -> AlertNoise:
    """Likely false positives per alert policy and calendar month (UTC).

    Every month the window ``[since, until)`` touches is counted from its first day (a
    monthly target needs whole months: the weekly digest shows the month so far), up to
    ``until``. An incident counts in the month it started; it is a likely false positive
    when it closed by itself within ``rule.close_within`` of its start and nothing
    :attr:`ActionFact.acted` on its service from its start to its end (inclusive). A
    (policy, month) with more than ``rule.max_per_month`` is over the target."""
    rule = rule or NoiseRule()
    first = month_start(since)

    def ours(name: str | None) -> bool:
        return service is None or name == service

    rows = [i for i in facts.incidents if ours(i.service) and i.at < until]
    closed: dict[str, IncidentFact] = {}
    for row in sorted(rows, key=lambda i: i.at):
        if row.state == "closed":
            closed.setdefault(row.incident_id, row)
    acted: dict[str, list[datetime]] = {}
    for action in facts.actions:
        if action.acted and ours(action.service):
            acted.setdefault(action.service, []).append(action.at)
    counts: dict[tuple[datetime, str], list[int]] = {}  # (month, policy) -> [all, likely]
    for incident_id, opened in _opened(rows).items():
        end = closed.get(incident_id)
        started = _start(opened)
        if end is not None and end.started_at is not None and opened.started_at is None:
            started = end.started_at
        if not first <= started < until:
            continue
        policy = opened.policy or (end.policy if end else None) or UNNAMED_POLICY
        tally = counts.setdefault((month_start(started), policy), [0, 0])
        tally[0] += 1
        if end is None:
            continue  # still open (or its close is not in the ledger yet)
        ended = end.ended_at or end.at
        if ended - started > rule.close_within:
            continue
        name = opened.service or end.service
        if any(started <= at <= ended for at in acted.get(name or "", ())):
            continue
        tally[1] += 1
    return AlertNoise(
        close_within_s=rule.close_within.total_seconds(),
        max_per_month=rule.max_per_month,
        counted_from=first,
        policies=[
            PolicyNoise(
                policy=policy,
                month=f"{month:%Y-%m}",
                incidents=incidents,
                likely_false_positives=likely,
                month_complete=_next_month(month) <= until,
                over_target=likely > rule.max_per_month,
            )
            for (month, policy), (incidents, likely) in sorted(counts.items())
        ],
    )
