"""Typed inputs and outputs of the canary analysis (plain data, no I/O).

The inputs are what Cloud Monitoring returns for Cloud Run, per revision and per aligned
interval: ``run.googleapis.com/request_count`` summed by ``response_code_class`` and the
``request_latencies`` DISTRIBUTION (bucket counts over Monitoring's bucket options).
docs/canary.md, "The analysis", says how they are read.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Literal


def exponential_bounds(
    num_finite_buckets: int, growth_factor: float, scale: float
) -> tuple[float, ...]:
    """Bucket boundaries of Monitoring's ``exponentialBuckets``: ``scale * growth**i``,
    i = 0..N (N finite buckets between N + 1 boundaries, plus underflow and overflow)."""
    return tuple(scale * growth_factor**i for i in range(num_finite_buckets + 1))


def linear_bounds(num_finite_buckets: int, width: float, offset: float) -> tuple[float, ...]:
    """Bucket boundaries of Monitoring's ``linearBuckets``: ``offset + width * i``."""
    return tuple(offset + width * i for i in range(num_finite_buckets + 1))


@dataclass(frozen=True, slots=True)
class Histogram:
    """A latency DISTRIBUTION: ``counts[k]`` requests took ``bounds[k-1] <= ms < bounds[k]``
    (``counts[0]`` below ``bounds[0]``, the last one at or above ``bounds[-1]``).

    ``bounds`` are Monitoring's boundaries whatever the bucket options (explicit bounds as
    given, or :func:`exponential_bounds` / :func:`linear_bounds`); like ``bucketCounts``,
    ``counts`` may stop early (the missing buckets are empty).
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]

    def __post_init__(self) -> None:
        if len(self.counts) > len(self.bounds) + 1:
            raise ValueError(
                f"{len(self.counts)} bucket counts for {len(self.bounds)} boundaries "
                f"(at most {len(self.bounds) + 1})"
            )
        if self.counts and min(self.counts) < 0:
            raise ValueError("bucket counts cannot be negative")
        _check_bounds(self.bounds)

    @property
    def total(self) -> int:
        return sum(self.counts)

    def padded(self) -> tuple[int, ...]:
        """``counts`` with the trailing empty buckets written out."""
        return self.counts + (0,) * (len(self.bounds) + 1 - len(self.counts))

    def at_or_above(self, bound: int) -> int:
        """Requests that took at least ``bounds[bound]``."""
        return sum(self.counts[bound + 1 :])

    def quantile_bound(self, q: float) -> float | None:
        """The smallest boundary with at most ``1 - q`` of the requests at or above it
        (the bucket-resolution upper estimate of the q-quantile); None when empty or when
        the quantile is in the overflow bucket."""
        index = quantile_index(self.padded(), q)
        return None if index is None else self.bounds[index]


@functools.lru_cache(maxsize=32)
def _check_bounds(bounds: tuple[float, ...]) -> None:
    """Bounds must increase (checked once per distinct set: every interval of a metric
    shares its bucket options)."""
    if any(a >= b for a, b in itertools.pairwise(bounds)):
        raise ValueError("bucket bounds must increase")


def quantile_index(counts: Sequence[int], q: float) -> int | None:
    """Index ``j`` of the smallest boundary with ``sum(counts[j+1:]) <= (1 - q) * total``."""
    total = sum(counts)
    if total == 0:
        return None
    allowed = (1.0 - q) * total
    above = 0
    # walk down from the overflow bucket: counts[k] lies at or above bounds[k-1]
    for k in range(len(counts) - 1, 0, -1):
        if above + counts[k] > allowed:
            return k if k < len(counts) - 1 else None
        above += counts[k]
    return 0


@dataclass(frozen=True, slots=True)
class Sample:
    """One revision over one aligned interval: requests, 5xx responses, latencies."""

    requests: int
    errors: int
    latency: Histogram | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.errors <= self.requests:
            raise ValueError(f"errors ({self.errors}) must be within 0..requests ({self.requests})")

    @classmethod
    def from_classes(cls, by_class: Mapping[str, int], latency: Histogram | None = None) -> Sample:
        """From request counts by ``response_code_class`` ("2xx" … "5xx"); errors are 5xx
        (a 4xx is the client's doing and says nothing about the revision)."""
        return cls(sum(by_class.values()), by_class.get("5xx", 0), latency)


@dataclass(frozen=True, slots=True)
class Interval:
    """Canary and stable over the same aligned interval (one Monitoring point each)."""

    canary: Sample
    stable: Sample


class Verdict(StrEnum):
    """What the evidence of one step says."""

    CONTINUE = "continue"  # not enough evidence either way yet
    PROMOTE_STEP = "promote_step"  # evidence the canary is not worse: next step
    ROLLBACK = "rollback"  # evidence the canary is worse (errors or latency)


Outcome = Literal["worse", "not_worse", "undecided", "no_data"]


@dataclass(frozen=True, slots=True)
class TestEvidence:
    """One sequential test (``errors``: 5xx; ``latency``: requests at or above the
    stable's p95 boundary) over the step so far; log-likelihood ratios in nats."""

    name: Literal["errors", "latency"]
    outcome: Outcome
    canary_requests: int
    canary_events: int
    stable_requests: int
    stable_events: int
    #: log of the mixture likelihood ratio "worse" / "no worse"; ROLLBACK at ``rollback_at``
    log_lr_worse: float
    #: log of the likelihood ratio "no worse" / "``worse_ratio`` times worse"; the test
    #: passes at ``promote_at``
    log_lr_not_worse: float
    rollback_at: float
    promote_at: float
    #: the boundary (ms) the latency test counted from, at the last interval
    threshold_ms: float | None = None

    @property
    def canary_rate(self) -> float | None:
        return self.canary_events / self.canary_requests if self.canary_requests else None

    @property
    def stable_rate(self) -> float | None:
        return self.stable_events / self.stable_requests if self.stable_requests else None

    @property
    def ratio(self) -> float | None:
        """Canary rate over stable rate (None when either is unknown or stable is 0)."""
        c, s = self.canary_rate, self.stable_rate
        return None if c is None or not s else c / s

    def summary(self) -> str:
        """One plain-text line (callers escape it for Slack mrkdwn)."""
        unit = "5xx" if self.name == "errors" else f">= {self.threshold_ms or 0:g} ms"
        return (
            f"{self.name}: canary {self.canary_events}/{self.canary_requests} {unit} "
            f"({_pct(self.canary_rate)}), stable {self.stable_events}/{self.stable_requests} "
            f"({_pct(self.stable_rate)}); log LR worse {self.log_lr_worse:.2f} "
            f"(rollback at {self.rollback_at:.2f}), not worse {self.log_lr_not_worse:.2f} "
            f"(pass at {self.promote_at:.2f}): {self.outcome.replace('_', ' ')}"
        )


@dataclass(frozen=True, slots=True)
class Evidence:
    """The verdict of one analysis and everything it rests on (ops.actions detail, the
    release trace, the Slack message)."""

    verdict: Verdict
    reason: str
    intervals: int
    errors: TestEvidence
    latency: TestEvidence
    #: both tests lean "not worse" (likelihood ratio at least 1) with the promotion
    #: guard met: what the step plan's time limit promotes on (docs/canary.md)
    leans_not_worse: bool = False
    #: the interval (1-based) at which the verdict was reached, None while CONTINUE
    decided_at: int | None = None

    def as_json(self) -> dict[str, Any]:
        """JSON-ready (ops.actions ``detail``, span attributes after flattening)."""
        out = asdict(self)
        out["verdict"] = self.verdict.value
        for name in ("errors", "latency"):
            test: TestEvidence = getattr(self, name)
            out[name].update(
                canary_rate=test.canary_rate, stable_rate=test.stable_rate, ratio=test.ratio
            )
        return out

    def summary(self) -> str:
        head = f"{self.verdict.value}: {self.reason}"
        return "\n".join((head, self.errors.summary(), self.latency.summary()))


def _pct(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    return f"{rate * 100:.2f}%" if math.isfinite(rate) else "n/a"
