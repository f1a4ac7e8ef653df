"""Canary policies on the same simulated traffic (docs/benchmarks.md, "Canary";
the method: docs/canary.md, "The benchmark").

A SIMULATED clock: no services, no sleeping. Traffic arrives in 10-second batches
(Poisson, ``CANARY_RPS`` requests/second, default 50); each request is routed by a
uniform draw, so a policy giving the canary 5, 25 or 50 % of the traffic sees the canary
serve the requests whose draw falls below that share. Batches are drawn once per run and
replayed to every policy: the same requests, the same outcomes for the same routing.
A revision fails a request with its error rate (Bernoulli) and answers in lognormal time
(median 80 ms, sigma 0.5, p95 182 ms; a slow revision takes twice as long: p95 x2),
counted in exponential latency buckets like Cloud Monitoring's DISTRIBUTION.

Policies, all on the steps 5 → 25 → 50 → 100 and the same latency threshold (a check
fails when the canary's p95 exceeds 1.5x the baseline's):
  flagger  every interval, a check over the last interval: success rate >= 99 % and p95
           under the threshold; a passing check steps forward (promotes after 50 %),
           a failing one counts, the 5th rolls back (Flagger's interval x threshold)
  rm       Cloud Run Release Manager's defaults: every interval, the canary's metrics
           over the step so far (at most 30 min); no decision under 100 requests; error
           rate above 1 % or p95 over the threshold rolls back; a healthy step moves on
           after 30 min
  ours     shared.canary: the sequential tests over the step's intervals (each step with
           its share of the false-rollback budget), then the step plan (time limit 30 min
           per step); its latency baseline is the stable's 30 minutes before the canary,
           then the stable's latencies so far
each analysed every 60 s (``@1m``, what Cloud Monitoring's 60-second points allow) and
every 10 s (``@10s``, on every batch) for the cadence comparison, over data as fresh as
the batch just ended. And ``ours(prod)``: ours as production runs it (shared/settings.py
``CanaryConfig``'s defaults). Its first step is read from Cloud Run's request logs every
10 s, over the batches that ended 10 s ago or earlier (the logs' visibility delay), with
the stable's requests thinned to 100 a second (one draw per request, so a kept request
keeps its outcome); later steps from Cloud Monitoring every 60 s, over 60-second periods
that ended 180 s ago or earlier. Like the readers, a policy sees only whole periods of its
cadence on the clock's grid that began at or after the step's start. Every other policy
sees each batch as soon as it ends: kinder to flagger and rm than any real source, and
ours@1m / ours@10s compare cadences alone.

Scenarios: the baseline (stable) fails 0.5 % of requests; the canary is the same (A/A:
``CANARY_AA_RUNS`` runs, default 1000: time and requests to promote, false rollbacks) or
fails 2 %, 5 %, 20 %, or is slow (``CANARY_RUNS`` runs each, default 200: time and the
canary's failed requests until rollback; a bad canary that is promoted keeps failing at
100 % until the two-hour horizon), and the 5 % canary again at each of
``CANARY_SWEEP_RPS`` (default 20,50,100,200). Prints Markdown tables, the ratios
ours/flagger and ours/rm, and whether the issue's targets hold (for ours(prod); ours@1m and
ours@10s for the cadence comparison). ``CANARY_SEED`` fixes the draws.
"""

from __future__ import annotations

import math
import os
import random
import statistics
import sys
import time
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.canary import (  # noqa: E402
    Action,
    AnalysisConfig,
    Histogram,
    Interval,
    Sample,
    StepPlan,
    exponential_bounds,
    fold,
    next_step,
    stable_fraction,
    start,
)
from shared.settings import CanaryConfig  # noqa: E402

BATCH_S = 10
#: the stable's latencies before the canary: the latency baseline, and the stable's rate
#: that decides the request logs' sampling (as production's ``baseline_s``)
BASELINE_S = 1800
HORIZON_S = 2 * 3600
STEPS = (5, 25, 50, 100)
#: routing segments: a request whose draw falls in segment k goes to the canary when the
#: canary's share reaches the segment's upper end (so 25 % covers the 5 % segment too)
SEGMENT_ENDS = (5, 25, 50, 100)
BOUNDS = exponential_bounds(60, 1.25, 1.0)  # 1 ms .. ~650 s
MEDIAN_MS, SIGMA = 80.0, 0.5
BASELINE_P95_MS = MEDIAN_MS * math.exp(1.6448536 * SIGMA)
LATENCY_MAX_MS = 1.5 * BASELINE_P95_MS


@dataclass(frozen=True)
class Revision:
    error_rate: float
    slowdown: float = 1.0


STABLE = Revision(0.005)
SCENARIOS: dict[str, Revision] = {
    "healthy (A/A)": STABLE,
    "errors 2%": Revision(0.02),
    "errors 5%": Revision(0.05),
    "errors 20%": Revision(0.20),
    "slow (p95 x2)": Revision(0.005, 2.0),
}


# ---------------------------------------------------------------- random draws (pure Python)


def poisson(rng: random.Random, mean: float) -> int:
    """Exact (Knuth) below a mean of 30, normal approximation above."""
    if mean < 30:
        limit, k, product = math.exp(-mean), 0, rng.random()
        while product > limit:
            k += 1
            product *= rng.random()
        return k
    return max(0, round(rng.gauss(mean, math.sqrt(mean))))


def binomial(rng: random.Random, n: int, p: float) -> int:
    """Exact (inversion) below a mean of 20, normal approximation above."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    mean = n * p
    if mean >= 20:
        return min(n, max(0, round(rng.gauss(mean, math.sqrt(mean * (1 - p))))))
    q = 1.0 - p
    ratio, scale = p / q, (n + 1) * p / q
    term, u, x = q**n, rng.random(), 0
    while u > term and x < n:
        u -= term
        x += 1
        term *= scale / x - ratio
    return x


def hypergeometric(rng: random.Random, population: int, marked: int, drawn: int) -> int:
    """How many of ``marked`` items of ``population`` a uniform sample of ``drawn`` holds
    (exact: each marked item in turn, in with the sample's room left over the items
    left)."""
    found, room, left = 0, drawn, population
    for _ in range(marked):
        if room == 0:
            break
        if rng.random() * left < room:
            found += 1
            room -= 1
        left -= 1
    return found


def thin(rng: random.Random, sample: Sample, fraction: float) -> Sample:
    """Each of ``sample``'s requests kept with probability ``fraction``: every latency
    bucket thinned binomially, and the errors among the kept requests drawn from the
    whole (a request's outcome does not depend on its latency here), so a kept request
    keeps its outcome and the sample's error rate and latencies are the whole's."""
    hist = sample.latency
    if hist is None:
        kept = binomial(rng, sample.requests, fraction)
        return Sample(kept, hypergeometric(rng, sample.requests, sample.errors, kept), None)
    counts = tuple(binomial(rng, c, fraction) for c in hist.padded())
    kept = sum(counts)
    errors = hypergeometric(rng, sample.requests, sample.errors, kept)
    return Sample(kept, errors, Histogram(hist.bounds, counts))


def bucket_probabilities(slowdown: float) -> tuple[int, tuple[float, ...]]:
    """Where the lognormal latency lands: the first bucket index with mass, and the masses
    of the buckets from there (tails under 1e-12 dropped)."""
    mu = math.log(MEDIAN_MS * slowdown)

    def cdf(ms: float) -> float:
        return 0.5 * (1 + math.erf((math.log(ms) - mu) / (SIGMA * math.sqrt(2))))

    edges = [0.0, *(cdf(b) for b in BOUNDS), 1.0]
    masses = [edges[k + 1] - edges[k] for k in range(len(BOUNDS) + 1)]
    kept = [k for k, m in enumerate(masses) if m > 1e-12]
    first, last = kept[0], kept[-1]
    return first, tuple(masses[first : last + 1])


@dataclass(frozen=True)
class Outcomes:
    """What a group of requests got from one revision."""

    requests: int
    errors: int
    buckets: tuple[int, ...]  # len(BOUNDS) + 1


class Drawer:
    """Outcomes of ``n`` requests served by a revision: latency buckets from the
    lognormal's bucket masses (per request for small groups, conditional binomials for
    large ones), failures by a binomial draw at the revision's error rate."""

    def __init__(self, revision: Revision) -> None:
        self.revision = revision
        first, masses = bucket_probabilities(revision.slowdown)
        self.indices = range(first, first + len(masses))
        total, running, cum = sum(masses), 0.0, []
        for mass in masses:
            running += mass
            cum.append(running / total)
        self.cum = cum
        self.masses = tuple(m / total for m in masses)
        self.width = len(BOUNDS) + 1

    def draw(self, rng: random.Random, n: int) -> Outcomes:
        counts = [0] * self.width
        if n >= 100:  # conditional binomials: cheaper than n draws for large groups
            left, rest = n, 1.0
            for k, mass in zip(self.indices, self.masses, strict=True):
                if left == 0:
                    break
                x = left if rest <= mass else binomial(rng, left, mass / rest)
                counts[k] = x
                left -= x
                rest -= mass
            counts[self.indices[-1]] += left
        elif n:
            for k in rng.choices(self.indices, cum_weights=self.cum, k=n):
                counts[k] += 1
        return Outcomes(n, binomial(rng, n, self.revision.error_rate), tuple(counts))


def _sum(parts: Sequence[Outcomes]) -> Sample:
    if not parts:
        return Sample(0, 0, None)
    buckets = parts[0].buckets
    for part in parts[1:]:
        buckets = tuple(a + b for a, b in zip(buckets, part.buckets, strict=True))
    return Sample(
        sum(p.requests for p in parts),
        sum(p.errors for p in parts),
        Histogram(BOUNDS, buckets),
    )


class Traffic:
    """One run's batches, drawn on first use and shared by every policy.

    ``interval(i, share)`` is batch ``i`` as seen with ``share`` percent on the canary.
    """

    def __init__(self, seed: int, canary: Revision, rps: float) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.stable, self.canary = Drawer(STABLE), Drawer(canary)
        self.same = canary == STABLE
        self.mean = rps * BATCH_S
        self.batches: list[tuple[list[Outcomes], list[Outcomes]]] = []
        self.seen: dict[tuple[int, int], Interval] = {}
        self.sampled: dict[tuple[int, int, float], Interval] = {}
        # the stable revision's last 30 minutes before the canary (its latencies: what
        # the threshold policies' fixed latency limit knows in advance, ours measures)
        before = self.stable.draw(self.rng, round(rps * BASELINE_S))
        self.baseline = Histogram(BOUNDS, before.buckets)

    def interval(self, index: int, share: int, stable_fraction: float = 1.0) -> Interval:
        """Batch ``index`` at ``share``; below a ``stable_fraction`` of 1, what a reader
        sampling that fraction of the stable's requests sees of it (the same sample for
        every policy that asks, as sampling by insertId would be)."""
        if stable_fraction < 1.0:
            key = (index, share, stable_fraction)
            sampled = self.sampled.get(key)
            if sampled is None:
                whole = self.interval(index, share)
                rng = random.Random(zlib.crc32(f"{self.seed}:{key}".encode()))
                sampled = Interval(whole.canary, thin(rng, whole.stable, stable_fraction))
                self.sampled[key] = sampled
            return sampled
        found = self.seen.get((index, share))
        if found is not None:
            return found
        while len(self.batches) <= index:
            self.batches.append(self._draw())
        on_canary, on_stable = self.batches[index]
        k = STEPS.index(share)
        interval = Interval(_sum(on_canary[: k + 1]), _sum(on_stable[k + 1 :]))
        self.seen[(index, share)] = interval
        return interval

    def _draw(self) -> tuple[list[Outcomes], list[Outcomes]]:
        rng, left = self.rng, poisson(self.rng, self.mean)
        sizes, lower = [], 0
        for end in SEGMENT_ENDS:  # multinomial over the routing segments
            n = binomial(rng, left, (end - lower) / (100 - lower)) if end < 100 else left
            sizes.append(n)
            left -= n
            lower = end
        on_stable = [self.stable.draw(rng, n) for n in sizes]
        on_canary = on_stable if self.same else [self.canary.draw(rng, n) for n in sizes]
        return on_canary, on_stable


# ---------------------------------------------------------------- policies


def merge(intervals: Sequence[Interval]) -> Interval:
    """Intervals added up into one (what a longer alignment period would return)."""
    if len(intervals) == 1:
        return intervals[0]

    def add(samples: list[Sample]) -> Sample:
        hists = [s.latency for s in samples if s.latency is not None]
        buckets = tuple(sum(col) for col in zip(*(h.padded() for h in hists), strict=True))
        return Sample(
            sum(s.requests for s in samples),
            sum(s.errors for s in samples),
            Histogram(BOUNDS, buckets) if hists else None,
        )

    return Interval(add([i.canary for i in intervals]), add([i.stable for i in intervals]))


def p95(hist: Histogram | None) -> float | None:
    """The canary's p95, interpolated within its bucket (like histogram_quantile)."""
    if hist is None or hist.total == 0:
        return None
    counts, target, seen = hist.padded(), 0.95 * hist.total, 0
    for k, c in enumerate(counts):
        if c and seen + c >= target:
            low = BOUNDS[k - 1] if k > 0 else 0.0
            high = BOUNDS[k] if k < len(BOUNDS) else BOUNDS[-1] * 1.25
            return low + (high - low) * (target - seen) / c
        seen += c
    return None


@dataclass(frozen=True)
class Source:
    """Where a policy reads a step from: every ``cadence_s`` (also the length of the
    periods it reads, on the clock's grid), the newest ``delay_s`` left out (not yet
    visible), and above ``max_stable_per_s`` a sample of the stable's requests at that
    rate (the request logs' sampling; None: all of them)."""

    cadence_s: int
    delay_s: int = 0
    max_stable_per_s: float | None = None

    def __post_init__(self) -> None:
        if self.cadence_s % BATCH_S or self.delay_s < 0:
            raise ValueError(f"cadence a multiple of {BATCH_S} s, delay >= 0: {self}")


class Policy:
    """A canary controller: sees each batch, acts at its cadence on what is visible.

    ``cadence_s`` and ``delay_s`` are its source for every step; ``logs``, if given, the
    source of the first ``logs_steps`` steps instead (production's request logs)."""

    name = ""

    def __init__(
        self,
        cadence_s: int,
        delay_s: int = 0,
        *,
        logs: Source | None = None,
        logs_steps: int = 0,
    ) -> None:
        self.main = Source(cadence_s, delay_s)
        self.logs = logs
        self.logs_steps = logs_steps if logs is not None else 0
        self.share = STEPS[0]
        self.step_started = 0
        self.stable_rps = 0.0
        self.pending: list[tuple[int, Interval]] = []  # (batch end, batch) not yet analysed

    @property
    def source(self) -> Source:
        """The current step's source."""
        if self.logs is not None and STEPS.index(self.share) < self.logs_steps:
            return self.logs
        return self.main

    @property
    def cadence_s(self) -> int:
        return self.source.cadence_s

    def stable_fraction(self) -> float:
        """The share of the stable's requests the current source reads: all of them,
        unless the stable served more than ``max_stable_per_s`` before the canary (as
        production decides it, from the baseline)."""
        limit = self.source.max_stable_per_s
        if limit is None or self.stable_rps <= 0:
            return 1.0
        return stable_fraction(self.stable_rps, limit)

    def begin(self, traffic: Traffic) -> None:
        """The canary starts (what is known of the stable revision before it)."""
        self.stable_rps = traffic.baseline.total / BASELINE_S

    def observe(self, end: int, interval: Interval) -> None:
        """The batch that ended at ``end`` as the source reads it (visible later)."""
        self.pending.append((end, interval))

    def tick(self, now: int) -> Action:
        """Analyses the periods that became visible: whole periods of the cadence on the
        clock's grid that ended ``delay_s`` ago or earlier, and began at or after the
        step's start (a period cut by the step's start is left out, as the readers do).
        Without a delay that is the batches since the last analysis, as one period."""
        period, visible = self.source.cadence_s, now - self.source.delay_s
        periods: dict[int, list[Interval]] = {}
        waiting = []
        for end, interval in self.pending:
            period_end = -(-end // period) * period
            if period_end > visible:
                waiting.append((end, interval))
            elif period_end - period >= self.step_started:
                periods.setdefault(period_end, []).append(interval)
        self.pending = waiting
        action = self.analyse(now, [merge(batches) for _, batches in sorted(periods.items())])
        if action in (Action.STEP, Action.PROMOTE):
            self.share = STEPS[STEPS.index(self.share) + 1]
            self.step_started = now
            self.pending = []  # the previous step's batches: never this step's evidence
            self.moved()
        return action

    def analyse(self, now: int, windows: list[Interval]) -> Action:
        """Acts on ``windows``, the newly visible periods, oldest first (none yet: a
        policy with a delay at its step's start)."""
        raise NotImplementedError

    def moved(self) -> None:
        """The canary's share just changed."""

    def forward(self) -> Action:
        return Action.PROMOTE if STEPS[STEPS.index(self.share) + 1] == 100 else Action.STEP


class Flagger(Policy):
    """Fixed interval: a failing check counts, the 5th rolls back; a passing one steps."""

    name = "flagger"
    threshold = 5

    def __init__(self, cadence_s: int, delay_s: int = 0) -> None:
        super().__init__(cadence_s, delay_s)
        self.failed = 0

    def analyse(self, now: int, windows: list[Interval]) -> Action:
        for window in windows:  # one check per interval
            canary = window.canary
            latency = p95(canary.latency)
            ok = (
                canary.requests > 0  # no data fails the check, as in Flagger
                and 1 - canary.errors / canary.requests >= 0.99
                and latency is not None
                and latency <= LATENCY_MAX_MS
            )
            if ok:
                return self.forward()
            self.failed += 1
            if self.failed >= self.threshold:
                return Action.ROLLBACK
        return Action.WAIT


class ReleaseManager(Policy):
    """Cloud Run Release Manager's rules: a window over the step (30 min at most), 100
    requests minimum, 1 % maximum error rate, a 30-minute wait per step."""

    name = "rm"
    window_s, min_wait_s, min_requests, max_error_rate = 1800, 1800, 100, 0.01

    def __init__(self, cadence_s: int, delay_s: int = 0) -> None:
        super().__init__(cadence_s, delay_s)
        self.moved()

    def analyse(self, now: int, windows: list[Interval]) -> Action:
        if windows:
            canary = merge(windows).canary
            self.history.append((now, canary))
            self._add(canary, 1)
        since = max(self.step_started, now - self.window_s)
        while self.history and self.history[0][0] <= since:
            self._add(self.history.popleft()[1], -1)
        if self.requests < self.min_requests:
            return Action.WAIT
        latency = p95(Histogram(BOUNDS, tuple(self.buckets)))
        if self.errors / self.requests > self.max_error_rate or (
            latency is not None and latency > LATENCY_MAX_MS
        ):
            return Action.ROLLBACK
        return self.forward() if now - self.step_started >= self.min_wait_s else Action.WAIT

    def _add(self, sample: Sample, sign: int) -> None:
        self.requests += sign * sample.requests
        self.errors += sign * sample.errors
        if sample.latency is not None:
            for k, c in enumerate(sample.latency.padded()):
                self.buckets[k] += sign * c

    def moved(self) -> None:
        self.history: deque[tuple[int, Sample]] = deque()
        self.requests = self.errors = 0
        self.buckets = [0] * (len(BOUNDS) + 1)


class Ours(Policy):
    """The sequential tests (shared.canary) on the step's intervals, then the step plan."""

    name = "ours"
    plan = StepPlan(STEPS, timedelta(minutes=30))
    config = AnalysisConfig(analysed_steps=plan.analysed_steps)

    def __init__(
        self,
        cadence_s: int,
        delay_s: int = 0,
        *,
        logs: Source | None = None,
        logs_steps: int = 0,
    ) -> None:
        super().__init__(cadence_s, delay_s, logs=logs, logs_steps=logs_steps)
        self.state = start(self.config)

    def begin(self, traffic: Traffic) -> None:
        super().begin(traffic)
        self.state = start(self.config, traffic.baseline, step=0)

    def analyse(self, now: int, windows: list[Interval]) -> Action:
        for window in windows:  # each period one interval, as the readers return them
            self.state = fold(self.state, window)
        elapsed = timedelta(seconds=now - self.step_started)
        return next_step(self.plan, self.share, self.state.evidence, elapsed).action

    def moved(self) -> None:
        if self.share == 100:
            return  # promoted: nothing left to analyse
        # the stable's latencies so far are the next step's baseline; the step's index
        # picks its share of the false-rollback budget
        known = self.state.reference
        baseline = Histogram(BOUNDS, known) if known else None
        self.state = start(self.config, baseline, step=STEPS.index(self.share))


#: production's settings (CanaryConfig's defaults, docs/canary.md "Configuration")
PROD = CanaryConfig()


def ours_prod() -> Ours:
    """Ours as production runs it: the first ``logs_steps`` steps from the request logs
    (every ``logs_alignment_s``, ``logs_visibility_delay_s`` late, the stable sampled
    above ``logs_max_stable_per_s``), later steps from Cloud Monitoring (every
    ``alignment_s``, ``visibility_delay_s`` late)."""
    logs = Source(
        PROD.logs_alignment_s, round(PROD.logs_visibility_delay_s), PROD.logs_max_stable_per_s
    )
    return Ours(
        PROD.alignment_s, round(PROD.visibility_delay_s), logs=logs, logs_steps=PROD.logs_steps
    )


POLICIES: dict[str, Callable[[], Policy]] = {
    "flagger@1m": lambda: Flagger(60),
    "rm@1m": lambda: ReleaseManager(60),
    "ours@1m": lambda: Ours(60),
    "flagger@10s": lambda: Flagger(10),
    "rm@10s": lambda: ReleaseManager(10),
    "ours@10s": lambda: Ours(10),
    "ours(prod)": ours_prod,
}


# ---------------------------------------------------------------- runs


@dataclass(frozen=True)
class Result:
    """How one policy ended one run (``time_s``: when it decided, or the horizon)."""

    outcome: str  # promoted | rolled back | held | undecided
    time_s: int
    canary_requests: int
    canary_failed: int


def play(policy: Policy, traffic: Traffic) -> Result:
    served = failed = 0
    outcome, end = "undecided", HORIZON_S
    batches = HORIZON_S // BATCH_S
    policy.begin(traffic)
    for index in range(batches):
        now = (index + 1) * BATCH_S
        interval = traffic.interval(index, policy.share)
        served += interval.canary.requests
        failed += interval.canary.errors
        if outcome != "undecided":
            continue  # a promoted canary keeps serving (and failing) until the horizon
        fraction = policy.stable_fraction()
        policy.observe(now, traffic.interval(index, policy.share, fraction))
        if now % policy.cadence_s:
            continue
        action = policy.tick(now)
        if action is Action.PROMOTE:
            if traffic.same:  # a healthy canary promoted: nothing more to count
                return Result("promoted", now, served, failed)
            outcome, end, at_end = "promoted", now, (served, failed)
        elif action is Action.ROLLBACK:
            return Result("rolled back", now, served, failed)
        elif action is Action.HOLD:
            return Result("held", now, served, failed)
    if outcome == "promoted":
        # requests until the promotion; failures until the horizon (a bad canary
        # promoted goes on failing: the cost of the miss)
        return Result(outcome, end, at_end[0], failed)
    return Result(outcome, end, served, failed)


@dataclass
class Tally:
    results: dict[str, list[Result]] = field(default_factory=dict)

    def add(self, policy: str, result: Result) -> None:
        self.results.setdefault(policy, []).append(result)


def simulate(
    scenario: str, runs: int, *, seed: int = 14, rps: float = 50.0, policies: Sequence[str] = ()
) -> Tally:
    """``runs`` runs of ``scenario``; every policy plays each run's same traffic."""
    names = list(policies or POLICIES)
    tally = Tally()
    for run in range(runs):
        traffic = Traffic(zlib.crc32(f"{seed}:{scenario}:{run}".encode()), SCENARIOS[scenario], rps)
        for name in names:
            tally.add(name, play(POLICIES[name](), traffic))
    return tally


def first_failed(scenario: str, runs: int, *, seed: int, rps: float, seconds: int = 60) -> float:
    """The canary's failed requests in the first ``seconds`` at the first step (mean over
    the runs of :func:`simulate`'s traffic): what a policy whose first look can decide no
    sooner lets through (a minute: any policy analysed every minute)."""
    failed = 0
    for run in range(runs):
        traffic = Traffic(zlib.crc32(f"{seed}:{scenario}:{run}".encode()), SCENARIOS[scenario], rps)
        batches = range(seconds // BATCH_S)
        failed += sum(traffic.interval(i, STEPS[0]).canary.errors for i in batches)
    return failed / runs


# ---------------------------------------------------------------- report


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _minutes(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds / 60:.1f} min"


def summarize(tally: Tally) -> dict[str, dict[str, float]]:
    """Per policy: how its runs ended, when, and what the canary served and failed."""
    rows = {}
    for name, results in tally.results.items():
        promoted = [r for r in results if r.outcome == "promoted"]
        stopped = [r for r in results if r.outcome == "rolled back"]
        rows[name] = {
            "runs": len(results),
            "promoted": len(promoted),
            "rolled_back": len(stopped),
            "held": sum(r.outcome == "held" for r in results),
            "promote_s": _median([r.time_s for r in promoted]),
            "promote_p90_s": _quantile([r.time_s for r in promoted], 0.9),
            "promote_requests": _median([r.canary_requests for r in promoted]),
            "rollback_s": _median([r.time_s for r in stopped]),
            "rollback_requests": _median([r.canary_requests for r in stopped]),
            "failed_median": _median([r.canary_failed for r in results]),
            "failed_mean": statistics.fmean(r.canary_failed for r in results),
        }
    return rows


def _quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    rps = float(os.environ.get("CANARY_RPS", "50"))
    aa_runs = int(os.environ.get("CANARY_AA_RUNS", "1000"))
    bad_runs = int(os.environ.get("CANARY_RUNS", "200"))
    seed = int(os.environ.get("CANARY_SEED", "14"))
    sweep = [float(v) for v in os.environ.get("CANARY_SWEEP_RPS", "20,50,100,200").split(",")]
    started = time.monotonic()
    config = Ours.config
    steps = range(config.analysed_steps)
    alphas = "; ".join(
        f"{test} " + " / ".join(f"{config.alpha_of(test, k):.4g}" for k in steps)
        for test in ("errors", "latency")
    )
    print(
        f"simulated clock; {rps:g} requests/s in {BATCH_S}-s batches; baseline 0.5 % errors, "
        f"p95 {BASELINE_P95_MS:.0f} ms (latency check at {LATENCY_MAX_MS:.0f} ms); seed {seed}\n"
        f"ours: false rollback <= {config.false_rollback:.0%} per release (alpha per step: "
        f"{alphas}), false pass <= {config.false_promote:.0%} "
        f"at {config.worse_ratio:g}x worse, mixture over {list(config.alternatives)}, "
        f"min {config.min_requests} requests to promote, {config.min_rollback_requests} "
        f"and {config.min_events} events to roll back, {Ours.plan.max_step_time} per step\n"
        f"ours(prod): the first {PROD.logs_steps} step(s) from the request logs every "
        f"{PROD.logs_alignment_s} s, {PROD.logs_visibility_delay_s:g} s late, the stable "
        f"sampled above {PROD.logs_max_stable_per_s:g}/s; later steps from Monitoring every "
        f"{PROD.alignment_s} s, {PROD.visibility_delay_s:g} s late; flagger, rm, ours@1m and "
        "ours@10s see every batch without delay"
    )
    healthy = summarize(simulate("healthy (A/A)", aa_runs, seed=seed, rps=rps))
    print(f"\n### Healthy canary (A/A, {aa_runs} runs, {rps:g} requests/s)\n")
    print(
        "| policy | promoted | false rollbacks | held | time to promote (median, p90) "
        "| canary requests to promote (median) |"
    )
    print("|---|---|---|---|---|---|")
    for name, row in healthy.items():
        print(
            f"| {name} | {row['promoted']:.0f} | {row['rolled_back']:.0f} "
            f"({row['rolled_back'] / row['runs']:.1%}) | {row['held']:.0f} "
            f"| {_minutes(row['promote_s'])}, {_minutes(row['promote_p90_s'])} "
            f"| {row['promote_requests']:.0f} |"
        )
    bad: dict[str, dict[str, dict[str, float]]] = {}
    for scenario in [s for s in SCENARIOS if s != "healthy (A/A)"]:
        bad[scenario] = summarize(simulate(scenario, bad_runs, seed=seed, rps=rps))
    print(
        f"\n### Bad canary ({bad_runs} runs each, {rps:g} requests/s): share rolled back, "
        "median time to rollback, the canary's failed requests (median / mean; for the slow "
        "canary: requests it served, median)\n"
    )
    print("| policy | " + " | ".join(bad) + " |")
    print("|---|" + "---|" * len(bad))
    for name in POLICIES:
        cells = []
        for scenario, rows in bad.items():
            row = rows[name]
            missed = f" ({row['promoted']:.0f} promoted)" if row["promoted"] else ""
            served = (
                f"{row['rollback_requests']:.0f} served"
                if scenario.startswith("slow")
                else f"{row['failed_median']:.0f} / {row['failed_mean']:.1f}"
            )
            cells.append(
                f"{row['rolled_back'] / row['runs']:.0%}{missed}, "
                f"{_minutes(row['rollback_s'])}, {served}"
            )
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(
        f"\n### The 5 % canary by traffic ({bad_runs} runs each): failed requests (mean), "
        "ours / flagger@1m\n"
    )
    swept = ["flagger@1m", "ours@1m", "ours@10s", "ours(prod)"]
    print(
        "| requests/s | "
        + " | ".join(swept)
        + " | "
        + " | ".join(f"{n} / flagger" for n in swept[1:])
        + " |"
    )
    print("|---|" + "---|" * (2 * len(swept) - 1))
    for level in sweep:
        rows = (
            bad["errors 5%"]
            if level == rps
            else summarize(
                simulate(
                    "errors 5%",
                    bad_runs,
                    seed=seed,
                    rps=level,
                    policies=swept,
                )
            )
        )
        f, *others = (rows[n]["failed_mean"] for n in swept)
        print(
            f"| {level:g} | {f:.1f} | "
            + " | ".join(f"{o:.1f}" for o in others)
            + " | "
            + " | ".join(f"{o / f:.2f}" for o in others)
            + " |"
        )
    print("\n### Ratios and targets\n")
    flagger_failed = bad["errors 5%"]["flagger@1m"]["failed_mean"]
    first = first_failed("errors 5%", bad_runs, seed=seed, rps=rps)
    print(
        f"- the one-minute floor: the 5 % canary fails {first:.1f} requests (mean) in its "
        f"first minute, {first / flagger_failed:.2f} of flagger@1m's: no policy that needs "
        "a minute of data goes below it"
    )
    look = PROD.logs_alignment_s + round(PROD.logs_visibility_delay_s)
    first = first_failed("errors 5%", bad_runs, seed=seed, rps=rps, seconds=look)
    print(
        f"- production's floor: its first look that sees any data is at {look} s; the 5 % "
        f"canary fails {first:.1f} requests (mean) by then, {first / flagger_failed:.2f} "
        "of flagger@1m's"
    )
    for ours in ("ours(prod)", "ours@1m", "ours@10s"):
        fr = healthy[ours]["rolled_back"] / healthy[ours]["runs"]
        five = bad["errors 5%"]
        fail_ratio = five[ours]["failed_mean"] / five["flagger@1m"]["failed_mean"]
        fail_rm = five[ours]["failed_mean"] / five["rm@1m"]["failed_mean"]
        promote_ratio = healthy[ours]["promote_s"] / healthy["rm@1m"]["promote_s"]
        flagger_promote = healthy[ours]["promote_s"] / healthy["flagger@1m"]["promote_s"]
        print(
            f"- {ours}: false rollbacks {fr:.2%} (target <= 1 %: {_ok(fr <= 0.01)}); "
            f"failed requests of the 5 % canary / flagger@1m {fail_ratio:.2f} "
            f"(target <= 0.20: {_ok(fail_ratio <= 0.2)}), / rm@1m {fail_rm:.2f}; "
            f"time to promote / rm@1m {promote_ratio:.2f} (target <= 1: "
            f"{_ok(promote_ratio <= 1)}), / flagger@1m {flagger_promote:.2f}"
        )
    print(f"\n({time.monotonic() - started:.0f} s wall)")


def _ok(passed: bool) -> str:
    return "holds" if passed else "MISSED"


if __name__ == "__main__":
    main()
