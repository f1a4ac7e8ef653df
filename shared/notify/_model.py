"""What notify consumes, normalised: one parse for four topics, one ``Notice`` per event.

A ``Notice`` carries what routing and filtering need (kind, type, severity, service)
without each stage re-inspecting the wire model.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import (
    Build,
    BuildStatus,
    EventType,
    Incident,
    IncidentNotification,
    OpsEvent,
    OpsPayload,
    parse_build_message,
    parse_incident_message,
    parse_ops_message,
)
from shared.runtime import PubsubMessage

NotifyEvent = Build | OpsEvent[OpsPayload] | IncidentNotification

_BUILD_SEVERITY = {
    BuildStatus.SUCCESS: "info",
    BuildStatus.FAILURE: "error",
    BuildStatus.INTERNAL_ERROR: "error",
    BuildStatus.TIMEOUT: "error",
    BuildStatus.CANCELLED: "warning",
    BuildStatus.EXPIRED: "warning",
}
_OPS_SEVERITY = {
    EventType.SMOKE_PASSED: "info",
    EventType.SMOKE_FAILED: "error",
    EventType.MIGRATION_SUCCEEDED: "info",
    EventType.MIGRATION_FAILED: "error",
    EventType.MIGRATION_SKIPPED: "info",
    EventType.ROLLBACK_SUCCEEDED: "warning",
    EventType.ROLLBACK_SKIPPED: "info",
    EventType.ROLLBACK_FAILED: "critical",
    EventType.ROLLBACK_FROZEN: "critical",
    EventType.KPI_REFRESH_REQUESTED: "info",
}
ESCALATIONS = frozenset({EventType.ROLLBACK_FAILED, EventType.ROLLBACK_FROZEN})


def parse_notify_message(data: bytes, attributes: Mapping[str, str]) -> NotifyEvent:
    """Dispatch on what the message is: ``buildId`` -> a build, ``type`` -> one of ours,
    anything else -> a Cloud Monitoring incident (that channel sets no attributes)."""
    if attributes.get("buildId"):
        return parse_build_message(data, attributes)
    if attributes.get("type"):
        return parse_ops_message(data, attributes)
    return parse_incident_message(data, attributes)


def dedupe_key(event: NotifyEvent, message: PubsubMessage) -> str:
    """The receipt key: one message per build status, per ops event, per incident state.

    Cloud Monitoring retries a webhook it thinks failed, and alert_intake publishes each
    POST as a new Pub/Sub message, so incidents are keyed by (incident_id, state), not
    by message id. Test notifications all share incident_id ``12345``: message id.
    """
    if isinstance(event, Build):
        return f"build:{event.id}:{event.status.value}"
    if isinstance(event, IncidentNotification):
        incident = event.incident
        if event.is_test or not incident.state:
            return f"incident-message:{message.message_id}"
        return f"incident:{incident.incident_id}:{incident.state}"
    return message.event_id


def incident_service(incident: Incident) -> str | None:
    """The service an incident is about: the policy's ``service`` label, else the Cloud
    Run service of its resource."""
    return incident.policy_user_labels.get("service") or incident.cloud_run_service


def incident_severity(incident: Incident) -> str:
    """Cloud Monitoring's severity lowercased (``critical``/``error``/``warning``);
    unset (or "No severity") reads as ``warning``."""
    value = (incident.severity or "").strip().lower()
    return value if value in {"critical", "error", "warning", "info"} else "warning"


@dataclass(frozen=True)
class Notice:
    """One thing worth a message, before routing."""

    kind: str  # build | smoke | migration | rollback | alert
    type: str  # build.FAILURE, sight.ops.rollback.frozen, alert.open, alert.closed, alert.test
    severity: str
    service: str | None
    key: str  # stable per event: the sent-marker key
    event: NotifyEvent

    @property
    def is_escalation(self) -> bool:
        return isinstance(self.event, OpsEvent) and self.event.type in ESCALATIONS

    def log_fields(self) -> dict[str, Any]:
        return {"kind": self.kind, "notice_type": self.type, "service": self.service}


def to_notice(event: NotifyEvent, key: str) -> Notice | None:
    """Normalise; None for what notify never reports (non-terminal builds, kpi events)."""
    if isinstance(event, Build):
        if not event.is_terminal:
            return None
        return Notice(
            "build",
            f"build.{event.status.value}",
            _BUILD_SEVERITY.get(event.status, "warning"),
            event.service,
            key,
            event,
        )
    if isinstance(event, IncidentNotification):
        incident = event.incident
        if event.is_test:
            kind_type = "alert.test"
        elif incident.is_closed:
            kind_type = "alert.closed"
        else:
            kind_type = "alert.open"
        return Notice(
            "alert",
            kind_type,
            "info" if event.is_test else incident_severity(incident),
            incident_service(incident),
            key,
            event,
        )
    family = event.type.value.split(".")[2]  # sight.ops.<family>.<outcome>
    if family not in {"smoke", "migration", "rollback"}:
        return None
    return Notice(
        family,
        event.type.value,
        _OPS_SEVERITY.get(event.type, "info"),
        event.service or getattr(event.data, "service", None),
        key,
        event,
    )
