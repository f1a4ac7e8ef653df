"""Rollback (DESIGN.md 4.2): put traffic back on the last known-good revision, or
freeze and escalate when moving back is unsafe. docs/rollback.md.

- :func:`decide` -- the decision, a pure function over typed inputs (``_model``);
- :class:`CloudRun` -- google-cloud-run: read a service, pin its traffic, verify;
- :class:`Rollbacks` / :func:`handle` -- lock, read, decide, mark, act, record, publish;
- :func:`manual_rollback`, :func:`manual_mark` -- the same from ``sightops``.
"""

from shared.rollback._cloudrun import (
    CloudRun,
    CloudRunError,
    OperationFailed,
    ServiceNotFound,
    TrafficChanged,
    TrafficConflict,
    UpdateOutcomeUnknown,
    cloud_run_for,
    create_cloud_run,
)
from shared.rollback._decide import (
    breaking_after,
    decide,
    incident_trigger,
    newest_known_good,
    rollback_traffic,
)
from shared.rollback._model import (
    BreakingMigration,
    Decision,
    Health,
    HealthRecord,
    Policy,
    RevisionInfo,
    ServiceState,
    TrafficItem,
    Trigger,
    Verdict,
)
from shared.rollback._run import (
    Report,
    RollbackInput,
    Rollbacks,
    from_webhook,
    handle,
    manual_mark,
    manual_rollback,
    parse_rollback_message,
    rollback_dedupe_key,
)
from shared.rollback._store import load_health

__all__ = [
    "BreakingMigration",
    "CloudRun",
    "CloudRunError",
    "Decision",
    "Health",
    "HealthRecord",
    "OperationFailed",
    "Policy",
    "Report",
    "RevisionInfo",
    "RollbackInput",
    "Rollbacks",
    "ServiceNotFound",
    "ServiceState",
    "TrafficChanged",
    "TrafficConflict",
    "TrafficItem",
    "Trigger",
    "UpdateOutcomeUnknown",
    "Verdict",
    "breaking_after",
    "cloud_run_for",
    "create_cloud_run",
    "decide",
    "from_webhook",
    "handle",
    "incident_trigger",
    "load_health",
    "manual_mark",
    "manual_rollback",
    "newest_known_good",
    "parse_rollback_message",
    "rollback_dedupe_key",
    "rollback_traffic",
]
