"""``kpi_refresh``: precompute one project or every active one (topic ``kpi-refresh``),
prune the runtime's tables, or publish the weekly release report, when Cloud Scheduler
asks for them on the same topic.

:func:`parse`, :func:`dedupe_key` and :func:`handle` are the consumer's face (the same
for every function, docs/architecture.md). Pruning rides on this topic because
kpi_refresh is the one scheduled Pub/Sub consumer with a database pool, so it needs no
function, subscription or account of its own (docs/schema.md, "Pruning").

Refresh requests come from two producers in different shapes (docs/kpi.md, "Refresh messages"):

- our own tools publish a full ops event (attributes ``type``, ``id``, ``time``,
  ``source``), parsed strictly by ``parse_ops_message``;
- Cloud Scheduler publishes the same data and attributes on every run, so it cannot
  send a per-run ``id`` or ``time``. Without ``time`` the message is read leniently: its
  data alone is the payload (``{"all_active": true}``; an empty body means the same),
  and its age is the Pub/Sub publish time.

Deduplication is on the Pub/Sub message id in both cases (:func:`dedupe_key`): a fixed
``id`` attribute from a scheduler job must not make every later run a duplicate, and a
refresh is idempotent, so a re-published event refreshing again is harmless.

A sweep of all active projects isolates each project (docs/kpi.md, "kpi_refresh"): one
project's failure is counted, never redelivers the whole sweep, unless nothing at all was
refreshed because a store is down.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import PermanentError, TransientError
from shared.runtime import Context, Outcome, PubsubMessage

if TYPE_CHECKING:
    # Imported where first used, so ``import main`` stays cheap (docs/architecture.md,
    # "Cold start").
    from shared.events import KpiRefreshRequested, ReportRequested
    from shared.housekeeping import PruneRequested
    from shared.kpi.service import KpiService

    #: What a ``kpi-refresh`` message asks for.
    RefreshInput = KpiRefreshRequested | PruneRequested | ReportRequested

__all__ = [
    "RefreshInput",
    "dedupe_key",
    "handle",
    "parse",
    "parse_refresh_request",
]


def parse(data: bytes, attributes: Mapping[str, str]) -> RefreshInput:
    """A prune or release report request (by its ``type`` attribute), or a refresh request."""
    from shared.events import EventType
    from shared.housekeeping import is_prune_request, parse_prune_request
    from shared.kpi.release_report import parse_report_request

    if is_prune_request(attributes):
        return parse_prune_request(data, attributes)
    if attributes.get("type") == EventType.REPORT_REQUESTED.value:
        return parse_report_request(data, attributes)
    return parse_refresh_request(data, attributes)


def dedupe_key(event: RefreshInput, message: PubsubMessage) -> str:
    """The Pub/Sub message id: unique per publish, stable across redeliveries (scheduled
    messages carry no id of their own)."""
    from shared.events import ReportRequested
    from shared.housekeeping import PruneRequested

    if isinstance(event, PruneRequested):
        return f"prune:{message.message_id}"
    if isinstance(event, ReportRequested):
        return f"report:{message.message_id}"
    return f"message:{message.message_id}"


def handle(event: RefreshInput, ctx: Context) -> Outcome:
    """One project, every active one, a prune, or the weekly release report."""
    from shared.events import ReportRequested
    from shared.housekeeping import PruneRequested, handle_prune
    from shared.kpi.release_report import handle_report_request

    if isinstance(event, PruneRequested):
        return handle_prune(event, ctx)
    if isinstance(event, ReportRequested):
        return handle_report_request(event, ctx)
    return handle_refresh(event, ctx)


def parse_refresh_request(data: bytes, attributes: Mapping[str, str]) -> KpiRefreshRequested:
    """A refresh request from our own event or from a Cloud Scheduler job (an empty body:
    every active project)."""
    from shared.events import KpiRefreshRequested, parse_scheduled

    return parse_scheduled(
        data,
        attributes,
        KpiRefreshRequested,
        type_required=False,
        empty=KpiRefreshRequested(all_active=True),
    )


def handle_refresh(event: KpiRefreshRequested, ctx: Context) -> Outcome:
    """Refresh what the event asks for; Redis down is a skip (the next run will do it)."""
    from shared.kpi.cache import CacheUnavailableError
    from shared.kpi.service import kpi_service

    service = kpi_service(ctx.deps)
    try:
        if event.project_id is not None:
            return _refresh_one(service, uuid.UUID(event.project_id))
        report = service.refresh_all_active(ctx.deps.settings.kpi.refresh_budget_s)
    except CacheUnavailableError as exc:
        return Outcome.skipped(f"{exc}; nothing to precompute into (the next run will)")
    fields = {
        "refreshed": len(report.refreshed),
        "locked": len(report.locked),
        "gone": len(report.gone),
        "failed": len(report.failed),
        "not_reached": report.not_reached,
    }
    if report.failed and not (report.refreshed or report.locked):
        first = next(iter(report.failed.values()))
        if report.outages:
            # Nothing refreshed and a store is down: redeliver with backoff.
            raise TransientError(
                f"every KPI refresh failed ({len(report.failed)}), a store is down; first: {first}"
            )
        # Every project failed on its own data: a retry would fail the same way.
        raise PermanentError(
            f"every KPI refresh failed ({len(report.failed)}), none for an outage; first: {first}"
        )
    summary = f"refreshed {len(report.refreshed)} active projects"
    if report.failed:
        summary += f", {len(report.failed)} failed"
    if report.not_reached:
        summary += f", {report.not_reached} not reached within the time budget"
    return Outcome.handled(summary, **fields)


def _refresh_one(service: KpiService, project_id: uuid.UUID) -> Outcome:
    from shared.kpi.queries import ProjectNotFoundError

    try:
        result = service.refresh(project_id)
    except ProjectNotFoundError:
        return Outcome.skipped(f"project {project_id} does not exist")
    if result is None:
        return Outcome.skipped(f"project {project_id} is being computed by another caller")
    return Outcome.handled(
        f"refreshed project {project_id}",
        project_id=str(project_id),
        compute_ms=round(result.compute_ms, 1),
    )
