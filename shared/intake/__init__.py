"""alert_intake: Cloud Monitoring webhook -> ``monitoring-alerts`` (DESIGN.md 4.4).

Order matters, each step cheaper than the next and each refusal publishing nothing:
method (405) -> Basic auth (401, constant time) -> size (413: Content-Length first, then
at most limit+1 bytes read, never the whole body) -> schema (400 with the reason) ->
publish (503 only when Pub/Sub is out of reach or misconfigured, so Cloud Monitoring
retries; 400 when Pub/Sub refuses the message itself, which no retry changes) -> 202.
Attributes are made to fit Pub/Sub's limits first (:func:`attribute_value`), so no body
that passed the schema check can make the publish fail.

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
from shared.events._common import clean_text
from shared.log import labels, redact
from shared.runtime import Deps

logger = logging.getLogger("sightops.alert_intake")

REALM = 'Basic realm="sight-ops alert_intake", charset="UTF-8"'
#: Pub/Sub's limit on an attribute value, in bytes of UTF-8 (keys: 256 bytes, at most 100
#: attributes, data 10 MB: https://cloud.google.com/pubsub/quotas#resource_limits). Our
#: keys are short constants and our attributes few; the values come from the caller.
ATTRIBUTE_VALUE_MAX_BYTES = 1024


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


def attribute_value(value: str) -> str:
    """``value`` as Pub/Sub takes it: NUL and lone surrogates (no UTF-8 encoder accepts
    one) replaced by U+FFFD, then cut to :data:`ATTRIBUTE_VALUE_MAX_BYTES` bytes of UTF-8
    on a character boundary (never half a character)."""
    encoded = clean_text(value).encode("utf-8")
    if len(encoded) <= ATTRIBUTE_VALUE_MAX_BYTES:
        return encoded.decode("utf-8")
    # The cut may end inside a character; "ignore" drops only that incomplete tail.
    return encoded[:ATTRIBUTE_VALUE_MAX_BYTES].decode("utf-8", "ignore")


def attributes_for(notification: IncidentNotification) -> dict[str, str]:
    """Attributes that let subscribers filter without decoding (never ``type`` or
    ``buildId``: notify dispatches on those)."""
    incident = notification.incident
    attributes = {
        "incident_id": incident.incident_id,
        "version": notification.version,
        "source": "alert_intake",
        # Set by us, never by the caller: rollback's subscription filters it out and its
        # handler skips it; only the Pub/Sub notification channel moves traffic
        # (docs/rollback.md).
        "origin": "webhook",
    }
    if incident.state:
        attributes["state"] = incident.state
    if incident.policy_name:
        attributes["policy"] = incident.policy_name
    return {key: attribute_value(value) for key, value in attributes.items()}


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
    except Exception as exc:  # a parser bug: the same body crashes it on every retry
        reason = f"parser crashed: {type(exc).__name__}"
        logger.exception("alert_intake: %s", reason)
        return 400, "invalid", reason, _answer(400, {"error": reason})
    topic = deps.settings.topics.monitoring_alerts
    from google.api_core import exceptions as gexc

    try:
        message_id = deps.publisher.publish(topic, body, attributes_for(notification))
    except (gexc.InvalidArgument, ValueError, TypeError) as exc:
        # Pub/Sub (or its client) refuses this message itself: a retry sends the same.
        return (
            400,
            "unpublishable",
            f"{type(exc).__name__}: {exc}",
            _answer(400, {"error": f"Pub/Sub refused the message: {type(exc).__name__}"}),
        )
    except Exception as exc:  # an outage or a misconfiguration: tell the sender to retry
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
