"""The HTTP runtime: what every HTTP-triggered function shares (docs/architecture.md,
"An HTTP request's path").

``http_handler`` is to functions-framework HTTP functions what ``pubsub_handler`` is to
CloudEvent ones. In order, each step cheaper than the next and each refusal answered
before the function's own code runs: method (405 with ``Allow``) -> auth hook (401, or
503 when unconfigured) -> body size (413: ``Content-Length`` first, then at most
limit+1 bytes read, never the whole body) -> the function, all in one span (the
request's trace context continued; docs/release.md). Every error it produces has
one JSON body, ``{"error": {"code": "...", "message": "..."}}`` with
``Cache-Control: no-store``; an unexpected exception is 500 (503 when it is a database,
Redis or other known-transient outage) without its details; and exactly one structured
log line is written per request.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, cast

from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from shared.errors import SightOpsError
from shared.log import LABELS_KEY, TRACE_KEY, add_trace, redact
from shared.runtime._deps import Deps, process_deps
from shared.runtime._message import cloud_trace, request_traceparent
from shared.trace import current as current_trace
from shared.trace import set_outcome

if TYPE_CHECKING:
    from flask import Request, Response

    from shared.settings import Settings
    from shared.trace import TraceContext

logger = logging.getLogger("sightops.http")

#: The default body limit: no sight-ops HTTP function takes more than a webhook body.
DEFAULT_MAX_BODY_BYTES = 64 * 1024
_PATH_IN_LOG = 200  # characters of the path kept in the log line


class HttpError(Exception):
    """An answer other than success: raised by a function or an auth hook, answered as
    the one JSON error body. ``reason`` (never sent) goes to the log line, with
    ``fields``; ``level`` overrides the line's severity."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: Mapping[str, str] | None = None,
        reason: str | None = None,
        level: int | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers or {})
        self.reason = reason
        self.level = level
        self.fields = dict(fields or {})


def error_response(
    status: int, code: str, message: str, headers: Mapping[str, str] | None = None
) -> Response:
    """The one error body: ``{"error": {"code": ..., "message": ...}}``, never cached."""
    from flask import Response

    body = json.dumps({"error": {"code": code, "message": message}})
    response = Response(body, status=status, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    for name, value in (headers or {}).items():
        response.headers[name] = value
    return response


@dataclass
class HttpContext:
    """Per-request context: the deps, the body (read within the limit), and what the
    function wants on its log line (``outcome`` label, ``reason``, extra ``fields``)."""

    function: str
    deps: Deps
    body: bytes
    outcome: str | None = None
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)


HttpResult: TypeAlias = "Response | tuple[Any, int] | tuple[Any, int, Mapping[str, str]]"
HttpFn: TypeAlias = Callable[["Request", HttpContext], HttpResult]
AuthHook: TypeAlias = Callable[["Request", Deps], None]
BodyLimit: TypeAlias = "int | Callable[[Settings], int]"


def http_handler(
    function: str,
    *,
    methods: tuple[str, ...] = ("GET",),
    max_body_bytes: BodyLimit = DEFAULT_MAX_BODY_BYTES,
    auth: AuthHook | None = None,
    deps: Callable[[], Deps] = process_deps,
) -> Callable[[HttpFn], Callable[[Request], Response]]:
    """Turn ``fn(request, ctx)`` into a registered functions-framework HTTP function.

    ``max_body_bytes`` is a number or a function of the settings (read per request);
    ``auth`` raises :class:`HttpError` to refuse (e.g. 401 with a challenge)."""
    allowed = tuple(m.upper() for m in methods)

    def wrap(fn: HttpFn) -> Callable[[Request], Response]:
        import functions_framework

        def entry(request: Request) -> Response:
            return _serve(function, allowed, max_body_bytes, auth, deps, fn, request)

        entry.__name__ = fn.__name__
        entry.__qualname__ = fn.__qualname__
        entry.__doc__ = fn.__doc__
        return cast("Callable[[Request], Response]", functions_framework.http(entry))

    return wrap


def _serve(
    function: str,
    methods: tuple[str, ...],
    max_body_bytes: BodyLimit,
    auth: AuthHook | None,
    deps_factory: Callable[[], Deps],
    fn: HttpFn,
    request: Request,
) -> Response:
    started = time.perf_counter()
    deps: Deps | None = None
    failed: Exception | None = None
    try:
        deps = deps_factory()
    except Exception as exc:  # answered below like any other failure
        failed = exc
    with _request_span(function, request, deps):
        return _answer(function, methods, max_body_bytes, auth, deps, failed, fn, request, started)


def _request_span(
    function: str, request: Request, deps: Deps | None
) -> AbstractContextManager[TraceContext | None]:
    """The request's span ``<function> <METHOD>``, continuing the caller's trace context."""
    if deps is None:
        return nullcontext()
    try:
        tracing = deps.tracing
    except Exception:  # tracing must never stop a request
        logger.exception("%s: tracing unavailable; request not traced", function)
        return nullcontext()
    return tracing.span(
        f"{function} {request.method}",
        kind="server",
        fallback=request_traceparent(),
        attributes={
            "function": function,
            "http.request.method": request.method,
            "url.path": request.path[:_PATH_IN_LOG],
        },
    )


def _answer(
    function: str,
    methods: tuple[str, ...],
    max_body_bytes: BodyLimit,
    auth: AuthHook | None,
    deps: Deps | None,
    failed: Exception | None,
    fn: HttpFn,
    request: Request,
    started: float,
) -> Response:
    ctx: HttpContext | None = None
    level = logging.INFO
    reason: str | None = None
    fields: dict[str, Any] = {}
    try:
        deps = _ready(deps, failed)
        _require_method(request, methods)
        if auth is not None:
            auth(request, deps)
        limit = max_body_bytes if isinstance(max_body_bytes, int) else max_body_bytes(deps.settings)
        ctx = HttpContext(function, deps, _read_limited(request, limit))
        response = _response(fn(request, ctx))
        outcome = ctx.outcome or "ok"
        reason, fields = ctx.reason, ctx.fields
        if response.status_code >= 400:
            level = logging.WARNING
    except HttpError as exc:
        response = error_response(exc.status, exc.code, exc.message, exc.headers)
        outcome, reason = exc.code, exc.reason
        fields = {**(ctx.fields if ctx else {}), **exc.fields}
        level = exc.level if exc.level is not None else logging.WARNING
    except HTTPException as exc:  # werkzeug's own refusals (a bad JSON body, ...)
        status = exc.code or 400
        code = _snake(exc.name) if exc.name else "bad_request"
        response = error_response(status, code, exc.name or "bad request")
        outcome, reason, level = code, exc.description, logging.WARNING
    except Exception as exc:
        if _is_transient(exc):
            response = error_response(503, "unavailable", "temporarily unavailable; retry later")
            outcome, level = "unavailable", logging.WARNING
            fields = {"error": type(exc).__name__}
        else:
            response = error_response(500, "internal", "internal error")
            outcome, level = "internal", logging.ERROR
            fields = {"error": type(exc).__name__, "traceback": traceback.format_exc(limit=8)}
        reason = f"{type(exc).__name__}: {exc}"[:500]
    _log(function, request, response.status_code, outcome, level, started, deps, reason, fields)
    return response


def _ready(deps: Deps | None, failed: Exception | None) -> Deps:
    """The deps, or the error that kept them from being built (answered like any other)."""
    if failed is not None:
        raise failed
    assert deps is not None
    return deps


def _require_method(request: Request, methods: tuple[str, ...]) -> None:
    if request.method not in methods:
        raise HttpError(
            405,
            "method_not_allowed",
            f"use {' or '.join(methods)}",
            headers={"Allow": ", ".join(methods)},
            reason=request.method,
        )


def _response(result: HttpResult) -> Response:
    from flask import make_response

    return make_response(result)


def _read_limited(request: Request, limit: int) -> bytes:
    """The body, or :class:`HttpError` 413 when it is larger than ``limit``.

    A declared ``Content-Length`` over the limit is refused before anything is read; any
    other body is read to at most limit+1 bytes (Flask's per-request
    ``max_content_length`` bounds a chunked stream too), never the whole of it. The body
    stays cached on the request, so ``request.get_json()`` works in the function."""
    request.max_content_length = limit + 1
    try:
        body = request.get_data(cache=True)
    except RequestEntityTooLarge:
        # functions-framework drains the request after the answer (read_request):
        # without the limit that drain reads the rest instead of failing again.
        request.max_content_length = None
        body = None
    if body is None or len(body) > limit:
        raise HttpError(
            413,
            "too_large",
            f"body is larger than {limit} bytes",
            reason=f"body over {limit} bytes",
        )
    return body


def _is_transient(exc: BaseException) -> bool:
    """A database, Neo4j or Redis outage, or a retryable error of ours: worth a retry."""
    from shared.db import is_transient

    if (isinstance(exc, SightOpsError) and exc.retryable) or is_transient(exc):
        return True
    redis = sys.modules.get("redis.exceptions")  # loaded only where Redis is used
    if redis is not None and isinstance(exc, redis.ConnectionError | redis.TimeoutError):
        return True
    graph = sys.modules.get("shared.graph")
    return bool(graph is not None and graph.is_transient(exc))


def _snake(name: str) -> str:
    return "_".join(name.lower().replace("-", " ").split())


def _log(
    function: str,
    request: Request,
    status: int,
    outcome: str,
    level: int,
    started: float,
    deps: Deps | None,
    reason: str | None,
    fields: Mapping[str, Any],
) -> None:
    """The request's one line: Cloud Logging's severity, labels and trace, redacted."""
    duration_ms = (time.perf_counter() - started) * 1000
    path = request.path[:_PATH_IN_LOG]
    extra: dict[str, Any] = {
        LABELS_KEY: {
            "function": function,
            "method": request.method,
            "status": str(status),
            "outcome": outcome,
        },
        "status": status,
        "path": path,
        "duration_ms": round(duration_ms, 2),
    }
    if reason:
        extra["reason"] = redact(reason)
    span = current_trace()
    if span is not None:
        add_trace(extra)
        set_outcome(outcome, {"http.response.status_code": status})
    if deps is not None:
        if span is None:
            trace = cloud_trace(request_traceparent(), deps.settings.gcp_project)
            if trace:
                extra[TRACE_KEY] = trace
        deps.metrics.incr("requests", function=function, status=status)
        deps.metrics.timing("request_ms", duration_ms, function=function)
    extra.update({k: v for k, v in fields.items() if k not in extra})
    summary = f"{function}: {request.method} {path} {status} {outcome}"
    if reason:
        summary += f": {redact(reason)}"
    logger.log(level, summary, extra=extra)
