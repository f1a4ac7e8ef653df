"""alert_intake: authenticate a Cloud Monitoring webhook and publish the incident.

HTTP (functions-framework ``http`` signature). The checks and their order are in
``shared.intake``; this file only wires the request to them.
"""

from __future__ import annotations

import functions_framework
from flask import Request, Response

from shared.intake import handle_intake
from shared.runtime import process_deps


@functions_framework.http
def alert_intake(request: Request) -> Response:
    return handle_intake(request, process_deps())
