"""``kpi_refresh``: precompute one project or every active one (topic ``kpi-refresh``).

Two producers send different shapes (docs/kpi.md, "Refresh messages"):

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

import json
import uuid
from collections.abc import Mapping

from pydantic import ValidationError

from shared.errors import InvalidEventError, PermanentError, TransientError
from shared.events import EventType, KpiRefreshRequested, parse_ops_message
from shared.kpi.cache import CacheUnavailableError
from shared.kpi.queries import ProjectNotFoundError
from shared.kpi.service import KpiService, kpi_service
from shared.runtime import Context, Outcome, PubsubMessage

_WHAT = f"ops event {EventType.KPI_REFRESH_REQUESTED.value}"


def parse_refresh_request(data: bytes, attributes: Mapping[str, str]) -> KpiRefreshRequested:
    """A refresh request from our own event or from a Cloud Scheduler job."""
    if attributes.get("time") and attributes.get("id"):
        return parse_ops_message(data, attributes).data_as(KpiRefreshRequested)
    event_type = attributes.get("type")
    if event_type and event_type != EventType.KPI_REFRESH_REQUESTED.value:
        raise InvalidEventError(f"{_WHAT}: attribute 'type' is {event_type[:80]!r}, not a refresh")
    if not data.strip():
        return KpiRefreshRequested(all_active=True)
    try:
        payload = json.loads(data)
    except (ValueError, RecursionError):
        raise InvalidEventError(f"{_WHAT}: data is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InvalidEventError(f"{_WHAT}: data must be a JSON object")
    try:
        return KpiRefreshRequested.model_validate(payload)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'data'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidEventError(f"{_WHAT}: {problems}"[:400]) from None


def dedupe_key(_event: KpiRefreshRequested, message: PubsubMessage) -> str:
    """The Pub/Sub message id: unique per publish, stable across redeliveries."""
    return f"message:{message.message_id}"


def handle_refresh(event: KpiRefreshRequested, ctx: Context) -> Outcome:
    """Refresh what the event asks for; Redis down is a skip (the next run will do it)."""
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
