"""``GET /v1/projects/{id}/kpis``: routing, status codes and cache headers (docs/kpi.md)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import TYPE_CHECKING

from flask import Request, Response

from shared.kpi.queries import ProjectNotFoundError
from shared.kpi.service import OverloadedError, kpi_service

if TYPE_CHECKING:
    from shared.runtime import Deps

logger = logging.getLogger("sightops.kpi")

_ROUTE = re.compile(r"^/v1/projects/(?P<project_id>[^/]+)/kpis/?$")
RETRY_AFTER_S = 5
#: Overload clears as soon as one computation (~15 ms) ends: retry soon.
OVERLOADED_RETRY_AFTER_S = 1


def error(status: int, code: str, message: str, **headers: str) -> Response:
    body = json.dumps({"error": {"code": code, "message": message}})
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in headers.items():
        response.headers[name.replace("_", "-")] = value
    return response


def parse_project_id(raw: str) -> uuid.UUID | None:
    """Canonical hyphenated UUIDs only (any case): one spelling per cache key."""
    if len(raw) != 36:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        return None


def handle(request: Request, deps: Deps) -> Response:
    """Answer one request; never raises (errors become JSON with a status code)."""
    match = _ROUTE.match(request.path)
    if match is None:
        return error(404, "not_found", "no such route; use GET /v1/projects/{id}/kpis")
    if request.method not in {"GET", "HEAD"}:
        return error(405, "method_not_allowed", "use GET", Allow="GET, HEAD")
    project_id = parse_project_id(match["project_id"])
    if project_id is None:
        return error(400, "invalid_project_id", "project id must be a UUID")
    try:
        result = kpi_service(deps).get(project_id)
    except ProjectNotFoundError:
        return error(404, "project_not_found", f"no project {project_id}")
    except OverloadedError:
        # Counted (kpi_overloaded), not logged: a flood would otherwise flood the log too.
        return error(
            503,
            "overloaded",
            "too many KPI computations on this instance; retry shortly",
            Retry_After=str(OVERLOADED_RETRY_AFTER_S),
        )
    except Exception as exc:
        logger.warning(
            "kpi unavailable for project %s: %s",
            project_id,
            type(exc).__name__,
            extra={"project_id": str(project_id), "error": str(exc)[:300]},
        )
        return error(
            503,
            "unavailable",
            "KPIs cannot be computed right now; retry shortly",
            Retry_After=str(RETRY_AFTER_S),
        )
    response = Response(result.value, status=200, mimetype="application/json")
    response.headers["X-Cache"] = result.status
    response.headers["X-Compute-Ms"] = f"{result.compute_ms:.1f}"
    fresh_for = int(result.fresh_until - time.time())
    if result.status == "stale" or fresh_for <= 0:
        response.headers["Cache-Control"] = "private, max-age=0, must-revalidate"
    else:
        stale = int(deps.settings.kpi.stale_ttl_s)
        response.headers["Cache-Control"] = (
            f"private, max-age={fresh_for}, stale-while-revalidate={stale}"
        )
    return response
