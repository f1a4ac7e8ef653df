"""Rollback: put traffic back on the last known-good revision, or freeze and escalate
when moving back is unsafe (docs/rollback.md).

- :func:`parse`, :func:`dedupe_key`, :func:`handle` -- the function's face (``_function``);
- :class:`Rollbacks` (``_orchestrator``) -- lock, read, decide, mark, act, record, publish;
- ``_store`` -- persistence only: the service lock, health, the decision journal;
- :func:`manual_rollback`, :func:`manual_mark` -- the CLI adapter (``_cli``);
- :func:`decide` -- the decision, a pure function over typed inputs (``_model``);
- :class:`CloudRun` -- google-cloud-run: read a service, pin its traffic, verify.
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.rollback._cli import manual_mark, manual_rollback
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

    # a type alias only (no run-time object): re-exported for annotations, not in __all__
    from shared.rollback._function import RollbackInput as RollbackInput
    from shared.rollback._function import dedupe_key, from_webhook, handle, parse
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
    from shared.rollback._orchestrator import Report, Rollbacks
    from shared.rollback._store import load_health
else:  # each name is imported on first use: docs/architecture.md, "Cold start"
    __getattr__ = lazy_attributes(
        __name__,
        {
            "_cli": ("manual_mark", "manual_rollback"),
            "_cloudrun": (
                "CloudRun",
                "CloudRunError",
                "OperationFailed",
                "ServiceNotFound",
                "TrafficChanged",
                "TrafficConflict",
                "UpdateOutcomeUnknown",
                "cloud_run_for",
                "create_cloud_run",
            ),
            "_decide": (
                "breaking_after",
                "decide",
                "incident_trigger",
                "newest_known_good",
                "rollback_traffic",
            ),
            "_function": (
                "dedupe_key",
                "from_webhook",
                "handle",
                "parse",
            ),
            "_model": (
                "BreakingMigration",
                "Decision",
                "Health",
                "HealthRecord",
                "Policy",
                "RevisionInfo",
                "ServiceState",
                "TrafficItem",
                "Trigger",
                "Verdict",
            ),
            "_orchestrator": ("Report", "Rollbacks"),
            "_store": ("load_health",),
        },
    )

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
    "dedupe_key",
    "from_webhook",
    "handle",
    "incident_trigger",
    "load_health",
    "manual_mark",
    "manual_rollback",
    "newest_known_good",
    "parse",
    "rollback_traffic",
]
