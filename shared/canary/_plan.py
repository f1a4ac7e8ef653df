"""The step plan: given the current step, the analysis and the time spent on the step,
what to do next. Pure; docs/canary.md, "The step plan", has the table.

| verdict | time on the step | next |
|---|---|---|
| ROLLBACK | any | roll back (0 % to the canary) |
| PROMOTE_STEP | any | the next step (PROMOTE when it is 100 %) |
| CONTINUE | below ``max_step_time`` | wait for the next analysis |
| CONTINUE | ``max_step_time`` or more, the evidence leans "not worse" | the next step |
| CONTINUE | ``max_step_time`` or more, otherwise | HOLD: keep the split, ask a human |

At the time limit a CONTINUE never becomes a rollback: that would spend the
false-rollback budget without the evidence the test demands. It becomes a promotion only
when the canary served the minimum requests and both tests lean "not worse" (the data is
likelier under "no worse" than under "``worse_ratio`` times worse"), which a revision
with too little traffic for a verdict but no sign of harm satisfies; anything else holds
at the current share, where the exposure is bounded, and waits for a human.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from shared.canary._model import Evidence, Verdict
from shared.settings import CanaryPlan, check_steps


class Action(StrEnum):
    """What the canary does after an analysis."""

    WAIT = "wait"  # analyse again at the next wake-up
    STEP = "step"  # give the canary ``percent`` of the traffic
    PROMOTE = "promote"  # the canary takes 100 %: the release is done
    ROLLBACK = "rollback"  # all traffic back to the stable revision
    HOLD = "hold"  # time limit without a verdict: keep the split, ask a human


@dataclass(frozen=True, slots=True)
class StepPlan:
    """Traffic steps (percent to the canary, ending at 100) and the time limit per step."""

    steps: tuple[int, ...] = (5, 25, 50, 100)
    max_step_time: timedelta = timedelta(minutes=30)

    def __post_init__(self) -> None:
        check_steps(self.steps)
        if self.max_step_time <= timedelta(0):
            raise ValueError("max_step_time must be positive")

    @classmethod
    def of(cls, plan: CanaryPlan) -> StepPlan:
        """The step plan of one service's settings (``canary.services``)."""
        return cls(tuple(plan.steps), timedelta(seconds=plan.max_step_s))

    @property
    def analysed_steps(self) -> int:
        """Steps whose canary is compared with stable (every one before 100 %)."""
        return len(self.steps) - 1

    def after(self, percent: int) -> int:
        """The step after ``percent``."""
        if percent not in self.steps:
            raise ValueError(f"{percent}% is not a step of {list(self.steps)}")
        index = self.steps.index(percent)
        return self.steps[min(index + 1, len(self.steps) - 1)]


@dataclass(frozen=True, slots=True)
class Next:
    """The decision: an action, the canary's share after it, and why."""

    action: Action
    percent: int
    reason: str


def next_step(plan: StepPlan, percent: int, evidence: Evidence, elapsed: timedelta) -> Next:
    """What to do on the step at ``percent`` after ``elapsed`` on it, given its analysis."""
    following = plan.after(percent)
    if percent == 100:
        return Next(Action.PROMOTE, 100, "the canary already serves 100%")

    def forward(reason: str) -> Next:
        return Next(Action.PROMOTE if following == 100 else Action.STEP, following, reason)

    if evidence.verdict is Verdict.ROLLBACK:
        return Next(Action.ROLLBACK, 0, evidence.reason)
    if evidence.verdict is Verdict.PROMOTE_STEP:
        return forward(evidence.reason)
    if elapsed < plan.max_step_time:
        return Next(Action.WAIT, percent, evidence.reason)
    limit = _minutes(plan.max_step_time)
    if evidence.leans_not_worse:
        return forward(
            f"no verdict after {limit} at {percent}%, and the evidence leans not worse "
            f"({evidence.reason})"
        )
    return Next(
        Action.HOLD,
        percent,
        f"no verdict after {limit} at {percent}% and the evidence does not lean "
        f"not worse ({evidence.reason}); holding for a human",
    )


def _minutes(delta: timedelta) -> str:
    minutes = delta.total_seconds() / 60
    return f"{minutes:g} min"
