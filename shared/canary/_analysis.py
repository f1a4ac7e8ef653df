"""The canary analysis: two sequential tests, canary against stable, as pure functions.

Each test counts *events* in both revisions over the same aligned intervals: 5xx
responses (``errors``), and requests at or above the stable revision's p95 latency
boundary as known before the interval (``latency``). Given an interval's requests per
revision, an event is the canary's with probability ``pi(r) = n_c r / (n_c r + n_s)``
where ``r`` is the ratio of the canary's event rate to the stable's (exact for Poisson
counts, conservative for binomial ones: docs/canary.md, "Why the error rates hold").
Per test and per step:

- ROLLBACK when the mixture likelihood ratio of ``r`` in ``alternatives`` against
  ``r = 1`` reaches ``1 / alpha``. It is a nonnegative supermartingale while the canary
  is no worse, so by Ville's inequality a healthy canary is rolled back by that test in
  that step with probability at most ``alpha`` however often it is analysed. The
  ``alpha`` of the tests and steps of a release add up to ``false_rollback``
  (:meth:`AnalysisConfig.alpha_of`), so by the union bound a canary that is no worse is
  rolled back with probability at most ``false_rollback`` per release;
- the test passes when the likelihood ratio of ``r = 1`` against ``r = worse_ratio``
  reaches ``1 / false_promote`` (a canary ``worse_ratio`` times worse passes with
  probability at most ``false_promote``); PROMOTE_STEP once both tests passed and the
  canary served ``min_requests``.

The verdict is the first boundary crossed, interval by interval (a sequential test stops
there); :func:`analyse` replays a step's intervals, :func:`fold` adds one at a time.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from shared.canary._model import (
    Evidence,
    Histogram,
    Interval,
    Outcome,
    TestEvidence,
    Verdict,
    quantile_index,
)


@dataclass(frozen=True, slots=True)
class AnalysisConfig:
    """The test's parameters, the same for every service (docs/canary.md, "Parameters")."""

    #: probability of rolling back a canary that is no worse, per release (all analysed
    #: steps, both tests): split over the steps by ``step_weights`` and between the tests
    #: by ``errors_share``
    false_rollback: float = 0.01
    #: steps analysed per release (5 → 25 → 50 → 100 analyses three)
    analysed_steps: int = 3
    #: each analysed step's share of ``false_rollback``, first step first, summing to 1;
    #: None: half to the first step (where a bad canary is cheapest to stop and evidence
    #: comes slowest), the rest equally to the others
    step_weights: tuple[float, ...] | None = None
    #: the errors test's share of a step's budget; the latency test, whose events are
    #: several times as frequent (5 % of requests against a fraction of a percent of
    #: 5xx), gets the rest
    errors_share: float = 0.8
    #: probability that a test passes a canary ``worse_ratio`` times worse, per step
    false_promote: float = 0.05
    worse_ratio: float = 3.0
    #: the rate ratios the rollback mixture weighs equally: 3-45x within a factor of
    #: sqrt(2) of one, nothing inside the indifference zone below ``worse_ratio``
    alternatives: tuple[float, ...] = (4.0, 8.0, 16.0, 32.0)
    latency_quantile: float = 0.95
    #: canary requests in the step before a promotion
    min_requests: int = 100
    #: canary requests, and canary events of the test, in the step before a rollback
    min_rollback_requests: int = 50
    min_events: int = 3
    _log_alternatives: tuple[float, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not 0 < self.false_rollback < 1 or not 0 < self.false_promote < 1:
            raise ValueError("error rates must be within (0, 1)")
        if self.analysed_steps < 1:
            raise ValueError("analysed_steps must be at least 1")
        if not 0 < self.errors_share < 1:
            raise ValueError("errors_share must be within (0, 1)")
        if not self.alternatives or any(r <= 1 for r in self.alternatives):
            raise ValueError("alternatives must be rate ratios above 1")
        if self.worse_ratio <= 1:
            raise ValueError("worse_ratio must be above 1")
        if not 0.5 <= self.latency_quantile < 1:
            raise ValueError("latency_quantile must be within [0.5, 1)")
        steps = self.step_weights
        if steps is None:
            first = 1.0 if self.analysed_steps == 1 else 0.5
            rest = (1 - first) / max(1, self.analysed_steps - 1)
            steps = (first,) + (rest,) * (self.analysed_steps - 1)
        if len(steps) != self.analysed_steps:
            raise ValueError(f"step_weights must have {self.analysed_steps} weights")
        if any(w <= 0 for w in steps) or not math.isclose(sum(steps), 1.0, abs_tol=1e-9):
            raise ValueError(f"step_weights must be positive and sum to 1, not {list(steps)}")
        object.__setattr__(self, "step_weights", tuple(steps))
        object.__setattr__(self, "_log_alternatives", tuple(math.log(r) for r in self.alternatives))

    def alpha_of(self, test: Literal["errors", "latency"], step: int | None = None) -> float:
        """False-rollback probability of ``test`` in the analysed step ``step`` (0: the
        first). Summed over both tests and every step they make ``false_rollback``.

        ``step=None`` gives every step an equal share instead of ``step_weights``. A
        caller passes ``step`` for every step of a release or for none: mixing the two
        could spend more than ``false_rollback``.
        """
        if step is None:
            share = 1 / self.analysed_steps
        elif 0 <= step < self.analysed_steps:
            assert self.step_weights is not None  # set by __post_init__
            share = self.step_weights[step]
        else:
            raise ValueError(f"step {step} is not one of the {self.analysed_steps} analysed")
        split = self.errors_share if test == "errors" else 1 - self.errors_share
        return self.false_rollback * share * split

    def rollback_at_of(self, test: Literal["errors", "latency"], step: int | None = None) -> float:
        """The log-likelihood ratio at which ``test`` rolls back in ``step``: log(1/alpha)."""
        return math.log(1 / self.alpha_of(test, step))

    @property
    def alpha(self) -> float:
        """False-rollback probability of the errors test in one step of equal shares."""
        return self.alpha_of("errors")

    @property
    def rollback_at(self) -> float:
        return math.log(1 / self.alpha)

    @property
    def promote_at(self) -> float:
        return math.log(1 / self.false_promote)


@dataclass(frozen=True, slots=True)
class _Test:
    """One test's running sums over the step (log-likelihood ratios against r = 1)."""

    name: Literal["errors", "latency"]
    log_lr: tuple[float, ...]
    #: log(1 / alpha) of this test in this step
    rollback_at: float
    log_lr_bad: float = 0.0
    canary_requests: int = 0
    canary_events: int = 0
    stable_requests: int = 0
    stable_events: int = 0
    passed: bool = False
    threshold_ms: float | None = None

    def add(
        self,
        config: AnalysisConfig,
        n_c: int,
        x_c: int,
        n_s: int,
        x_s: int,
        threshold_ms: float | None = None,
    ) -> _Test:
        log_lr, log_lr_bad = self.log_lr, self.log_lr_bad
        events = x_c + x_s
        if n_c > 0 and n_s > 0 and events > 0:
            # log [pi(r)^x_c (1 - pi(r))^x_s / (pi(1)^x_c (1 - pi(1))^x_s)]
            #   = x_c log r + (x_c + x_s) log((n_c + n_s) / (n_c r + n_s))
            total = n_c + n_s
            log_lr = tuple(
                acc + x_c * log_r + events * math.log(total / (n_c * r + n_s))
                for acc, r, log_r in zip(
                    log_lr, config.alternatives, config._log_alternatives, strict=True
                )
            )
            bad = config.worse_ratio
            log_lr_bad += x_c * math.log(bad) + events * math.log(total / (n_c * bad + n_s))
        passed = self.passed or -log_lr_bad >= config.promote_at
        return _Test(
            self.name,
            log_lr,
            self.rollback_at,
            log_lr_bad,
            self.canary_requests + n_c,
            self.canary_events + x_c,
            self.stable_requests + n_s,
            self.stable_events + x_s,
            passed,
            threshold_ms if threshold_ms is not None else self.threshold_ms,
        )

    def log_mixture(self) -> float:
        """log of the equally weighted mixture of the alternatives' likelihood ratios."""
        top = max(self.log_lr)
        return top + math.log(sum(math.exp(v - top) for v in self.log_lr) / len(self.log_lr))

    def worse(self, config: AnalysisConfig) -> bool:
        return (
            self.log_mixture() >= self.rollback_at
            and self.canary_requests >= config.min_rollback_requests
            and self.canary_events >= config.min_events
        )

    def evidence(self, config: AnalysisConfig, outcome: Outcome | None = None) -> TestEvidence:
        if outcome is None:
            if self.canary_requests == 0 or self.stable_requests == 0:
                outcome = "no_data"
            else:
                outcome = "not_worse" if self.passed else "undecided"
        return TestEvidence(
            self.name,
            outcome,
            self.canary_requests,
            self.canary_events,
            self.stable_requests,
            self.stable_events,
            round(self.log_mixture(), 4),
            round(-self.log_lr_bad, 4),
            round(self.rollback_at, 4),
            round(config.promote_at, 4),
            self.threshold_ms,
        )


@dataclass(frozen=True, slots=True)
class AnalysisState:
    """A step's analysis so far; :func:`fold` it over intervals, read :attr:`evidence`."""

    config: AnalysisConfig
    errors: _Test
    latency: _Test
    intervals: int = 0
    #: the latency bucket boundaries, and the stable revision's counts before the step
    #: (``baseline``) and over the step's intervals so far
    bounds: tuple[float, ...] | None = None
    reference: tuple[int, ...] | None = None
    decided: Evidence | None = None

    @property
    def evidence(self) -> Evidence:
        return self.decided or _evidence(self, Verdict.CONTINUE)


def start(
    config: AnalysisConfig | None = None,
    baseline: Histogram | None = None,
    step: int | None = None,
) -> AnalysisState:
    """The state at the start of a step: no evidence either way.

    ``baseline``: the stable revision's latencies before the step (say the 30 minutes
    before it), so that the latency test has its boundary from the first interval on.
    ``step``: which analysed step this is (0: the first), for its share of the
    false-rollback budget (``AnalysisConfig.step_weights``); None: equal shares.
    """
    config = config or AnalysisConfig()
    zeros = (0.0,) * len(config.alternatives)
    state = AnalysisState(
        config,
        _Test("errors", zeros, config.rollback_at_of("errors", step)),
        _Test("latency", zeros, config.rollback_at_of("latency", step)),
    )
    if baseline is not None and baseline.total:
        state = replace(state, bounds=baseline.bounds, reference=baseline.padded())
    return state


def analyse(
    intervals: Iterable[Interval],
    config: AnalysisConfig | None = None,
    baseline: Histogram | None = None,
    step: int | None = None,
) -> Evidence:
    """The verdict on a step from its intervals since the step started, oldest first
    (``step`` as for :func:`start`)."""
    state = start(config, baseline, step)
    for interval in intervals:
        state = fold(state, interval)
        if state.decided is not None:
            break
    return state.evidence


def fold(state: AnalysisState, interval: Interval) -> AnalysisState:
    """Add one interval; once a verdict is reached the state no longer changes."""
    if state.decided is not None:
        return state
    config = state.config
    canary, stable = interval.canary, interval.stable
    errors = state.errors.add(
        config, canary.requests, canary.errors, stable.requests, stable.errors
    )
    latency, bounds, reference = _latency(state, canary.latency, stable.latency)
    state = replace(
        state,
        errors=errors,
        latency=latency,
        intervals=state.intervals + 1,
        bounds=bounds,
        reference=reference,
    )
    worse = [t for t in (errors, latency) if t.worse(config)]
    if worse:
        return replace(state, decided=_evidence(state, Verdict.ROLLBACK, worse))
    if errors.passed and latency.passed and errors.canary_requests >= config.min_requests:
        return replace(state, decided=_evidence(state, Verdict.PROMOTE_STEP))
    return state


def _latency(
    state: AnalysisState, canary: Histogram | None, stable: Histogram | None
) -> tuple[_Test, tuple[float, ...] | None, tuple[int, ...] | None]:
    """The latency test after one interval: requests at or above the boundary of the
    stable revision's p95 are its events.

    The boundary comes from data fixed before this interval's requests were split
    between the revisions: the stable's counts before the step and in the earlier
    intervals (or, with neither, this interval's counts of both revisions pooled, which
    say nothing about who served what). So while the canary is no worse, each event is
    still the canary's with its share of the traffic, and a slow canary cannot pull the
    boundary up as a pooled quantile would.
    """
    test = state.latency
    if canary is None or stable is None or canary.total + stable.total == 0:
        return test, state.bounds, state.reference
    if canary.bounds != stable.bounds or (
        state.bounds is not None and canary.bounds != state.bounds
    ):
        raise ValueError("latency histograms of one step must share their bucket bounds")
    c, s = canary.padded(), stable.padded()
    reference = state.reference
    basis = (
        reference
        if reference and sum(reference)
        else tuple(a + b for a, b in zip(c, s, strict=True))
    )
    reference = tuple(r + b for r, b in zip(reference or (0,) * len(s), s, strict=True))
    index = quantile_index(basis, state.config.latency_quantile)
    if index is None:  # the quantile is in the overflow bucket: nothing to count above
        return test.add(state.config, sum(c), 0, sum(s), 0), canary.bounds, reference
    slow_c, slow_s = sum(c[index + 1 :]), sum(s[index + 1 :])
    threshold = canary.bounds[index]
    return (
        test.add(state.config, sum(c), slow_c, sum(s), slow_s, threshold),
        canary.bounds,
        reference,
    )


def _evidence(state: AnalysisState, verdict: Verdict, worse: Sequence[_Test] = ()) -> Evidence:
    config = state.config
    errors, latency = state.errors, state.latency
    if verdict is Verdict.ROLLBACK:
        names = {t.name for t in worse}
        reason = "canary worse than stable on " + " and ".join(
            f"{t.name} ({_rates(t)}, log LR {t.log_mixture():.2f} >= {t.rollback_at:.2f})"
            for t in worse
        )
        tests = [
            t.evidence(config, "worse" if t.name in names else None) for t in (errors, latency)
        ]
    else:
        tests = [t.evidence(config) for t in (errors, latency)]
        if verdict is Verdict.PROMOTE_STEP:
            reason = (
                f"canary not worse than stable on errors ({_rates(errors)}) and latency "
                f"({_rates(latency)}) after {errors.canary_requests} canary requests"
            )
        else:
            reason = _waiting(state)
    lean = (
        errors.canary_requests >= config.min_requests
        and latency.canary_requests > 0
        and errors.log_lr_bad <= 0
        and latency.log_lr_bad <= 0
    )
    return Evidence(
        verdict,
        reason,
        state.intervals,
        tests[0],
        tests[1],
        leans_not_worse=lean,
        decided_at=None if verdict is Verdict.CONTINUE else state.intervals,
    )


def _waiting(state: AnalysisState) -> str:
    config, errors, latency = state.config, state.errors, state.latency
    if errors.canary_requests == 0:
        return "no canary traffic yet"
    if errors.stable_requests == 0:
        return "no stable traffic to compare with"
    missing = [t.name for t in (errors, latency) if not t.passed]
    if not missing and errors.canary_requests < config.min_requests:
        return (
            f"{errors.canary_requests} of {config.min_requests} canary requests before a promotion"
        )
    return "more evidence needed on " + " and ".join(missing)


def _rates(test: _Test) -> str:
    c = test.canary_events / test.canary_requests if test.canary_requests else 0.0
    s = test.stable_events / test.stable_requests if test.stable_requests else 0.0
    return f"canary {c:.2%} vs stable {s:.2%}"
