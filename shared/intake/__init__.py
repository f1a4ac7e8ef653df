"""alert_intake: Cloud Monitoring webhook -> ``monitoring-alerts`` (DESIGN.md 4.4).

Order matters, each step cheaper than the next and each refusal publishing nothing:
method (405) -> Basic auth (401, constant time) -> size (413: Content-Length first, then
at most limit+1 bytes read, never the whole body) -> schema (400 with the reason) ->
publish (503 on failure, so Cloud Monitoring retries) -> 202.

Credentials are resolved through ``deps.secrets`` (Secret Manager references or plain
values from env), which registers them with the log redactor; neither the header nor
the credentials are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import time
from typing import Any

from flask import Request, Response

from shared.errors import InvalidEventError, SightOpsError
from shared.events import IncidentNotification, parse_incident_body
from shared.log import labels, redact
from shared.runtime import Deps

logger = logging.getLogger("sightops.alert_intake")

REALM = 'Basic realm="sight-ops alert_intake", charset="UTF-8"'
#: Pub/Sub attribute values are limited to 1024 bytes.
_ATTRIBUTE_MAX = 1000


def _answer(status: int, body: dict[str, Any], **headers: str) -> Response:
    response = Response(json.dumps(body), status=status, content_type="application/json")
    for key, value in headers.items():
        response.headers[key.replace("_", "-")] = value
    return response


def _credentials(deps: Deps) -> tuple[bytes, bytes] | None:
    config = deps.settings.notify
    if config.intake_username is None or config.intake_password is None:
        return None
    user = deps.secrets.resolve(config.intake_username.get_secret_value())
    password = deps.secrets.resolve(config.intake_password.get_secret_value())
    if not user or not password:
        return None
    return user.encode("utf-8"), password.encode("utf-8")


def _presented(header: str | None) -> tuple[bytes, bytes]:
    """(user, password) from an ``Authorization: Basic`` header; empty when absent/bad."""
    if not header:
        return b"", b""
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return b"", b""
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return b"", b""
    user, sep, password = decoded.partition(b":")
    return (user, password) if sep else (b"", b"")


def authorised(header: str | None, expected: tuple[bytes, bytes]) -> bool:
    """Constant time in the credentials: both comparisons always run (``&``, not ``and``),
    so a wrong user takes as long as a wrong password."""
    user, password = _presented(header)
    user_ok = hmac.compare_digest(user, expected[0])
    password_ok = hmac.compare_digest(password, expected[1])
    return bool(user_ok & password_ok) and bool(user)


def _read_limited(request: Request, limit: int) -> bytes | None:
    """The body, or None when it is larger than ``limit`` (reads at most limit+1 bytes)."""
    length = request.content_length
    if length is not None and length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def attributes_for(notification: IncidentNotification) -> dict[str, str]:
    """Attributes that let subscribers filter without decoding (never ``type`` or
    ``buildId``: notify dispatches on those)."""
    incident = notification.incident
    attributes = {
        "incident_id": incident.incident_id,
        "version": notification.version,
        "source": "alert_intake",
    }
    if incident.state:
        attributes["state"] = incident.state
    if incident.policy_name:
        attributes["policy"] = incident.policy_name.encode()[:_ATTRIBUTE_MAX].decode(
            "utf-8", "ignore"
        )
    return {k: v[:_ATTRIBUTE_MAX] for k, v in attributes.items()}


def handle_intake(request: Request, deps: Deps) -> Response:
    """One webhook POST; see the module docstring for the order of checks."""
    started = time.perf_counter()
    status, outcome, detail = 500, "error", ""
    try:
        status, outcome, detail, response = _handle(request, deps)
        return response
    finally:
        level = logging.INFO if status < 400 else logging.WARNING
        logger.log(
            level,
            "alert_intake: %s %d%s",
            outcome,
            status,
            f": {redact(detail)}" if detail else "",
            extra={
                **labels(function="alert_intake", outcome=outcome),
                "status": status,
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            },
        )


def _handle(request: Request, deps: Deps) -> tuple[int, str, str, Response]:
    if request.method != "POST":
        return 405, "method", request.method, _answer(405, {"error": "POST only"}, Allow="POST")
    try:
        expected = _credentials(deps)
    except SightOpsError as exc:
        return 503, "unconfigured", type(exc).__name__, _answer(503, {"error": "try later"})
    if expected is None:
        # Misconfiguration: 503 so Cloud Monitoring retries once it is fixed.
        return (
            503,
            "unconfigured",
            "intake credentials are not configured",
            _answer(503, {"error": "not configured"}),
        )
    if not authorised(request.headers.get("Authorization"), expected):
        return (
            401,
            "unauthorised",
            "",
            _answer(401, {"error": "unauthorised"}, WWW_Authenticate=REALM),
        )
    limit = deps.settings.notify.intake_max_body_bytes
    body = _read_limited(request, limit)
    if body is None:
        return (
            413,
            "too_large",
            f"body over {limit} bytes",
            _answer(413, {"error": f"body is larger than {limit} bytes"}),
        )
    try:
        notification = parse_incident_body(body)
    except InvalidEventError as exc:
        return 400, "invalid", str(exc), _answer(400, {"error": str(exc)})
    topic = deps.settings.topics.monitoring_alerts
    try:
        message_id = deps.publisher.publish(topic, body, attributes_for(notification))
    except Exception as exc:  # any publish failure: tell the sender to retry
        return (
            503,
            "publish_failed",
            type(exc).__name__,
            _answer(503, {"error": "could not publish; retry later"}),
        )
    return (
        202,
        "published",
        f"incident {notification.incident.incident_id} ({notification.version}) as {message_id}",
        _answer(202, {"published": message_id}),
    )
