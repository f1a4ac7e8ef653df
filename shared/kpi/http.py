"""``GET /v1/projects/{id}/kpis``: routing, status codes and cache headers (docs/kpi.md).

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
    from flask import Request, Response

    from shared.runtime import HttpContext

__all__ = ["HTTP_METHODS", "OVERLOADED_RETRY_AFTER_S", "RETRY_AFTER_S", "parse_project_id", "serve"]

HTTP_METHODS = ("GET", "HEAD")
_ROUTE = re.compile(r"^/v1/projects/(?P<project_id>[^/]+)/kpis/?$")
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


def serve(request: Request, ctx: HttpContext) -> Response:
    """Answer one request; every refusal is an :class:`HttpError` (JSON, ``no-store``)."""
    from flask import Response

    from shared.kpi.queries import ProjectNotFoundError
    from shared.kpi.service import OverloadedError, kpi_service

    match = _ROUTE.match(request.path)
    if match is None:
        raise HttpError(404, "not_found", "no such route; use GET /v1/projects/{id}/kpis")
    project_id = parse_project_id(match["project_id"])
    if project_id is None:
        raise HttpError(400, "invalid_project_id", "project id must be a UUID")
    ctx.fields["project_id"] = str(project_id)
    try:
        result = kpi_service(ctx.deps).get(project_id)
    except ProjectNotFoundError:
        raise HttpError(404, "project_not_found", f"no project {project_id}") from None
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
            reason=f"kpi unavailable for project {project_id}: {type(exc).__name__}",
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
