"""Pieces the stand-ins share: fault rules, request log, Google error bodies, JSON helpers."""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException
from werkzeug.routing import BaseConverter

JSON = dict[str, Any]
Clock = Callable[[], datetime]

ADMIN_PREFIX = "/_admin"

# google.rpc.Code name for an HTTP status, as Google's REST front end maps them
# (https://github.com/googleapis/googleapis/blob/master/google/rpc/code.proto).
HTTP_TO_RPC_STATUS: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    412: "FAILED_PRECONDITION",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# google.rpc.Code numbers, for ``Operation.error.code``.
RPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}


class StandinError(Exception):
    """An API error to answer in Google's JSON error shape."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or HTTP_TO_RPC_STATUS.get(code, "UNKNOWN")


def google_error_body(code: int, message: str, status: str | None = None) -> JSON:
    """``{"error": {"code", "message", "status"}}`` -- what Google's REST APIs answer."""
    return {
        "error": {
            "code": code,
            "message": message,
            "status": status or HTTP_TO_RPC_STATUS.get(code, "UNKNOWN"),
        }
    }


def json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> Response:
    """A JSON response the way Google's front end sends it (UTF-8, indented)."""
    body = json.dumps(payload, indent=2, ensure_ascii=False) + "\n"
    resp = Response(body, status=status, content_type="application/json; charset=UTF-8")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def google_error(
    code: int, message: str, status: str | None = None, retry_after: int | None = None
) -> Response:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return json_response(google_error_body(code, message, status), code, headers)


def rfc3339(moment: datetime) -> str:
    """Protobuf ``Timestamp`` JSON: UTC, ``Z`` suffix, microseconds."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def utcnow() -> datetime:
    return datetime.now(UTC)


def parse_time(value: str | datetime | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


def prune_defaults(value: Any) -> Any:
    """Drop what proto3 JSON omits: ``None``, ``""``, ``0``, ``False``, ``[]``, ``{}``.

    Google's servers serialise with proto3 JSON semantics, so a field at its default
    value is absent (a 0 % traffic entry has no ``percent``; ``reconciling: false`` is
    not sent). Clients must cope with that; the stand-ins reproduce it.
    """
    if isinstance(value, dict):
        out: JSON = {}
        for key, item in value.items():
            pruned = prune_defaults(item)
            if pruned is None or pruned in ("", [], {}):
                continue
            if pruned is False or (type(pruned) is int and pruned == 0):
                continue
            out[key] = pruned
        return out
    if isinstance(value, list):
        return [prune_defaults(item) for item in value]
    return value


def wants_int_enums() -> bool:
    """True when the client asked for ``$alt=json;enum-encoding=int``.

    The google-cloud-* REST transports send that on every call (``rest_numeric_enums``),
    and encode enums in request bodies as numbers too.
    """
    return "enum-encoding=int" in request.args.get("$alt", "")


def encode_enums(value: Any, tables: Mapping[str, Mapping[str, int]]) -> Any:
    """Replace enum names by numbers for keys listed in ``tables`` (``{json_key: {NAME: n}}``)."""
    if isinstance(value, dict):
        out: JSON = {}
        for key, item in value.items():
            table = tables.get(key)
            if table is not None and isinstance(item, str) and item in table:
                out[key] = table[item]
            else:
                out[key] = encode_enums(item, tables)
        return out
    if isinstance(value, list):
        return [encode_enums(item, tables) for item in value]
    return value


def decode_enum(value: Any, table: Mapping[str, int], prefix: str = "") -> str:
    """Accept an enum as its name, its number, or its name without ``prefix``."""
    if isinstance(value, bool):
        raise StandinError(400, f"Invalid enum value: {value!r}")
    if isinstance(value, int):
        for name, number in table.items():
            if number == value:
                return name
        raise StandinError(400, f"Invalid enum value: {value}")
    if isinstance(value, str):
        if value in table:
            return value
        if prefix and f"{prefix}{value}" in table:
            return f"{prefix}{value}"
    raise StandinError(400, f"Invalid enum value: {value!r}")


@dataclass
class FaultRule:
    """The next ``remaining`` requests matching ``method`` + ``path_regex`` get ``status``."""

    status: int
    remaining: int = 1
    method: str | None = None
    path_regex: str = ".*"
    retry_after: int | None = None
    body: str | None = None
    hits: int = 0
    _pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {self.status}")
        if self.remaining < 1:
            raise ValueError("remaining must be at least 1")
        self.method = self.method.upper() if self.method else None
        self._pattern = re.compile(self.path_regex)

    def matches(self, method: str, path: str) -> bool:
        if self.method not in (None, "*") and self.method != method.upper():
            return False
        return self._pattern.search(path) is not None

    def to_json(self) -> JSON:
        return {
            "method": self.method,
            "path_regex": self.path_regex,
            "status": self.status,
            "remaining": self.remaining,
            "retry_after": self.retry_after,
            "body": self.body,
            "hits": self.hits,
        }


@dataclass(frozen=True)
class ReceivedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    received_at: datetime
    status: int | None = None

    def to_json(self) -> JSON:
        return {
            "method": self.method,
            "path": self.path,
            "query": self.query,
            "body": self.body,
            "received_at": rfc3339(self.received_at),
            "status": self.status,
        }


class FaultsAndLog:
    """Thread-safe fault rules and request log shared by the stand-in states."""

    def __init__(self, lock: threading.RLock, clock: Clock) -> None:
        self._lock = lock
        self._clock = clock
        self._faults: list[FaultRule] = []
        self._requests: list[ReceivedRequest] = []

    def inject_fault(
        self,
        status: int,
        *,
        count: int = 1,
        method: str | None = None,
        path_regex: str = ".*",
        retry_after: int | None = None,
        body: str | None = None,
    ) -> FaultRule:
        rule = FaultRule(
            status=status,
            remaining=count,
            method=method,
            path_regex=path_regex,
            retry_after=retry_after,
            body=body,
        )
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[FaultRule]:
        with self._lock:
            return list(self._faults)

    def take_fault(self, method: str, path: str) -> FaultRule | None:
        """The first matching rule, consumed once (removed when exhausted)."""
        with self._lock:
            for rule in self._faults:
                if rule.matches(method, path):
                    rule.remaining -= 1
                    rule.hits += 1
                    if rule.remaining <= 0:
                        self._faults.remove(rule)
                    return rule
        return None

    def record(self, method: str, path: str, query: dict[str, str], body: Any) -> int:
        with self._lock:
            self._requests.append(ReceivedRequest(method, path, query, body, self._clock()))
            return len(self._requests) - 1

    def set_status(self, index: int, status: int) -> None:
        with self._lock:
            old = self._requests[index]
            self._requests[index] = ReceivedRequest(
                old.method, old.path, old.query, old.body, old.received_at, status
            )

    def requests(
        self, method: str | None = None, path_regex: str | None = None
    ) -> list[ReceivedRequest]:
        pattern = re.compile(path_regex) if path_regex else None
        with self._lock:
            return [
                r
                for r in self._requests
                if (method is None or r.method == method.upper())
                and (pattern is None or pattern.search(r.path))
            ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def reset(self) -> None:
        with self._lock:
            self._faults.clear()
            self._requests.clear()


def request_body() -> Any:
    """The request body as JSON when it parses, else as text (``None`` when empty)."""
    raw = request.get_data(cache=True)
    if not raw:
        return None
    text = raw.decode("utf-8", errors="replace")
    try:
        return json.loads(text)
    except ValueError:
        return text


def admin_json() -> JSON:
    payload = request.get_json(force=True, silent=True)
    if payload is None and not request.get_data(cache=True):
        return {}
    if not isinstance(payload, dict):
        raise StandinError(400, "admin requests take a JSON object")
    return payload


class FaultInjection:
    """The fault/request-log methods every Google-API stand-in state offers, delegated to
    its :class:`FaultsAndLog` (one implementation, so the admin surface stays identical)."""

    log: FaultsAndLog

    def inject_fault(
        self,
        status: int,
        *,
        count: int = 1,
        method: str | None = None,
        path_regex: str = ".*",
        retry_after: int | None = None,
        message: str | None = None,
    ) -> FaultRule:
        """The next ``count`` API requests matching answer ``status`` (Google error JSON)."""
        return self.log.inject_fault(
            status,
            count=count,
            method=method,
            path_regex=path_regex,
            retry_after=retry_after,
            body=message,
        )

    def clear_faults(self) -> None:
        self.log.clear_faults()

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[JSON]:
        return [r.to_json() for r in self.log.requests(method, path_regex)]


def fault_from_admin(payload: Mapping[str, Any], log: FaultsAndLog) -> FaultRule:
    try:
        return log.inject_fault(
            int(payload["status"]),
            count=int(payload.get("count", 1)),
            method=payload.get("method"),
            path_regex=str(payload.get("path_regex", ".*")),
            retry_after=(
                int(payload["retry_after"]) if payload.get("retry_after") is not None else None
            ),
            body=payload.get("body"),
        )
    except (KeyError, TypeError, ValueError, re.error) as exc:
        raise StandinError(400, f"bad fault: {exc}") from exc


def install_request_hooks(
    app: Flask,
    log: FaultsAndLog,
    fault_response: Callable[[FaultRule], Response],
    logger: logging.Logger,
    redact: Callable[[str], str] = lambda path: path,
    record_body: Callable[[], Any] = request_body,
) -> None:
    """Record every API request, apply injected faults, log one line per request.

    Admin requests (``/_admin/...``) are neither recorded nor subject to faults. The
    log line carries method, path (through ``redact``), status and duration -- never a
    body. ``record_body`` gives what the request log keeps of the body (a stand-in that
    streams large uploads keeps a size instead of reading them into memory).
    """

    @app.before_request
    def _before() -> Response | None:
        g.started = time.monotonic()
        if request.path.startswith(ADMIN_PREFIX):
            return None
        g.log_index = log.record(
            request.method, request.path, dict(request.args.items()), record_body()
        )
        rule = log.take_fault(request.method, request.path)
        if rule is not None:
            return fault_response(rule)
        return None

    @app.after_request
    def _after(response: Response) -> Response:
        index = g.get("log_index")
        if index is not None:
            log.set_status(index, response.status_code)
        elapsed_ms = (time.monotonic() - g.get("started", time.monotonic())) * 1000
        logger.info(
            "%s %s -> %d (%.1f ms)",
            request.method,
            redact(request.path),
            response.status_code,
            elapsed_ms,
        )
        return response

    @app.errorhandler(StandinError)
    def _standin_error(exc: StandinError) -> Response:
        return google_error(exc.code, exc.message, exc.status)


class SegmentConverter(BaseConverter):
    """One path segment without ``:`` -- so ``<segment:x>:verb`` routes are unambiguous."""

    regex = "[^/:]+"


def install_google_http_errors(app: Flask) -> None:
    """Unknown routes / wrong methods answer in Google's JSON error shape, too."""

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        return google_error(code, exc.description or exc.name)


class _HasFaultLog(Protocol):
    log: FaultsAndLog


def add_fault_admin_routes(app: Flask, state: _HasFaultLog) -> None:
    """The admin routes every fault-injecting stand-in offers, registered once:
    ``POST/GET/DELETE /_admin/faults`` and ``GET/DELETE /_admin/requests``."""

    @app.post("/_admin/faults")
    def admin_fault() -> Response:
        return json_response(fault_from_admin(admin_json(), state.log).to_json(), 201)

    @app.get("/_admin/faults")
    def admin_faults() -> Response:
        return json_response({"faults": [f.to_json() for f in state.log.faults()]})

    @app.delete("/_admin/faults")
    def admin_clear_faults() -> Response:
        state.log.clear_faults()
        return json_response({})

    @app.get("/_admin/requests")
    def admin_requests() -> Response:
        found = state.log.requests(request.args.get("method"), request.args.get("path"))
        return json_response({"requests": [r.to_json() for r in found]})

    @app.delete("/_admin/requests")
    def admin_clear_requests() -> Response:
        state.log.clear_requests()
        return json_response({})


def check_served(status_code: int, latency_ms: float | None) -> None:
    """A served request as the recorders take it: an HTTP status and a latency that is not
    negative (None: none measured), else ValueError."""
    if not 100 <= int(status_code) <= 599:
        raise ValueError(f"status_code must be an HTTP status, got {status_code}")
    if latency_ms is not None and not latency_ms >= 0:
        raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")


#: ``state.record(project, location, service, revision, status_code, latency_ms, at)``
Record = Callable[[str, str, str, str, int, float, datetime | None], None]


class _AdminState(Protocol):
    log: FaultsAndLog

    def configure(self, *args: Any, **kwargs: Any) -> JSON: ...

    def reset(self) -> None: ...


def recorder_admin_app(
    name: str,
    state: _AdminState,
    record: Record,
    settings: Callable[[JSON], dict[str, Any]],
) -> Flask:
    """The admin app of a stand-in fed with served requests (Cloud Monitoring, Cloud
    Logging), with what they share: Google's error shape, the fault and request-log
    routes, ``POST /_admin/record`` (one request ``{service, revision, status_code,
    latency_ms?, at?, project?, location?}`` or ``{"requests": [...]}``), ``GET/POST
    /_admin/config`` (``settings`` turns a body into ``state.configure`` arguments) and
    ``POST /_admin/reset``. The stand-in adds its own routes to it."""
    app = Flask(name)
    app.extensions["standin"] = state
    install_google_http_errors(app)
    app.register_error_handler(
        StandinError, lambda exc: google_error(exc.code, exc.message, exc.status)
    )
    add_fault_admin_routes(app, state)

    @app.post("/_admin/record")
    def admin_record() -> Response:
        body = admin_json()
        items = body["requests"] if isinstance(body.get("requests"), list) else [body]
        for item in items:
            if not isinstance(item, dict):
                raise StandinError(400, "bad record: each request is a JSON object")
            try:
                record(
                    str(item.get("project", "sight-local")),
                    str(item.get("location", "europe-west1")),
                    str(item["service"]),
                    str(item["revision"]),
                    int(item["status_code"]),
                    float(item.get("latency_ms", 0.0)),
                    parse_time(item.get("at")),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise StandinError(400, f"bad record: {exc}") from exc
        return json_response({"recorded": len(items)}, 201)

    @app.get("/_admin/config")
    def admin_get_config() -> Response:
        return json_response(state.configure())

    @app.post("/_admin/config")
    def admin_config() -> Response:
        try:
            return json_response(state.configure(**settings(admin_json())))
        except (TypeError, ValueError) as exc:
            raise StandinError(400, f"bad config: {exc}") from exc

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        state.reset()
        return json_response({})

    return app
