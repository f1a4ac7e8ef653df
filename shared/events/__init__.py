"""Typed models and lenient parsers for every event sight-ops consumes or produces.

Parsers share one signature, ``parse_xxx(data: bytes, attributes: Mapping[str, str])``,
are pure (no I/O), and raise ``shared.errors.InvalidEventError`` with a short, human
reason for any message that can never be handled, so the runtime can acknowledge and
count it instead of retrying it forever. Wire formats: ``docs/events.md``.
"""

from shared.events._cloudbuild import (
    Build,
    BuildResults,
    BuildSelector,
    BuildStatus,
    BuiltImage,
    FailureInfo,
    parse_build_message,
)
from shared.events._monitoring import (
    Incident,
    IncidentDocumentation,
    IncidentMetric,
    IncidentNotification,
    IncidentResource,
    NotificationVersion,
    parse_incident_body,
    parse_incident_message,
)
from shared.events._ops import (
    MAX_STATEMENT_CHARS,
    PAYLOAD_TYPES,
    Clock,
    EventType,
    GraphVersions,
    KpiRefreshRequested,
    LintFinding,
    LintSeverity,
    MigrationResult,
    OpsEvent,
    OpsPayload,
    PostgresRevisions,
    RollbackResult,
    SmokeCheck,
    SmokeResult,
    parse_ops_message,
)

__all__ = [
    "MAX_STATEMENT_CHARS",
    "PAYLOAD_TYPES",
    "Build",
    "BuildResults",
    "BuildSelector",
    "BuildStatus",
    "BuiltImage",
    "Clock",
    "EventType",
    "FailureInfo",
    "GraphVersions",
    "Incident",
    "IncidentDocumentation",
    "IncidentMetric",
    "IncidentNotification",
    "IncidentResource",
    "KpiRefreshRequested",
    "LintFinding",
    "LintSeverity",
    "MigrationResult",
    "NotificationVersion",
    "OpsEvent",
    "OpsPayload",
    "PostgresRevisions",
    "RollbackResult",
    "SmokeCheck",
    "SmokeResult",
    "parse_build_message",
    "parse_incident_body",
    "parse_incident_message",
    "parse_ops_message",
]
