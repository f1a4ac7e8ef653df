"""kpi: a project's dashboard KPIs over HTTP; kpi_refresh: precompute them on schedule."""

from __future__ import annotations

from datetime import timedelta

import flask
import functions_framework

from shared.events import KpiRefreshRequested
from shared.kpi.http import handle
from shared.kpi.refresh import dedupe_key, handle_refresh, parse_refresh_request
from shared.runtime import Context, Outcome, process_deps, pubsub_handler
from shared.settings import get_settings


@functions_framework.http
def kpi(request: flask.Request) -> flask.Response:
    """``GET /v1/projects/{id}/kpis`` (docs/kpi.md)."""
    return handle(request, process_deps())


@pubsub_handler(
    "kpi_refresh",
    parse=parse_refresh_request,
    max_age=timedelta(seconds=get_settings().kpi.refresh_max_age_s),
    dedupe_key=dedupe_key,
)
def kpi_refresh(event: KpiRefreshRequested, ctx: Context) -> Outcome:
    """One project, or every active one (Cloud Scheduler -> ``kpi-refresh``)."""
    return handle_refresh(event, ctx)
