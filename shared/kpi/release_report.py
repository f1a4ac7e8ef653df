"""Release metrics read from the ledger, cached, and published weekly (docs/metrics.md).

- :func:`load_facts`: five SQL statements over ``ops.actions`` (and the rollback journal
  for decision times), nothing else; :func:`shared.kpi.release_metrics.compute_report`
  does the arithmetic, alert noise included.
- :class:`ReleaseMetricsService`: the report of one (service, window) through the KPI
  cache (``GET /v1/ops/metrics``), computed in the KPI computation slots.
- :func:`handle_report_request`: kpi_refresh's answer to ``sight.ops.report.requested``
  (Cloud Scheduler, weekly): compute, refresh the cache, publish
  ``sight.ops.report.weekly`` to ``ops-events`` once per ISO week and scope.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text

from shared.kpi.release_metrics import (
    DEFAULT_FAILURE_WINDOW,
    ActionFact,
    IncidentFact,
    LedgerFacts,
    NoiseRule,
    ReleaseFact,
    RollbackFact,
    compute_report,
    month_start,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

    from shared.events import ReleaseReport, ReportRequested
    from shared.kpi.cache import CacheResult, SingleFlightCache
    from shared.runtime import Context, Deps, Outcome
    from shared.settings import Settings

__all__ = [
    "DEFAULT_DAYS",
    "ReleaseMetricsService",
    "ReportQuery",
    "compute_release_report",
    "handle_report_request",
    "iso_week",
    "load_facts",
    "noise_rule",
    "parse_report_request",
    "release_metrics_service",
    "report_from",
]

DEFAULT_DAYS = 28
MAX_DAYS = 366
#: Incidents opened this long before the window are still read: a rollback inside the
#: window may restore a failure detected before it. (Alert noise reads from the first day
#: of the window's first month, which may reach further back.)
INCIDENT_LOOKBACK = timedelta(days=7)
#: The rows alert noise reads: whatever may have acted on a service while an incident was
#: open (``ActionFact.acted`` decides which did).
NOISE_ACTION_KINDS = ("rollback", "freeze", "escalation", "release", "canary", "health")

# Every statement is bounded by kind and started_at (ix_actions_kind_started_at). For
# release, rollback and incident rows started_at is the fact's own time (docs/metrics.md).
_SERVICE = "(CAST(:service AS text) IS NULL OR a.service = CAST(:service AS text))"
_RELEASES = text(
    "SELECT a.service, a.status, a.started_at AS at, a.release_id,"
    " a.detail->>'revision' AS revision, a.detail->>'build_id' AS build_id"
    " FROM ops.actions a WHERE a.kind = 'release'"
    f" AND a.started_at >= :since AND a.started_at < :until AND {_SERVICE}"
)
_ROLLBACKS = text(
    "SELECT a.kind, a.status, a.service, a.started_at AS at,"
    " a.detail->>'from' AS from_revision, a.detail->>'trigger' AS trigger,"
    " a.detail->>'trigger_event_id' AS trigger_event_id,"
    " COALESCE(a.detail->'dry_run' = 'true'::jsonb, false) AS dry_run,"
    " COALESCE(a.detail->'manual' = 'true'::jsonb, false) AS manual,"
    " d.created_at AS decided_at"
    " FROM ops.actions a LEFT JOIN ops.rollback_decisions d"
    " ON CAST(d.decision_id AS text) = a.detail->>'decision_id'"
    " WHERE a.kind IN ('rollback', 'freeze', 'escalation') AND a.service IS NOT NULL"
    f" AND a.started_at >= :since AND a.started_at < :until AND {_SERVICE}"
)
_INCIDENTS = text(
    "SELECT a.status, a.service, a.started_at AS at, a.detail->>'incident_id' AS incident_id,"
    " a.detail->>'revision' AS revision, a.detail->>'policy_name' AS policy,"
    " COALESCE(a.detail->'auto_rollback' = 'true'::jsonb, false) AS auto_rollback,"
    " a.detail->>'started_at' AS incident_started, a.detail->>'ended_at' AS incident_ended"
    " FROM ops.actions a WHERE a.kind = 'incident' AND a.detail ? 'incident_id'"
    f" AND a.started_at >= :lookback AND a.started_at < :until AND {_SERVICE}"
)
_ACTIONS = text(
    "SELECT a.kind, a.status, a.service, a.started_at AS at, a.actor,"
    " COALESCE(a.detail->'dry_run' = 'true'::jsonb, false) AS dry_run"
    " FROM ops.actions a WHERE a.kind IN :kinds AND a.service IS NOT NULL"
    f" AND a.started_at >= :first AND a.started_at < :until AND {_SERVICE}"
).bindparams(bindparam("kinds", expanding=True))
# migrate's run rows are keyed migrate:<build id> (unique index): one lookup per build.
_BUILDS = text(
    "SELECT dedupe_key, started_at, detail->>'build_created_at' AS build_created_at"
    " FROM ops.actions WHERE kind = 'migration' AND dedupe_key IN :keys"
).bindparams(bindparam("keys", expanding=True))


def _time(value: Any) -> datetime | None:
    """A ledger time: a timestamptz column, or an ISO string from a detail."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def load_facts(
    conn: Connection, since: datetime, until: datetime, service: str | None = None
) -> LedgerFacts:
    """The ledger rows a report of ``[since, until)`` reads."""
    window = {"since": since, "until": until, "service": service}
    first = month_start(since)  # alert noise counts whole months
    releases = [
        ReleaseFact(r.service, r.status, r.at, r.release_id, r.revision, r.build_id)
        for r in conn.execute(_RELEASES, window)
    ]
    rollbacks = [
        RollbackFact(
            r.service,
            r.kind,
            r.status,
            r.at,
            from_revision=r.from_revision,
            trigger=r.trigger,
            trigger_event_id=r.trigger_event_id,
            dry_run=bool(r.dry_run),
            manual=bool(r.manual),
            decided_at=r.decided_at,
        )
        for r in conn.execute(_ROLLBACKS, window)
    ]
    incidents = [
        IncidentFact(
            r.incident_id,
            r.status,
            r.at,
            service=r.service,
            revision=r.revision,
            auto_rollback=bool(r.auto_rollback),
            started_at=_time(r.incident_started),
            ended_at=_time(r.incident_ended),
            policy=r.policy,
        )
        for r in conn.execute(
            _INCIDENTS, {**window, "lookback": min(since - INCIDENT_LOOKBACK, first)}
        )
    ]
    actions = [
        ActionFact(r.service, r.kind, r.status, r.at, r.actor, bool(r.dry_run))
        for r in conn.execute(
            _ACTIONS, {**window, "first": first, "kinds": list(NOISE_ACTION_KINDS)}
        )
    ]
    builds: dict[str, datetime] = {}
    keys = sorted({f"migrate:{r.build_id}" for r in releases if r.build_id})
    if keys:
        for row in conn.execute(_BUILDS, {"keys": keys}):
            created = _time(row.build_created_at) or row.started_at
            builds[str(row.dedupe_key).removeprefix("migrate:")] = created
    return LedgerFacts(releases, rollbacks, incidents, builds, actions)


def report_from(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    now: datetime,
    service: str | None = None,
    failure_window: timedelta = DEFAULT_FAILURE_WINDOW,
    noise: NoiseRule | None = None,
) -> ReleaseReport:
    """The report of ``[since, until)`` from the ledger, on an open connection."""
    return compute_report(
        load_facts(conn, since, until, service),
        since=since,
        until=until,
        computed_at=now,
        service=service,
        failure_window=failure_window,
        noise=noise,
    )


def noise_rule(settings: Settings) -> NoiseRule:
    """The alert noise rule the settings say (``KPI__NOISE_*``, docs/metrics.md)."""
    return NoiseRule(
        close_within=timedelta(seconds=settings.kpi.noise_close_within_s),
        max_per_month=settings.kpi.noise_max_per_month,
    )


def compute_release_report(engine: Engine, **window: Any) -> ReleaseReport:
    """:func:`report_from` in a snapshot of its own (REPEATABLE READ): five statements,
    one state of the ledger."""
    from shared.db import is_transient
    from shared.errors import TransientError

    try:
        with engine.connect() as raw:
            conn = raw.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                return report_from(conn, **window)
    except Exception as exc:
        if is_transient(exc):
            raise TransientError(f"database unavailable: {type(exc).__name__}") from exc
        raise


@dataclass(frozen=True)
class ReportQuery:
    """What a report is about: one service or all, the last ``days`` days, and how long
    after a promotion an ``auto_rollback`` incident still counts against it."""

    service: str | None = None
    days: int = DEFAULT_DAYS
    failure_window_h: float = DEFAULT_FAILURE_WINDOW.total_seconds() / 3600

    @property
    def scope(self) -> str:
        return self.service or "all"

    def key(self) -> str:
        """The cache key: one entry per (service, window, failure window)."""
        return f"{self.scope}:{self.days}d:{self.failure_window_h:g}h"

    def window(self, now: datetime, noise: NoiseRule | None = None) -> dict[str, Any]:
        """The last ``days`` days up to ``now``, as :func:`report_from` takes them."""
        return {
            "since": now - timedelta(days=self.days),
            "until": now,
            "now": now,
            "service": self.service,
            "failure_window": timedelta(hours=self.failure_window_h),
            "noise": noise,
        }


class ReleaseMetricsService:
    """Release reports through the KPI cache; one per process (:func:`release_metrics_service`)."""

    def __init__(self, deps: Deps) -> None:
        from shared.kpi.cache import BytesCodec, SingleFlightCache

        self.deps = deps
        config = deps.settings.kpi
        self.cache: SingleFlightCache[bytes] = SingleFlightCache(
            deps.redis,
            BytesCodec(),
            config,
            name="release_metrics",
            prefix=f"{config.key_prefix}:release:s1",
            metrics=deps.metrics,
            redis_retry_s=deps.settings.redis_retry_s,
        )

    def report(self, query: ReportQuery) -> ReleaseReport:
        """Computed now, from the ledger: the last ``query.days`` days up to the clock."""
        window = query.window(self.deps.clock(), noise_rule(self.deps.settings))
        return compute_release_report(self.deps.engine, **window)

    def _compute(self, query: ReportQuery) -> bytes:
        from shared.kpi.service import kpi_service

        return kpi_service(self.deps).bounded(lambda: self.report(query).model_dump_json().encode())

    def get(self, query: ReportQuery) -> CacheResult[bytes]:
        """The report's JSON through the cache (``OverloadedError`` when no slot is free)."""
        return self.cache.get(query.key(), lambda: self._compute(query))

    def refresh(self, report: ReleaseReport, query: ReportQuery) -> bool:
        """Store a report computed elsewhere (the digest's) as the query's entry; False
        when Redis is down or another caller is computing it (it stores its own)."""
        from shared.kpi.cache import CacheUnavailableError

        payload = report.model_dump_json().encode()
        try:
            return self.cache.refresh(query.key(), lambda: payload) is not None
        except CacheUnavailableError:
            return False


def release_metrics_service(deps: Deps) -> ReleaseMetricsService:
    """The one service of these deps (its cache holds the in-process flights)."""
    return deps.service(ReleaseMetricsService)


# ---- the weekly digest (kpi_refresh) -----------------------------------------------

#: Namespace of digest event ids: one id per (week, scope), so a second publication of
#: the same digest is the same event to notify (deduplicated there too).
_DIGEST_IDS = uuid.UUID("1b0e7c52-6a3d-4f8e-9d21-8c4b5a7e3f90")


def iso_week(at: datetime) -> str:
    year, week, _ = at.isocalendar()
    return f"{year}-W{week:02d}"


def parse_report_request(data: bytes, attributes: Mapping[str, str]) -> ReportRequested:
    """Our own event (``id`` and ``time`` attributes: parsed strictly), or Cloud
    Scheduler's fixed message (read leniently: the data alone, ``{}`` or empty meaning
    the defaults), like a refresh request (docs/kpi.md, "Refresh messages")."""
    from shared.events import ReportRequested, parse_scheduled

    return parse_scheduled(data, attributes, ReportRequested)


def handle_report_request(event: ReportRequested, ctx: Context) -> Outcome:
    """Record the week's digest (write-once), compute it, refresh the cache and publish
    ``sight.ops.report.weekly``. A failed publish is transient: the record rolls back
    with the delivery and the redelivery publishes under the same event id."""
    from shared.errors import TransientError
    from shared.events import EventType, OpsEvent, WeeklyReleaseReport
    from shared.runtime import Outcome, write_action

    deps = ctx.deps
    query = ReportQuery(event.service, event.days, event.failure_window_h)
    now = deps.clock()
    week = iso_week(now)
    key = f"report.weekly:{week}:{query.key()}"
    event_id = str(uuid.uuid5(_DIGEST_IDS, key))
    service = release_metrics_service(deps)
    report = report_from(ctx.conn, **query.window(now, noise_rule(deps.settings)))
    cached = service.refresh(report, query)
    failing = [t.name for t in report.overall.targets if t.ok is False]
    noise = report.alert_noise
    noisy = sorted({p.policy for p in noise.flagged}) if noise else []
    row = write_action(
        ctx.conn,
        kind="report",
        status="published",
        now=now,
        service=query.service,
        trigger_event_id=ctx.message.event_id,
        detail={
            "week": week,
            "days": query.days,
            "failure_window_h": query.failure_window_h,
            "event_id": event_id,
            "promoted": report.overall.promoted,
            "targets_failing": failing,
            "noisy_policies": noisy,
        },
        dedupe_key=key,
        on_conflict="ignore",
    )
    if row is None:
        return Outcome.skipped(
            f"the {week} release report ({query.scope}, {query.days} days) is already published",
            week=week,
            cached=cached,
        )
    digest = OpsEvent.new(
        EventType.REPORT_WEEKLY,
        WeeklyReleaseReport(week=week, report=report),
        source="kpi_refresh",
        clock=deps.clock,
    ).model_copy(update={"id": event_id})
    try:
        deps.publisher.publish_event(deps.settings.topics.ops_events, digest)
    except Exception as exc:
        if isinstance(exc, TransientError):
            raise
        raise TransientError(f"publish failed: {type(exc).__name__}") from exc
    return Outcome.handled(
        f"published the {week} release report ({query.scope}, {query.days} days)",
        week=week,
        report_event_id=event_id,
        promoted=report.overall.promoted,
        targets_failing=len(failing),
        cached=cached,
    )
