"""An HTTP function that exercises every ``http_handler`` path; served by
functions-framework in tests/shared/runtime/test_http_handler.py."""

from __future__ import annotations

from typing import Any

from flask import Request
from sqlalchemy.exc import OperationalError

from shared.errors import TransientError
from shared.runtime import Deps, HttpContext, HttpError, http_handler

TOKEN = "sample-token-9f2c"  # pragma: allowlist secret
LIMIT = 64


def bearer(request: Request, deps: Deps) -> None:
    del deps
    if request.headers.get("Authorization") != f"Bearer {TOKEN}":
        raise HttpError(401, "unauthorised", "unauthorised", headers={"WWW-Authenticate": "Bearer"})


@http_handler("sample_http", methods=("POST",), max_body_bytes=LIMIT, auth=bearer)
def sample_http(request: Request, ctx: HttpContext) -> Any:
    mode = request.args.get("mode", "ok")
    if mode == "refuse":
        raise HttpError(409, "conflict", "not now", reason="refused on purpose")
    if mode == "bug":
        raise KeyError("secret detail that must not be sent")
    if mode == "transient":
        raise TransientError("store unreachable")
    if mode == "db":
        raise OperationalError("SELECT 1", {}, ConnectionRefusedError("refused"))
    if mode == "json":
        return request.get_json()  # werkzeug refuses a body that is not JSON (400)
    ctx.outcome = "echoed"
    ctx.fields["size"] = len(ctx.body)
    return {"echo": ctx.body.decode("utf-8", "replace")}, 201, {"X-Sample": "yes"}
