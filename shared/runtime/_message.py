"""Pub/Sub message extraction: pure functions from the two delivery forms.

Eventarc delivers a CloudEvent whose data is ``{"message": {...}, "subscription": ...}``;
functions-framework turns a raw push body into the same CloudEvent. Both end here.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.errors import InvalidEventError

_TOPIC_IN_SOURCE = re.compile(r"projects/[^/]+/topics/(?P<topic>[^/]+)$")


@dataclass(frozen=True)
class PubsubMessage:
    data: bytes
    attributes: Mapping[str, str]
    message_id: str
    publish_time: datetime | None
    topic: str | None = None
    subscription: str | None = None
    trace: str | None = None
    delivery_attempt: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @property
    def event_id(self) -> str:
        """Our events carry their own id (stable across re-publishes); others use Pub/Sub's."""
        return self.attributes.get("id") or self.message_id

    @property
    def event_type(self) -> str | None:
        return self.attributes.get("type")

    @property
    def label(self) -> str:
        """What the message is, for a span name: our ``type``, a build's status, else
        its topic."""
        if self.event_type:
            return self.event_type
        if self.attributes.get("buildId"):
            return f"build.{self.attributes.get('status') or 'UNKNOWN'}"
        return self.topic or "message"

    @property
    def traceparent(self) -> str | None:
        """The W3C trace context the publisher attached (docs/release.md)."""
        return self.attributes.get("traceparent") or None

    @property
    def tracestate(self) -> str | None:
        return self.attributes.get("tracestate") or None

    @property
    def event_time(self) -> datetime | None:
        """When the event happened: our ``time`` attribute if valid, else publish time."""
        stamp = self.attributes.get("time")
        if stamp:
            parsed = parse_rfc3339(stamp)
            if parsed is not None:
                return parsed
        return self.publish_time


def parse_rfc3339(value: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):  # 9999-12-31T23:59:59-14:00 is past year 9999 in UTC
        return None


def message_from_envelope(
    envelope: Mapping[str, Any], source: str | None = None, trace: str | None = None
) -> PubsubMessage:
    """A ``{"message": ..., "subscription": ...}`` envelope to a :class:`PubsubMessage`."""
    message = envelope.get("message")
    if not isinstance(message, Mapping):
        raise InvalidEventError("envelope has no 'message' object")
    message_id = message.get("messageId") or message.get("message_id")
    if not message_id:
        raise InvalidEventError("message has no messageId")
    encoded = message.get("data") or ""
    try:
        data = base64.b64decode(encoded, validate=True) if encoded else b""
    except (binascii.Error, ValueError, TypeError) as exc:
        raise InvalidEventError("message data is not valid base64") from exc
    attributes = message.get("attributes") or {}
    if not isinstance(attributes, Mapping):
        raise InvalidEventError("message attributes is not an object")
    publish_time = message.get("publishTime") or message.get("publish_time")
    topic = None
    if source:
        match = _TOPIC_IN_SOURCE.search(source)
        topic = match.group("topic") if match else None
    attempt = envelope.get("deliveryAttempt")
    return PubsubMessage(
        data=data,
        attributes={str(k): str(v) for k, v in attributes.items()},
        message_id=str(message_id),
        publish_time=parse_rfc3339(publish_time) if isinstance(publish_time, str) else None,
        topic=topic,
        subscription=envelope.get("subscription"),
        trace=trace,
        delivery_attempt=_delivery_attempt(attempt),
        raw=envelope,
    )


def _delivery_attempt(value: Any) -> int | None:
    """Pub/Sub's ``deliveryAttempt``, or None for anything that is not a plain count
    (``"²"`` passes ``str.isdigit`` but not ``int``)."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        return None
    text = str(value)
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else None


def message_from_cloudevent(event: Any) -> PubsubMessage:
    """A functions-framework CloudEvent (either delivery form) to a :class:`PubsubMessage`."""
    data = event.data
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError("CloudEvent data is not JSON") from exc
    if not isinstance(data, Mapping):
        raise InvalidEventError("CloudEvent data is not a Pub/Sub envelope")
    attributes = event.get_attributes() if hasattr(event, "get_attributes") else {}
    trace = attributes.get("traceparent") or request_traceparent()
    return message_from_envelope(data, source=attributes.get("source"), trace=trace)


def salvage_cloudevent(event: Any) -> PubsubMessage:
    """What can be kept of a delivery :func:`message_from_cloudevent` refused; never raises.

    The raw CloudEvent data becomes the payload (bytes as received, anything else as
    JSON), with the messageId and attributes when the envelope still has them, so a
    rejected delivery is kept whole (docs/architecture.md) and can be found by its id.
    """
    data = getattr(event, "data", None)
    payload: bytes
    if isinstance(data, bytes):
        payload = data
    elif isinstance(data, str):
        payload = data.encode("utf-8", "surrogatepass")
    else:
        try:
            payload = json.dumps(data, default=str).encode()
        except (TypeError, ValueError):  # circular or otherwise unencodable
            payload = repr(data).encode("utf-8", "surrogatepass")
    envelope = data
    if isinstance(data, bytes | str):
        try:
            envelope = json.loads(data)
        except (ValueError, RecursionError):
            envelope = None
    message = envelope.get("message") if isinstance(envelope, Mapping) else None
    message_id = ""
    attributes: dict[str, str] = {}
    if isinstance(message, Mapping):
        found = message.get("messageId") or message.get("message_id")
        if isinstance(found, str | int) and not isinstance(found, bool):
            message_id = str(found)
        raw_attributes = message.get("attributes")
        if isinstance(raw_attributes, Mapping):
            attributes = {str(k): str(v) for k, v in raw_attributes.items()}
    return PubsubMessage(
        data=payload, attributes=attributes, message_id=message_id, publish_time=None
    )


def request_traceparent() -> str | None:
    """W3C ``traceparent`` (or Cloud's ``X-Cloud-Trace-Context``) of the HTTP request, if any.

    Eventarc puts trace context in the HTTP headers, not only in a CloudEvent extension.
    """
    import flask

    if not flask.has_request_context():
        return None
    headers = flask.request.headers
    if headers.get("traceparent"):
        return headers["traceparent"]
    cloud = headers.get("X-Cloud-Trace-Context", "")
    trace_id = cloud.split("/", 1)[0]
    return f"00-{trace_id}-0000000000000000-01" if len(trace_id) == 32 else None


def cloud_trace(traceparent: str | None, project: str) -> str | None:
    """Cloud Logging's ``logging.googleapis.com/trace`` value for a W3C ``traceparent``
    (``projects/P/traces/ID``), or None when there is no usable trace id."""
    if not traceparent:
        return None
    parts = traceparent.split("-")
    if len(parts) < 3 or len(parts[1]) != 32:
        return None
    return f"projects/{project}/traces/{parts[1]}"
