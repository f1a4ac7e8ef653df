"""Cloud Monitoring incident notifications (``monitoring-alerts``, webhook bodies).

A Pub/Sub notification channel publishes the notification JSON as message data; a
webhook channel POSTs the same JSON. Observed shapes, all accepted here:

- ``1.2``: the full incident; ``ended_at`` is null while open; ``resource_id`` and other
  strings are often ``""``; ``documentation`` is an object.
- ``1.1``: sent when the 1.2 body cannot be rendered; far fewer fields, some of them
  empty strings.
- ``test`` ("Send test notification"): ``state`` is ``"OPEN"``, ``started_at`` and
  ``ended_at`` are ``0``, and ``documentation`` is a plain string.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from shared.events._common import (
    EventModel,
    FreeJson,
    FreeLabels,
    FreeText,
    Identifier,
    IdentifierLabels,
    UtcDatetime,
    drop_empty,
    load_json_object,
    validate,
)

_WHAT = "monitoring incident"

NotificationVersion = Literal["1.2", "1.1", "test"]


class _Lenient(EventModel):
    """Empty strings and nulls mean "absent" everywhere in these bodies."""

    @model_validator(mode="before")
    @classmethod
    def _drop_empty(cls, value: Any) -> Any:
        return drop_empty(value)


class IncidentResource(_Lenient):
    """The monitored resource: ``{type, labels}``; rollback decides on both."""

    type: Identifier | None = None
    labels: IdentifierLabels = Field(default_factory=dict)


class IncidentMetric(_Lenient):
    """The metric the condition watched (note the camelCase ``displayName``)."""

    type: FreeText | None = None
    display_name: FreeText | None = Field(default=None, alias="displayName")
    labels: FreeLabels = Field(default_factory=dict)


class IncidentDocumentation(_Lenient):
    """The policy's documentation block; links and unknown keys are ignored."""

    content: FreeText | None = None
    mime_type: FreeText | None = None
    subject: FreeText | None = None


def _epoch_to_utc(value: Any) -> Any:
    """Epoch seconds -> aware UTC datetime; ``0`` is "unset" (the test notification)."""
    if isinstance(value, str):
        stripped = value.strip()
        try:
            value = float(stripped)
        except ValueError:
            return stripped  # an RFC3339 string still validates as a datetime
    if isinstance(value, int | float) and not isinstance(value, bool):
        if value == 0:
            return None
        try:
            return datetime.fromtimestamp(value, tz=UTC)
        except (OverflowError, OSError, ValueError):
            # 1e300 overflows, 1e18 is past year 9999; a ValueError names the field here
            # (pydantic turns it into InvalidEventError), anything else would crash.
            raise ValueError("epoch seconds out of range (years 1-9999 UTC expected)") from None
    return value


class Incident(_Lenient):
    """One incident as notified; only ``incident_id`` is guaranteed (1.1 bodies are sparse).

    ``incident_id`` is the same for the open and the close notification, so it is the
    key for grouping and for pairing "resolved" messages.

    What is decided on or keyed by (the id, state, severity, project, the resource and the
    policy's user labels) is an ``Identifier``: NUL or a lone surrogate there makes the
    body invalid. What is only shown (summary, names, documentation) is ``FreeText``:
    such characters are replaced by U+FFFD and the alert still goes out.
    """

    incident_id: Identifier = Field(min_length=1)
    scoping_project_id: Identifier | None = None
    scoping_project_number: int | None = None
    url: FreeText | None = None
    state: Identifier | None = None
    started_at: UtcDatetime | None = None
    ended_at: UtcDatetime | None = None
    summary: FreeText | None = None
    policy_name: FreeText | None = None
    policy_user_labels: IdentifierLabels = Field(default_factory=dict)
    condition_name: FreeText | None = None
    condition: FreeJson | None = None
    resource: IncidentResource | None = None
    resource_type_display_name: FreeText | None = None
    resource_id: FreeText | None = None
    resource_display_name: FreeText | None = None
    resource_name: FreeText | None = None
    metric: IncidentMetric | None = None
    metadata: FreeJson | None = None
    observed_value: FreeText | None = None
    threshold_value: FreeText | None = None
    documentation: IncidentDocumentation | None = None
    severity: Identifier | None = None

    @field_validator("state", mode="before")
    @classmethod
    def _normalise_state(cls, value: Any) -> Any:
        """``open``/``closed`` in 1.2, ``OPEN`` in test notifications: compare lowercased."""
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("started_at", "ended_at", mode="before")
    @classmethod
    def _epoch(cls, value: Any) -> Any:
        return _epoch_to_utc(value)

    @field_validator("documentation", mode="before")
    @classmethod
    def _documentation(cls, value: Any) -> Any:
        """The test notification sends documentation as a bare string."""
        if isinstance(value, str):
            return {"content": value}
        return value

    @property
    def is_open(self) -> bool:
        """True for an open (firing) incident."""
        return self.state == "open"

    @property
    def is_closed(self) -> bool:
        """True for a close (resolved) notification."""
        return self.state == "closed"

    @property
    def auto_rollback(self) -> bool:
        """The policy opted in to automatic rollback (user label ``auto_rollback=true``)."""
        return self.policy_user_labels.get("auto_rollback", "").strip().lower() == "true"

    @property
    def cloud_run_service(self) -> str | None:
        """The Cloud Run service for a ``cloud_run_revision`` resource, else None."""
        return self._cloud_run_label("service_name")

    @property
    def cloud_run_revision(self) -> str | None:
        """The Cloud Run revision for a ``cloud_run_revision`` resource, if labelled."""
        return self._cloud_run_label("revision_name")

    def _cloud_run_label(self, key: str) -> str | None:
        if self.resource is None or self.resource.type != "cloud_run_revision":
            return None
        return self.resource.labels.get(key) or None


class IncidentNotification(EventModel):
    """The whole body: ``{"version": ..., "incident": {...}}``."""

    version: NotificationVersion
    incident: Incident

    @property
    def is_test(self) -> bool:
        """A "Send test notification" from the console: never act on it, only show it."""
        return self.version == "test"


def parse_incident_body(body: bytes) -> IncidentNotification:
    """Parse a notification body (webhook POST or Pub/Sub data); ``InvalidEventError`` if bad."""
    obj = load_json_object(body, _WHAT)
    return validate(IncidentNotification, obj, _WHAT)


def parse_incident_message(data: bytes, attributes: Mapping[str, str]) -> IncidentNotification:
    """Parse a ``monitoring-alerts`` message; attributes carry nothing we need."""
    del attributes
    return parse_incident_body(data)
