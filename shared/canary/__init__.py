"""Canary analysis: evidence-based traffic steps (docs/canary.md).

- :func:`analyse`, :func:`fold`, :func:`start` -- the sequential tests of one step,
  canary against stable, pure (``_analysis``);
- :func:`next_step` and :class:`StepPlan` -- what the verdict means for the traffic (``_plan``);
- :class:`MonitoringReader` -- Cloud Run's request metrics from Cloud Monitoring as those
  inputs (``_monitoring``);
- :class:`LogsReader` -- Cloud Run's request logs from Cloud Logging as those inputs, in
  10 s periods (``_logs``);
- the typed inputs (:class:`Interval`, :class:`Sample`, :class:`Histogram`) and the
  evidence record (:class:`Evidence`) (``_model``);
- :func:`parse`, :func:`dedupe_key`, :func:`not_before`, :func:`handle` -- the canary
  function's face (``_function``);
- :class:`Canaries` -- lock, re-read, analyse, move the split, record, publish
  (``_orchestrator``); ``_store`` -- ``ops.canaries``;
- :func:`manual_tick`, :func:`manual_promote`, :func:`manual_rollback`,
  :func:`canary_status` -- the CLI adapter (``_cli``).
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.canary._analysis import AnalysisConfig, AnalysisState, analyse, fold, start
    from shared.canary._cli import canary_status, manual_promote, manual_rollback, manual_tick
    from shared.canary._function import dedupe_key, handle, not_before, parse
    from shared.canary._logs import (
        LogsError,
        LogsReader,
        LogsUnavailable,
        logs_reader_for,
        stable_fraction,
    )
    from shared.canary._model import (
        Evidence,
        Histogram,
        Interval,
        Sample,
        TestEvidence,
        Verdict,
        exponential_bounds,
        linear_bounds,
    )
    from shared.canary._monitoring import (
        MonitoringError,
        MonitoringReader,
        MonitoringUnavailable,
        create_metric_client,
        create_monitoring_reader,
        monitoring_reader_for,
    )
    from shared.canary._orchestrator import Canaries, CanaryError, Decision, Report
    from shared.canary._plan import Action, Next, StepPlan, next_step
    from shared.canary._store import CanaryRow
else:  # each name is imported on first use: docs/architecture.md, "Cold start"
    __getattr__ = lazy_attributes(
        __name__,
        {
            "_analysis": ("AnalysisConfig", "AnalysisState", "analyse", "fold", "start"),
            "_cli": ("canary_status", "manual_promote", "manual_rollback", "manual_tick"),
            "_function": ("dedupe_key", "handle", "not_before", "parse"),
            "_logs": (
                "LogsError",
                "LogsReader",
                "LogsUnavailable",
                "logs_reader_for",
                "stable_fraction",
            ),
            "_model": (
                "Evidence",
                "Histogram",
                "Interval",
                "Sample",
                "TestEvidence",
                "Verdict",
                "exponential_bounds",
                "linear_bounds",
            ),
            "_monitoring": (
                "MonitoringError",
                "MonitoringReader",
                "MonitoringUnavailable",
                "create_metric_client",
                "create_monitoring_reader",
                "monitoring_reader_for",
            ),
            "_orchestrator": ("CanaryError", "Canaries", "Decision", "Report"),
            "_plan": ("Action", "Next", "StepPlan", "next_step"),
            "_store": ("CanaryRow",),
        },
    )

__all__ = [
    "Action",
    "AnalysisConfig",
    "AnalysisState",
    "Canaries",
    "CanaryError",
    "CanaryRow",
    "Decision",
    "Evidence",
    "Histogram",
    "Interval",
    "LogsError",
    "LogsReader",
    "LogsUnavailable",
    "MonitoringError",
    "MonitoringReader",
    "MonitoringUnavailable",
    "Next",
    "Report",
    "Sample",
    "StepPlan",
    "TestEvidence",
    "Verdict",
    "analyse",
    "canary_status",
    "create_metric_client",
    "create_monitoring_reader",
    "dedupe_key",
    "exponential_bounds",
    "fold",
    "handle",
    "linear_bounds",
    "logs_reader_for",
    "manual_promote",
    "manual_rollback",
    "manual_tick",
    "monitoring_reader_for",
    "next_step",
    "not_before",
    "parse",
    "stable_fraction",
    "start",
]
