"""Canary analysis: evidence-based traffic steps (docs/canary.md).

- :func:`analyse`, :func:`fold`, :func:`start` -- the sequential tests of one step,
  canary against stable, pure (``_analysis``);
- :func:`next_step` and :class:`StepPlan` -- what the verdict means for the traffic (``_plan``);
- the typed inputs (:class:`Interval`, :class:`Sample`, :class:`Histogram`) and the
  evidence record (:class:`Evidence`) (``_model``).
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.canary._analysis import AnalysisConfig, AnalysisState, analyse, fold, start
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
    from shared.canary._plan import Action, Next, StepPlan, next_step
else:  # each name is imported on first use: docs/architecture.md, "Cold start"
    __getattr__ = lazy_attributes(
        __name__,
        {
            "_analysis": ("AnalysisConfig", "AnalysisState", "analyse", "fold", "start"),
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
            "_plan": ("Action", "Next", "StepPlan", "next_step"),
        },
    )

__all__ = [
    "Action",
    "AnalysisConfig",
    "AnalysisState",
    "Evidence",
    "Histogram",
    "Interval",
    "Next",
    "Sample",
    "StepPlan",
    "TestEvidence",
    "Verdict",
    "analyse",
    "exponential_bounds",
    "fold",
    "linear_bounds",
    "next_step",
    "start",
]
