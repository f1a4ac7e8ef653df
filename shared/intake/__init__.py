"""alert_intake: Cloud Monitoring webhook -> ``monitoring-alerts`` (docs/notify.md,
"alert_intake").

Order matters, each step cheaper than the next and each refusal publishing nothing:
method (405) -> Basic auth (401, constant time: :func:`basic_auth`, the
``http_handler`` auth hook) -> size (413: Content-Length first, then at most limit+1
bytes read, never the whole body; both by ``http_handler``) -> schema (400 with the
reason) -> publish (503 only when Pub/Sub is out of reach or misconfigured, so Cloud
Monitoring retries; 400 when Pub/Sub refuses the message itself, which no retry
changes) -> 202. Attributes are made to fit Pub/Sub's limits first
(:func:`attribute_value`), so no body that passed the schema check can make the
publish fail. Errors carry the runtime's one JSON body (docs/architecture.md).

Credentials (``Settings.intake``) are resolved through ``deps.secrets`` (Secret Manager
references or plain values from env), which registers them with the log redactor;
neither the header nor the credentials are ever logged.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import traceback
from typing import TYPE_CHECKING

from shared.errors import InvalidEventError, SightOpsError
from shared.runtime import Deps, HttpContext, HttpError

if TYPE_CHECKING:  # the event models load with the first body parsed (docs/architecture.md)
    from flask import Request

    from shared.events import IncidentNotification
    from shared.settings import Settings

__all__ = [
    "ATTRIBUTE_VALUE_MAX_BYTES",
    "REALM",
    "attribute_value",
    "attributes_for",
    "authorised",
    "basic_auth",
    "body_limit",
    "handle",
]

REALM = 'Basic realm="sight-ops alert_intake", charset="UTF-8"'
#: Pub/Sub's limit on an attribute value, in bytes of UTF-8 (keys: 256 bytes, at most 100
#: attributes, data 10 MB: https://cloud.google.com/pubsub/quotas#resource_limits). Our
#: keys are short constants and our attributes few; the values come from the caller.
ATTRIBUTE_VALUE_MAX_BYTES = 1024


def _credentials(deps: Deps) -> tuple[bytes, bytes] | None:
    config = deps.settings.intake
    if config.username is None or config.password is None:
        return None
    user = deps.secrets.resolve(config.username.get_secret_value(), redact=False)
    password = deps.secrets.resolve(config.password.get_secret_value())
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


def attribute_value(value: str) -> str:
    """``value`` as Pub/Sub takes it: NUL and lone surrogates (no UTF-8 encoder accepts
    one) replaced by U+FFFD, then cut to :data:`ATTRIBUTE_VALUE_MAX_BYTES` bytes of UTF-8
    on a character boundary (never half a character)."""
    from shared.events._common import clean_text

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


def basic_auth(request: Request, deps: Deps) -> None:
    """The ``http_handler`` auth hook: Basic auth against ``Settings.intake``, in
    constant time; 503 while no credentials are configured (Cloud Monitoring retries
    once they are), 401 with a challenge otherwise."""
    try:
        expected = _credentials(deps)
    except SightOpsError as exc:
        raise HttpError(503, "unconfigured", "try later", reason=type(exc).__name__) from None
    if expected is None:
        raise HttpError(
            503,
            "unconfigured",
            "not configured",
            reason="intake credentials are not configured",
        )
    if not authorised(request.headers.get("Authorization"), expected):
        raise HttpError(401, "unauthorised", "unauthorised", headers={"WWW-Authenticate": REALM})


def body_limit(settings: Settings) -> int:
    """``INTAKE__MAX_BODY_BYTES``: the largest webhook body accepted (413 past it)."""
    return settings.intake.max_body_bytes


def handle(request: Request, ctx: HttpContext) -> tuple[dict[str, str], int]:
    """One authenticated webhook POST within the size limit: parse, then publish."""
    from shared.events import parse_incident_body

    del request  # method, auth and size were checked by http_handler
    try:
        notification = parse_incident_body(ctx.body)
    except InvalidEventError as exc:
        raise HttpError(400, "invalid", str(exc), reason=str(exc)) from None
    except Exception as exc:  # a parser bug: the same body crashes it on every retry
        reason = f"parser crashed: {type(exc).__name__}"
        raise HttpError(
            400,
            "invalid",
            reason,
            reason=reason,
            level=logging.ERROR,
            fields={"traceback": traceback.format_exc(limit=8)},
        ) from None
    topic = ctx.deps.settings.topics.monitoring_alerts
    from google.api_core import exceptions as gexc

    try:
        message_id = ctx.deps.publisher.publish(topic, ctx.body, attributes_for(notification))
    except (gexc.InvalidArgument, ValueError, TypeError) as exc:
        # Pub/Sub (or its client) refuses this message itself: a retry sends the same.
        raise HttpError(
            400,
            "unpublishable",
            f"Pub/Sub refused the message: {type(exc).__name__}",
            reason=f"{type(exc).__name__}: {exc}",
        ) from None
    except Exception as exc:  # an outage or a misconfiguration: tell the sender to retry
        raise HttpError(
            503, "publish_failed", "could not publish; retry later", reason=type(exc).__name__
        ) from None
    incident = notification.incident
    ctx.outcome = "published"
    ctx.reason = f"incident {incident.incident_id} ({notification.version}) as {message_id}"
    return {"published": message_id}, 202
