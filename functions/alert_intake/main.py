"""alert_intake: authenticate a Cloud Monitoring webhook and publish the incident
(docs/notify.md, "alert_intake")."""

from __future__ import annotations

from flask import Request

from shared.intake import basic_auth, body_limit, handle
from shared.runtime import HttpContext, http_handler


@http_handler("alert_intake", methods=("POST",), auth=basic_auth, max_body_bytes=body_limit)
def alert_intake(request: Request, ctx: HttpContext) -> tuple[dict[str, str], int]:
    return handle(request, ctx)
