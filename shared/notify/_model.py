"""What notify consumes, normalised, and what its stages hand each other.

One parse for five topics, one ``Notice`` per event: a ``Notice`` carries what routing
and filtering need (kind, type, severity, service) without each stage re-inspecting the
wire model. ``AlertEntry`` is an alert as grouping keeps it and a message shows it;
``AlertGroupView`` is what one group message is about. Every stage may import this
module; it imports none of them (docs/notify.md, "The pipeline").
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from shared.events import (
    BudgetNotification,
    Build,
    BuildStatus,
    EventType,
    Incident,
    IncidentNotification,
    OpsEvent,
    OpsPayload,
    parse_budget_message,
    parse_build_message,
    parse_incident_message,
    parse_ops_message,
)
from shared.log import REDACTOR
from shared.notify._config import NotifyFileConfig
from shared.runtime import PubsubMessage

NotifyEvent = Build | OpsEvent[OpsPayload] | IncidentNotification | BudgetNotification

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
    EventType.RELEASE_DEPLOYED: "info",
    EventType.RELEASE_PROMOTED: "info",
    EventType.RELEASE_FAILED: "error",
    EventType.CANARY_STARTED: "info",
    EventType.CANARY_STEPPED: "info",
    EventType.CANARY_PROMOTED: "info",
    EventType.CANARY_ROLLED_BACK: "warning",
    EventType.CANARY_STOPPED: "warning",
    EventType.CANARY_HELD: "critical",
    EventType.BACKUP_VERIFIED: "info",
    EventType.BACKUP_FAILED: "error",
}
#: A human must decide: rollback could not move traffic, or the canary stopped short of
#: a verdict (time limit, or frozen by a breaking migration).
ESCALATIONS = frozenset(
    {EventType.ROLLBACK_FAILED, EventType.ROLLBACK_FROZEN, EventType.CANARY_HELD}
)
#: The canary's decisions; ``requested`` and ``tick`` are its input, not news.
CANARY_OUTCOMES = frozenset(
    {
        EventType.CANARY_STARTED,
        EventType.CANARY_STEPPED,
        EventType.CANARY_PROMOTED,
        EventType.CANARY_ROLLED_BACK,
        EventType.CANARY_HELD,
        EventType.CANARY_STOPPED,
    }
)


def parse(data: bytes, attributes: Mapping[str, str]) -> NotifyEvent:
    """Dispatch on what the message is: ``buildId`` -> a build, ``budgetId`` -> a Cloud
    Billing budget notification, ``type`` -> one of ours, anything else -> a Cloud
    Monitoring incident (that channel sets no attributes)."""
    if attributes.get("buildId"):
        return parse_build_message(data, attributes)
    if attributes.get("budgetId"):
        return parse_budget_message(data, attributes)
    if attributes.get("type"):
        return parse_ops_message(data, attributes)
    return parse_incident_message(data, attributes)


#: The former name of :func:`parse` (tests/proof still imports it).
parse_notify_message = parse


def dedupe_key(event: NotifyEvent, message: PubsubMessage) -> str:
    """The receipt key: one message per build status, per ops event, per incident state.

    Cloud Monitoring retries a webhook it thinks failed, and alert_intake publishes each
    POST as a new Pub/Sub message, so incidents are keyed by (incident_id, state), not
    by message id. Test notifications all share incident_id ``12345``: message id.
    Budget notifications are re-sent many times a day with the same state: keyed by what
    they say (budget, period, threshold crossed), so a re-send is a duplicate.
    """
    if isinstance(event, Build):
        return f"build:{event.id}:{event.status.value}"
    if isinstance(event, BudgetNotification):
        return event.crossing_key()
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

    kind: str  # build | smoke | migration | rollback | release | canary | report | alert | budget
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
    """Normalise; None for what notify never reports (non-terminal builds, kpi events, a
    budget below every threshold)."""
    if isinstance(event, BudgetNotification):
        crossing = event.crossing
        if crossing is None:
            return None
        basis, threshold = crossing
        severity = "error" if basis == "actual" and threshold >= 1 else "warning"
        return Notice("budget", f"budget.{basis}", severity, None, key, event)
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
    if family not in {
        "smoke",
        "migration",
        "rollback",
        "release",
        "canary",
        "report",
        "maintain",
        "backup",
    }:
        return None
    if family == "backup" and event.type is EventType.BACKUP_REQUESTED:
        return None  # a request is the function's input, not news
    if family == "canary" and event.type not in CANARY_OUTCOMES:
        return None
    if family == "maintain" and event.type is not EventType.MAINTAIN_COMPLETED:
        return None  # a request is the function's input, not news
    return Notice(
        family,
        event.type.value,
        _OPS_SEVERITY.get(event.type, "info"),
        event.service or getattr(event.data, "service", None),
        key,
        event,
    )


def truncate(value: str, limit: int) -> str:
    """At most ``limit`` characters, an ellipsis marking a cut. Secrets are masked first,
    so a cut never leaves part of one behind."""
    value = REDACTOR.redact(value)
    return value if len(value) <= limit else value[: limit - 1] + "…"


# ---- alerts, as grouping keeps them and messages show them ---------------------------


@dataclass(frozen=True)
class AlertEntry:
    """The part of an incident a message shows; small enough to keep per alert in Redis."""

    incident_id: str
    state: str  # firing | resolved
    policy: str
    service: str | None = None
    severity: str = "warning"
    condition: str | None = None
    observed: str | None = None
    threshold: str | None = None
    resource: str | None = None
    url: str | None = None
    summary: str | None = None
    started_at: float | None = None
    ended_at: float | None = None
    doc_subject: str | None = None
    doc_content: str | None = None
    runbook: str | None = None

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in self.__dict__.items() if v is not None})

    @classmethod
    def from_json(cls, raw: str | bytes) -> AlertEntry:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def runbook_url(policy: str | None, labels: dict[str, str], config: NotifyFileConfig) -> str | None:
    """The runbook for a policy: its ``runbook`` user label, else the first matching rule."""
    name = labels.get("runbook")
    if name and re.fullmatch(r"[a-z0-9\-]+", name.removesuffix(".md")):
        return config.runbook_base_url + name.removesuffix(".md") + ".md"
    for rule in config.runbooks:
        if policy and re.search(rule.policy, policy, re.IGNORECASE):
            return config.runbook_base_url + rule.runbook
    return None


def alert_entry(notification: IncidentNotification, config: NotifyFileConfig) -> AlertEntry:
    """Reduce an incident to what its message shows."""
    incident = notification.incident
    doc = incident.documentation
    resource = incident.resource_display_name or incident.resource_name
    if not resource and incident.resource is not None:
        resource = incident.resource.type
    return AlertEntry(
        incident_id=incident.incident_id,
        state="resolved" if incident.is_closed else "firing",
        policy=incident.policy_name or "(unnamed policy)",
        service=incident_service(incident),
        severity=incident_severity(incident),
        condition=incident.condition_name,
        observed=incident.observed_value,
        threshold=incident.threshold_value,
        resource=resource,
        url=incident.url,
        summary=incident.summary,
        started_at=incident.started_at.timestamp() if incident.started_at else None,
        ended_at=incident.ended_at.timestamp() if incident.ended_at else None,
        doc_subject=doc.subject if doc else None,
        doc_content=truncate(doc.content, 1500) if doc and doc.content else None,
        runbook=runbook_url(incident.policy_name, incident.policy_user_labels, config),
    )


@dataclass(frozen=True)
class AlertGroupView:
    """What one group message is about: the group's labels and its alerts now."""

    labels: dict[str, str]
    firing: tuple[AlertEntry, ...]
    resolved: tuple[AlertEntry, ...]
    reason: str = "first notification"
    test: bool = False

    @property
    def all_resolved(self) -> bool:
        return not self.firing and bool(self.resolved)
