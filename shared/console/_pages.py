"""What each page shows: the reads behind it, as a template context (docs/console.md).

Every page reads the ledger in one ``READ ONLY`` transaction. Cloud Run (the traffic
split) and Pub/Sub (the dead-letter holds) are read with the console's own short timeout;
when either cannot be read the page says so where the data would be, and still shows
everything else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from shared.console import _queries as q
from shared.console._charts import Chart, bar_chart, count, minutes, percent
from shared.console._timeline import Entry, canary_steps, timeline
from shared.console._undo import Undo, undo_for
from shared.errors import SightOpsError

if TYPE_CHECKING:
    from shared.dlq import DeadLetter
    from shared.rollback import CloudRun, ServiceState
    from shared.runtime import Deps

logger = logging.getLogger("sightops.console")

MAX_DAYS = 366
DEFAULT_DAYS = 28
_SERVICE_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-")


class BadQuery(ValueError):
    """A query parameter the page cannot use; the message says which and why."""


# ---- query parameters -------------------------------------------------------------------


def service_param(value: str | None) -> str | None:
    """A Cloud Run service name, or None for every service."""
    if not value:
        return None
    if len(value) > 63 or not set(value) <= _SERVICE_CHARS or not value[0].isalpha():
        raise BadQuery("service must be a Cloud Run service name (lowercase letters, digits, -)")
    return value


def _day(value: str, name: str) -> datetime:
    try:
        if "T" in value:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
        return datetime.combine(date.fromisoformat(value), time(), UTC)
    except ValueError:
        raise BadQuery(f"{name} must be a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM)") from None


@dataclass(frozen=True)
class Window:
    """``[since, until)``: from ``since``/``until`` (dates: whole days, ``until`` inclusive)
    or the last ``days`` days up to now."""

    since: datetime
    until: datetime
    days: int | None  # when given as a number of days
    since_text: str = ""
    until_text: str = ""


def window_param(
    args: Mapping[str, str], now: datetime, default_days: int = DEFAULT_DAYS
) -> Window:
    since_text, until_text = args.get("since", ""), args.get("until", "")
    if since_text or until_text:
        until = _day(until_text, "until") if until_text else now
        if until_text and "T" not in until_text:
            until += timedelta(days=1)  # a date means the whole of that day
        since = _day(since_text, "since") if since_text else until - timedelta(days=default_days)
        if until <= since:
            raise BadQuery("until must be after since")
        if until - since > timedelta(days=MAX_DAYS):
            raise BadQuery(f"a window is at most {MAX_DAYS} days")
        return Window(since, until, None, since_text, until_text)
    raw = args.get("days", "")
    days = default_days
    if raw:
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_DAYS:
            raise BadQuery(f"days must be a whole number from 1 to {MAX_DAYS}")
        days = int(raw)
    return Window(now - timedelta(days=days), now, days)


# ---- / : services -------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceView:
    name: str
    split: list[tuple[str, int]]  # (revision, percent), largest first
    traffic_error: str | None
    revisions: list[q.RevisionHealth]
    ready: dict[str, bool]
    state: str | None  # "frozen", "escalated" or None
    state_reason: str | None
    state_release: str | None
    state_at: datetime | None
    canary: q.CanaryState | None


def _cloud_run(deps: Deps) -> CloudRun:
    from shared.cloudrun import create_clients
    from shared.rollback import CloudRun

    services, revisions = create_clients(deps.settings)
    return CloudRun(services, revisions, api_timeout_s=deps.settings.console.api_timeout_s)


def cloud_run_for(deps: Deps) -> CloudRun:
    """The console's own Cloud Run reader: the rollback adapter with the console's timeout."""
    return deps.service(_cloud_run)


def _traffic(deps: Deps, names: list[str]) -> dict[str, ServiceState | str]:
    """Each service's state, or why it could not be read (one line, no internals)."""
    settings = deps.settings
    project = settings.rollback.project or settings.gcp_project
    region = settings.rollback.region or settings.gcp_region
    reader = cloud_run_for(deps)

    def read(name: str) -> ServiceState | str:
        try:
            return reader.read(project, region, name)
        except SightOpsError as exc:
            logger.warning("console: Cloud Run read of %s failed: %s", name, exc)
            return f"Cloud Run could not be read ({type(exc).__name__})"
        except Exception as exc:  # a page must not fail for one service
            logger.warning("console: Cloud Run read of %s failed: %r", name, exc)
            return "Cloud Run could not be read"

    if not names:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(names))) as pool:
        return dict(zip(names, pool.map(read, names), strict=True))


def services_page(deps: Deps) -> dict[str, Any]:
    now = deps.clock()
    with q.read_only(deps.engine) as conn:
        names = q.services(conn, limit=deps.settings.console.page_size)
        health = q.revision_health(conn, names)
        latest = q.latest_decisions(conn)
        canaries = q.active_canaries(conn)
        rejected = q.rejected_count(conn, now - timedelta(hours=24))
    states = _traffic(deps, names)
    views = []
    for name in names:
        state = states.get(name)
        split: list[tuple[str, int]] = []
        ready: dict[str, bool] = {}
        error = state if isinstance(state, str) else None
        if state is not None and not isinstance(state, str):
            split = sorted(state.serving().items(), key=lambda kv: (-kv[1], kv[0]))
            ready = {r.name: r.ready for r in state.revisions}
        decision = latest.get(name)
        frozen = decision is not None and decision.kind in {"freeze", "escalation"}
        views.append(
            ServiceView(
                name=name,
                split=split,
                traffic_error=error,
                revisions=health.get(name, [])[:8],
                ready=ready,
                state=("frozen" if decision.kind == "freeze" else "escalated")
                if frozen and decision
                else None,
                state_reason=decision.reason if frozen and decision else None,
                state_release=decision.release_id if frozen and decision else None,
                state_at=decision.started_at if frozen and decision else None,
                canary=canaries.get(name),
            )
        )
    return {"services": views, "rejected_24h": rejected, "now": now}


# ---- /releases ------------------------------------------------------------------------------


def releases_page(deps: Deps, args: Mapping[str, str]) -> dict[str, Any]:
    now = deps.clock()
    service = service_param(args.get("service"))
    window = window_param(args, now)
    with q.read_only(deps.engine) as conn:
        rows = q.releases(
            conn,
            since=window.since,
            until=window.until,
            service=service,
            limit=deps.settings.console.page_size,
        )
        names = q.services(conn)
    return {
        "releases": rows,
        "service": service,
        "services": names,
        "window": window,
        "limit": deps.settings.console.page_size,
        "now": now,
    }


# ---- /releases/<id> -------------------------------------------------------------------------


@dataclass(frozen=True)
class TraceLink:
    trace_id: str
    url: str | None  # Cloud Trace in production
    spans_from: str | None  # where the local spans were read (make dev)


def _spans(deps: Deps, trace_id: str) -> tuple[list[Any], str | None]:
    """The release's spans from the local span file (``TRACE__EXPORTER=local``, make dev);
    in production they are in Cloud Trace, linked instead."""
    from shared.trace import exporter_for, local_file_for, read_spans

    settings = deps.settings
    if exporter_for(settings) != "local":
        return [], None
    path = local_file_for(settings)
    try:
        if not path.is_file() or path.stat().st_size > 64 * 1024 * 1024:
            return [], None
    except OSError:
        return [], None
    return read_spans(path, trace_id), str(path.name)


def release_page(deps: Deps, release_id: str) -> dict[str, Any] | None:
    from shared.release import is_release_id, release_trace_id

    if not is_release_id(release_id):
        return None
    with q.read_only(deps.engine) as conn:
        story = q.release_story(conn, release_id)
    if not story.actions and story.canary is None:
        return None
    trace_id = release_trace_id(release_id)
    spans, spans_from = _spans(deps, trace_id)
    url = None
    if deps.settings.environment == "production":
        url = (
            "https://console.cloud.google.com/traces/list"
            f"?tid={trace_id}&project={deps.settings.gcp_project}"
        )
    entries: list[Entry] = timeline(story, spans)
    undo: Undo = undo_for(story)
    trace_ids = sorted({a.trace_id for a in story.actions if a.trace_id})
    return {
        "release_id": release_id,
        "service": story.service,
        "story": story,
        "entries": entries,
        "undo": undo,
        "trace": TraceLink(trace_id, url, spans_from),
        "other_traces": [t for t in trace_ids if t != trace_id],
        "canary": story.canary,
        "canary_steps": canary_steps(story.canary.history) if story.canary else [],
        "decisions": list(story.decisions.values()),
    }


# ---- /messages ------------------------------------------------------------------------------


@dataclass
class Letters:
    rejected: list[DeadLetter] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    holds_error: list[str] = field(default_factory=list)


def _holds(names: list[str]) -> list[Any]:
    """``FUNCTION--TOPIC--dead-letter`` -> the hold (names as terraform/pubsub.tf)."""
    from shared.dlq import Hold

    holds = []
    for name in names:
        parts = name.removesuffix("--dead-letter").split("--")
        if len(parts) == 2 and name.endswith("--dead-letter"):
            holds.append(Hold(parts[0], parts[1], name))
    return holds


def _dead_letters(deps: Deps, consumer: str | None) -> tuple[list[DeadLetter], list[str]]:
    """Every hold read at once (each with the console's timeout), every lease released
    at once: a page view never keeps a dead letter from ``sightops dlq``."""
    from shared.dlq import DeadLetterHolds, subscriber_for

    holds = [
        h
        for h in _holds(deps.settings.console.dead_letter_holds)
        if not consumer or h.consumer == consumer
    ]
    if not holds:
        return [], []
    subscriber = subscriber_for(deps.settings)
    timeout = deps.settings.console.api_timeout_s

    def read(hold: Any) -> list[DeadLetter] | str:
        try:
            with DeadLetterHolds(
                deps.settings, [hold], subscriber, timeout_s=timeout, max_messages=50
            ) as reader:
                return reader.read()
        except Exception as exc:
            logger.warning("console: dead-letter hold %s unreadable: %r", hold.subscription, exc)
            return f"{hold.subscription}: could not be read ({type(exc).__name__})"

    letters: list[DeadLetter] = []
    errors: list[str] = []
    with ThreadPoolExecutor(max_workers=min(8, len(holds))) as pool:
        for found in pool.map(read, holds):
            if isinstance(found, str):
                errors.append(found)
            else:
                letters.extend(found)
    letters.sort(key=lambda d: d.received_at or datetime.min.replace(tzinfo=UTC), reverse=True)
    return letters, errors


def messages_page(deps: Deps, args: Mapping[str, str]) -> dict[str, Any]:
    from shared.dlq import rejected_letters

    now = deps.clock()
    consumer = args.get("consumer") or None
    if consumer is not None and (len(consumer) > 63 or not consumer.replace("_", "").isalnum()):
        raise BadQuery("consumer must be a function name")
    window = window_param(args, now, default_days=7)
    with q.read_only(deps.engine) as conn:
        rejected = [
            letter
            for letter in rejected_letters(
                conn,
                consumer=consumer,
                since=window.since,
                limit=deps.settings.console.page_size,
                topics_of={},
            )
            if letter.received_at is None or letter.received_at < window.until
        ]
    dead, errors = _dead_letters(deps, consumer)
    return {
        "rejected": rejected,
        "dead": dead,
        "holds_error": errors,
        "consumer": consumer,
        "window": window,
        "holds": len(deps.settings.console.dead_letter_holds),
    }


def payload_preview(payload: bytes, limit: int = 4000) -> tuple[str, str]:
    from shared.dlq import payload_text

    kind, shown = payload_text(payload)
    if len(shown) > limit:
        shown = shown[:limit] + f"\n… {len(shown) - limit} more characters"
    return kind, shown


# ---- /metrics -------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricsView:
    report: Any  # ReleaseReport
    charts: list[Chart]
    service_charts: list[Chart]


def _weeks(window: Window) -> list[tuple[datetime, datetime]]:
    """The window in weeks counted back from its end (the oldest may be partial)."""
    out: list[tuple[datetime, datetime]] = []
    end = window.until
    while end > window.since and len(out) < 53:
        start = max(window.since, end - timedelta(days=7))
        out.append((start, end))
        end = start
    return list(reversed(out))


def metrics_page(deps: Deps, args: Mapping[str, str]) -> dict[str, Any]:
    from shared.kpi.release_metrics import DEFAULT_FAILURE_WINDOW, compute_report
    from shared.kpi.release_report import load_facts, noise_rule

    now = deps.clock()
    service = service_param(args.get("service"))
    window = window_param(args, now)
    noise = noise_rule(deps.settings)
    with q.read_only(deps.engine) as conn:
        facts = load_facts(conn, window.since, window.until, service)
        names = q.services(conn)

    def report(since: datetime, until: datetime) -> Any:
        return compute_report(
            facts,
            since=since,
            until=until,
            computed_at=now,
            service=service,
            failure_window=DEFAULT_FAILURE_WINDOW,
            noise=noise,
        )

    whole = report(window.since, window.until)
    weekly = [(f"{start:%m-%d}", report(start, end).overall) for start, end in _weeks(window)]
    charts = [
        bar_chart(
            "chart-promoted",
            "Promoted releases per week",
            [(label, float(m.promoted)) for label, m in weekly],
            fmt=count,
        ),
        bar_chart(
            "chart-success",
            "Deployment success rate",
            [(label, m.deployment_success_rate.value) for label, m in weekly],
            fmt=percent,
            target=0.99,
        ),
        bar_chart(
            "chart-change-failure",
            "Change failure rate",
            [(label, m.change_failure_rate.value) for label, m in weekly],
            fmt=percent,
        ),
        bar_chart(
            "chart-mttr",
            "Time to restore (mean)",
            [(label, m.mttr_s) for label, m in weekly],
            fmt=minutes,
            target=15 * 60.0,
            higher_is_better=False,
        ),
        bar_chart(
            "chart-lead-time",
            "Lead time for changes (median)",
            [(label, m.lead_time.median_s) for label, m in weekly],
            fmt=minutes,
        ),
    ]
    per_service = [(m.service or "?", m) for m in whole.services]
    service_charts = [
        bar_chart(
            "chart-services-promoted",
            "Promoted per service",
            [(name, float(m.promoted)) for name, m in per_service],
            fmt=count,
        ),
        bar_chart(
            "chart-services-rollback",
            "Rollback rate per service",
            [(name, m.rollback_rate.value) for name, m in per_service],
            fmt=percent,
            target=0.01,
            higher_is_better=False,
        ),
    ]
    return {
        "target_value": lambda name, value: minutes(value) if name == "mttr_s" else percent(value),
        "view": MetricsView(whole, charts, service_charts),
        "service": service,
        "services": names,
        "window": window,
    }


#: Page name -> its builder, for the app's routing table.
PAGES: dict[str, Callable[..., Any]] = {
    "services": services_page,
    "releases": releases_page,
    "release": release_page,
    "messages": messages_page,
    "metrics": metrics_page,
}
