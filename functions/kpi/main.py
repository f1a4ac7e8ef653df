"""kpi: a project's dashboard KPIs over HTTP; kpi_refresh: precompute them on schedule.

kpi_refresh also prunes ``ops.event_receipts`` and ``ops.rejected_events`` when Cloud
Scheduler asks for it on its topic (docs/kpi.md, docs/schema.md "Pruning").
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.kpi import HTTP_METHODS, dedupe_key, handle, parse, serve
from shared.runtime import Context, HttpContext, Outcome, http_handler, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    import flask

    from shared.kpi import RefreshInput


@http_handler("kpi", methods=HTTP_METHODS)
def kpi(request: flask.Request, ctx: HttpContext) -> flask.Response:
    """``GET /v1/projects/{id}/kpis`` (docs/kpi.md)."""
    return serve(request, ctx)


@pubsub_handler("kpi_refresh", parse=parse, dedupe_key=dedupe_key)
def kpi_refresh(event: RefreshInput, ctx: Context) -> Outcome:
    return handle(event, ctx)
