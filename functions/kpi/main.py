"""kpi: a project's dashboard KPIs over HTTP; kpi_refresh: precompute them on schedule.

kpi_refresh also prunes ``ops.event_receipts`` and ``ops.rejected_events`` when Cloud
Scheduler publishes a ``sight.ops.housekeeping.prune_requested`` message to its topic: the
one scheduled Pub/Sub consumer with a database pool, so pruning needs no function,
subscription or account of its own (docs/schema.md, "Pruning").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import flask
import functions_framework

from shared.events import KpiRefreshRequested
from shared.housekeeping import (
    PruneRequested,
    handle_prune,
    is_prune_request,
    parse_prune_request,
)
from shared.kpi.http import handle
from shared.kpi.refresh import dedupe_key, handle_refresh, parse_refresh_request
from shared.runtime import Context, Outcome, PubsubMessage, process_deps, pubsub_handler
from shared.settings import get_settings


@functions_framework.http
def kpi(request: flask.Request) -> flask.Response:
    """``GET /v1/projects/{id}/kpis`` (docs/kpi.md)."""
    return handle(request, process_deps())


def _parse(data: bytes, attributes: Mapping[str, str]) -> KpiRefreshRequested | PruneRequested:
    if is_prune_request(attributes):
        return parse_prune_request(data, attributes)
    return parse_refresh_request(data, attributes)


def _dedupe_key(event: KpiRefreshRequested | PruneRequested, message: PubsubMessage) -> str:
    """The Pub/Sub message id for both (scheduled messages carry no id of their own)."""
    if isinstance(event, PruneRequested):
        return f"prune:{message.message_id}"
    return dedupe_key(event, message)


@pubsub_handler(
    "kpi_refresh",
    parse=_parse,
    max_age=timedelta(seconds=get_settings().kpi.refresh_max_age_s),
    dedupe_key=_dedupe_key,
)
def kpi_refresh(event: KpiRefreshRequested | PruneRequested, ctx: Context) -> Outcome:
    """One project, or every active one; or a prune (Cloud Scheduler -> ``kpi-refresh``)."""
    if isinstance(event, PruneRequested):
        return handle_prune(event, ctx)
    return handle_refresh(event, ctx)
