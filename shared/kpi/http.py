"""``GET /v1/projects/{id}/kpis`` (docs/kpi.md) and ``GET /v1/ops/metrics``
(docs/metrics.md): routing, status codes and cache headers.

Method, body size, the JSON error body and the request's log line are ``http_handler``'s
(docs/architecture.md, "An HTTP request's path"); this module answers the route.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from shared.runtime import HttpError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from flask import Request, Response

    from shared.kpi.cache import CacheResult
    from shared.kpi.release_report import ReportQuery
    from shared.runtime import HttpContext

__all__ = [
    "HTTP_METHODS",
    "OVERLOADED_RETRY_AFTER_S",
    "RETRY_AFTER_S",
    "parse_project_id",
    "parse_report_query",
    "serve",
]

HTTP_METHODS = ("GET", "HEAD")
_ROUTE = re.compile(r"^/v1/projects/(?P<project_id>[^/]+)/kpis/?$")
_METRICS_ROUTE = re.compile(r"^/v1/ops/metrics/?$")
RETRY_AFTER_S = 5
#: Overload clears as soon as one computation (~15 ms) ends: retry soon.
OVERLOADED_RETRY_AFTER_S = 1


def parse_project_id(raw: str) -> uuid.UUID | None:
    """Canonical hyphenated UUIDs only (any case): one spelling per cache key."""
    if len(raw) != 36:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def parse_report_query(args: Mapping[str, str]) -> ReportQuery:
    """``service`` (a Cloud Run service name; absent: every service), ``days`` (1-366,
    default 28) and ``failure_window_h`` (hours, default 24); 400 for anything else."""
    from shared.events import is_service_name
    from shared.kpi.release_report import DEFAULT_DAYS, MAX_DAYS, ReportQuery

    service = args.get("service") or None
    if service is not None and not is_service_name(service):
        raise HttpError(400, "invalid_service", "service must be a Cloud Run service name")
    raw_days = args.get("days") or str(DEFAULT_DAYS)
    if not raw_days.isascii() or not raw_days.isdigit() or not 1 <= int(raw_days) <= MAX_DAYS:
        raise HttpError(400, "invalid_days", f"days must be a whole number from 1 to {MAX_DAYS}")
    query = ReportQuery(service=service, days=int(raw_days))
    raw_window = args.get("failure_window_h")
    if raw_window is not None:
        try:
            hours = float(raw_window)
        except ValueError:
            hours = -1.0
        if not 0 < hours <= 720:  # also refuses nan and inf
            raise HttpError(
                400, "invalid_failure_window", "failure_window_h must be hours, above 0, up to 720"
            )
        query = ReportQuery(service=service, days=query.days, failure_window_h=hours)
    return query


def serve(request: Request, ctx: HttpContext) -> Response:
    """Answer one request; every refusal is an :class:`HttpError` (JSON, ``no-store``)."""
    from shared.kpi.queries import ProjectNotFoundError
    from shared.kpi.release_report import release_metrics_service
    from shared.kpi.service import kpi_service

    if _METRICS_ROUTE.match(request.path):
        query = parse_report_query(request.args)
        ctx.fields.update(service=query.scope, days=query.days)
        return _cached(
            ctx,
            lambda: release_metrics_service(ctx.deps).get(query),
            f"release metrics {query.key()}",
        )
    match = _ROUTE.match(request.path)
    if match is None:
        raise HttpError(
            404,
            "not_found",
            "no such route; use GET /v1/projects/{id}/kpis or GET /v1/ops/metrics",
        )
    project_id = parse_project_id(match["project_id"])
    if project_id is None:
        raise HttpError(400, "invalid_project_id", "project id must be a UUID")
    ctx.fields["project_id"] = str(project_id)
    try:
        return _cached(ctx, lambda: kpi_service(ctx.deps).get(project_id), f"project {project_id}")
    except ProjectNotFoundError:
        raise HttpError(404, "project_not_found", f"no project {project_id}") from None


def _cached(ctx: HttpContext, fetch: Callable[[], CacheResult[bytes]], what: str) -> Response:
    """A cached JSON document with its cache headers; overload and outages as 503s."""
    from flask import Response

    from shared.kpi.queries import ProjectNotFoundError
    from shared.kpi.service import OverloadedError

    try:
        result = fetch()
    except ProjectNotFoundError:
        raise
    except OverloadedError:
        # Counted (kpi_overloaded); its line is at INFO: a flood must not flood WARNINGs.
        raise HttpError(
            503,
            "overloaded",
            "too many KPI computations on this instance; retry shortly",
            headers={"Retry-After": str(OVERLOADED_RETRY_AFTER_S)},
            level=logging.INFO,
        ) from None
    except Exception as exc:
        raise HttpError(
            503,
            "unavailable",
            "KPIs cannot be computed right now; retry shortly",
            headers={"Retry-After": str(RETRY_AFTER_S)},
            reason=f"kpi unavailable for {what}: {type(exc).__name__}",
            fields={"error": str(exc)[:300]},
        ) from None
    ctx.outcome = result.status
    response = Response(result.value, status=200, mimetype="application/json")
    response.headers["X-Cache"] = result.status
    response.headers["X-Compute-Ms"] = f"{result.compute_ms:.1f}"
    fresh_for = int(result.fresh_until - time.time())
    if result.status == "stale" or fresh_for <= 0:
        response.headers["Cache-Control"] = "private, max-age=0, must-revalidate"
    else:
        stale = int(ctx.deps.settings.kpi.stale_ttl_s)
        response.headers["Cache-Control"] = (
            f"private, max-age={fresh_for}, stale-while-revalidate={stale}"
        )
    return response
