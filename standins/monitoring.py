"""Cloud Monitoring API v3 stand-in: ``MetricService.ListTimeSeries`` over real gRPC.

The official ``monitoring_v3.MetricServiceClient`` runs against it unmodified through an
insecure channel (``MetricServiceGrpcTransport(channel=grpc.insecure_channel(target))``).
It serves Cloud Run's two request metrics, fed by *real* requests: the Cloud Run stand-in's
router (or anyone, through ``POST /_admin/record``) calls :meth:`MonitoringState.record`
once per request it forwards.

- ``run.googleapis.com/request_count``: DELTA, INT64, unit ``1``;
- ``run.googleapis.com/request_latencies``: DELTA, DISTRIBUTION, unit ``ms``, exponential
  buckets (:data:`LATENCY_BUCKETS`);

both on the monitored resource ``cloud_run_revision`` (``project_id``, ``service_name``,
``revision_name``, ``location``, ``configuration_name``) with the metric labels
``response_code`` and ``response_code_class`` (``2xx``, ``5xx``, ...).

What the real API does and this stand-in reproduces (docs/standins.md, "Cloud Monitoring"):
the read interval is ``(start, end]``; raw DELTA points cover one sample period;
aligned points end at ``end - k * alignmentPeriod`` and empty periods have no point; points
come newest first; the page size counts points (FULL view), so one series can continue on
the next page; trailing zero bucket counts are omitted; filters, aligners and reducers that
do not apply are refused with ``INVALID_ARGUMENT``. Faults (``UNAVAILABLE``,
``RESOURCE_EXHAUSTED``, ...) use the stand-ins' fault rules, matched against the gRPC
method path. The admin API is a small Flask app, like the other stand-ins'.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from flask import Flask, Response, request
from google.api import distribution_pb2, metric_pb2
from google.cloud import monitoring_v3

from standins._common import (
    JSON,
    Clock,
    FaultInjection,
    FaultsAndLog,
    StandinError,
    check_served,
    json_response,
    recorder_admin_app,
    rfc3339,
    utcnow,
)
from standins._filter import FilterTokens
from standins._grpc import (
    US,
    GrpcServer,
    duration_us,
    fingerprint,
    from_us,
    invalid,
    one_method,
    read_token,
    serve,
    ts,
    ts_us,
    us,
    write_token,
)

logger = logging.getLogger("standins.monitoring")

SERVICE = "google.monitoring.v3.MetricService"
LIST_TIME_SERIES = f"/{SERVICE}/ListTimeSeries"
REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
RESOURCE_TYPE = "cloud_run_revision"
MAX_PAGE_SIZE = 100_000

_Request: Any = monitoring_v3.ListTimeSeriesRequest.pb()
_Response: Any = monitoring_v3.ListTimeSeriesResponse.pb()
_TimeSeries: Any = monitoring_v3.TimeSeries.pb()
_Aligner = monitoring_v3.Aggregation.Aligner
_Reducer = monitoring_v3.Aggregation.Reducer
_DELTA = metric_pb2.MetricDescriptor.MetricKind.DELTA
_GAUGE = metric_pb2.MetricDescriptor.MetricKind.GAUGE
_INT64 = metric_pb2.MetricDescriptor.ValueType.INT64
_DOUBLE = metric_pb2.MetricDescriptor.ValueType.DOUBLE
_DISTRIBUTION = metric_pb2.MetricDescriptor.ValueType.DISTRIBUTION
_TYPE_NAMES = {_INT64: "INT64", _DOUBLE: "DOUBLE", _DISTRIBUTION: "DISTRIBUTION"}


# --------------------------------------------------------------------------- histograms


@dataclass(frozen=True)
class ExponentialBuckets:
    """``bucketOptions.exponentialBuckets``: finite bucket i (1..N) is
    ``[scale * growth^(i-1), scale * growth^i)``; 0 is the underflow, N+1 the overflow."""

    num_finite_buckets: int = 100
    growth_factor: float = 1.4
    scale: float = 1.0

    def index(self, value: float) -> int:
        if value < self.scale:
            return 0
        i = int(math.log(value / self.scale) / math.log(self.growth_factor)) + 1
        i = min(i, self.num_finite_buckets + 1)
        # floating-point edges: make value land in [lower, upper)
        while i > 1 and value < self.bounds(i)[0]:
            i -= 1
        while i <= self.num_finite_buckets and value >= self.bounds(i)[1]:
            i += 1
        return i

    def bounds(self, i: int) -> tuple[float, float]:
        """``[lower, upper)`` of bucket ``i``; the underflow starts at 0 (latencies are not
        negative), the overflow ends at infinity."""
        if i == 0:
            return 0.0, self.scale
        upper = math.inf if i > self.num_finite_buckets else self.scale * self.growth_factor**i
        return self.scale * self.growth_factor ** (i - 1), upper

    def to_pb(self) -> distribution_pb2.Distribution.BucketOptions:
        return distribution_pb2.Distribution.BucketOptions(
            exponential_buckets=distribution_pb2.Distribution.BucketOptions.Exponential(
                num_finite_buckets=self.num_finite_buckets,
                growth_factor=self.growth_factor,
                scale=self.scale,
            )
        )


# Not checked against a live project (Google does not publish the per-point bucket options
# of run.googleapis.com/request_latencies): readers must take the buckets from each point.
LATENCY_BUCKETS = ExponentialBuckets()


@dataclass
class _Dist:
    """A latency distribution: count, mean, sum of squared deviations and the bucket
    counts, kept sparse (``{bucket index: count}``: a sample touches few buckets)."""

    buckets: ExponentialBuckets
    count: int = 0
    mean: float = 0.0
    ssd: float = 0.0
    counts: dict[int, int] = field(default_factory=dict)

    def add(self, value: float) -> None:
        self.count += 1
        delta = value - self.mean
        self.mean += delta / self.count
        self.ssd += delta * (value - self.mean)
        index = self.buckets.index(value)
        self.counts[index] = self.counts.get(index, 0) + 1

    def merged(self, other: _Dist) -> _Dist:
        """Chan et al.'s parallel update: the two populations as one."""
        count = self.count + other.count
        if count == 0:
            return _Dist(self.buckets)
        delta = other.mean - self.mean
        return _Dist(
            self.buckets,
            count,
            self.mean + delta * other.count / count,
            self.ssd + other.ssd + delta * delta * self.count * other.count / count,
            {
                i: self.counts.get(i, 0) + other.counts.get(i, 0)
                for i in {*self.counts, *other.counts}
            },
        )

    def percentile(self, p: float) -> float:
        """Linear interpolation inside the bucket that holds the ``p``-th percentile rank."""
        if self.count == 0:
            return 0.0
        rank = p / 100.0 * self.count
        seen = 0
        for i in sorted(self.counts):
            n = self.counts[i]
            if n and seen + n >= rank:
                lower, upper = self.buckets.bounds(i)
                if math.isinf(upper):
                    return lower
                return lower + (upper - lower) * max(rank - seen, 0.0) / n
            seen += n
        return self.buckets.bounds(max(self.counts))[0]

    def to_pb(self) -> distribution_pb2.Distribution:
        # every bucket up to the last non-empty one: the API omits trailing zero buckets
        last = max((i for i, n in self.counts.items() if n), default=-1)
        counts = [self.counts.get(i, 0) for i in range(last + 1)]
        return distribution_pb2.Distribution(
            count=self.count,
            mean=self.mean,
            sum_of_squared_deviation=self.ssd,
            bucket_options=self.buckets.to_pb(),
            bucket_counts=counts,
        )


def _merge(dists: Iterable[_Dist], buckets: ExponentialBuckets) -> _Dist:
    total = _Dist(buckets)
    for dist in dists:
        total = total.merged(dist)
    return total


# --------------------------------------------------------------------------- filters


_FUNCTIONS = {"starts_with", "ends_with", "has_substring", "one_of", "monitoring.regex.full_match"}
_LABEL_SELECTOR = re.compile(r"^(metric|resource)\.labels?\.([A-Za-z0-9_]+)$")

Header = Mapping[str, str]  # selector -> value: metric.type, resource.labels.x, ...
Predicate = Callable[[Header], bool]


def _selector(word: str) -> str:
    """The canonical selector (``metric.labels.K``) or INVALID_ARGUMENT."""
    if word in ("metric.type", "resource.type", "project"):
        return word
    match = _LABEL_SELECTOR.match(word)
    if match is None:
        raise ValueError(f"unknown selector {word!r}")
    return f"{match.group(1)}.labels.{match.group(2)}"


class _FilterParser(FilterTokens):
    """Monitoring filter syntax: ``selector op value``, functions as the value
    (``starts_with``, ``ends_with``, ``has_substring``, ``one_of``,
    ``monitoring.regex.full_match``), ``AND``/``OR``/``NOT`` and parentheses."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.metric_types: set[str] = set()

    def parse(self) -> Predicate:
        if not self.tokens:
            raise ValueError("the filter is empty")
        predicate = self._or()
        if self._peek()[0] != "end":
            raise ValueError(f"unexpected {self._peek()[1]!r}")
        if len(self.metric_types) != 1:
            raise ValueError('the filter must name exactly one metric type: metric.type = "..."')
        return predicate

    def _or(self) -> Predicate:
        parts = [self._and()]
        while self._accept("word", "OR"):
            parts.append(self._and())
        return parts[0] if len(parts) == 1 else (lambda h: any(p(h) for p in parts))

    def _and(self) -> Predicate:
        parts = [self._unary()]
        while self._accept("word", "AND"):
            parts.append(self._unary())
        return parts[0] if len(parts) == 1 else (lambda h: all(p(h) for p in parts))

    def _unary(self) -> Predicate:
        if self._accept("word", "NOT"):
            inner = self._unary()
            return lambda h: not inner(h)
        if self._accept("punct", "("):
            inner = self._or()
            self._take("punct", ")")
            return inner
        return self._comparison()

    def _comparison(self) -> Predicate:
        selector = _selector(self._take("word"))
        op = self._take("op")
        kind, token = self._peek()
        if kind == "word" and token in _FUNCTIONS:
            if op not in ("=", "!="):
                raise ValueError(f"{op} cannot take a function")
            test = self._function()
            negate = op == "!="
        elif kind in ("string", "number"):
            self.pos += 1
            literal = str(json.loads(token)) if kind == "string" else token
            test, negate = self._literal(op, literal), False
        else:
            raise ValueError(f"expected a value after {selector} {op}, found {token!r}")
        if selector == "metric.type":
            if op != "=" or kind != "string":
                raise ValueError('ListTimeSeries needs one metric type: metric.type = "..."')
            self.metric_types.add(str(json.loads(token)))
        return lambda h: test(h.get(selector, "")) != negate

    def _literal(self, op: str, literal: str) -> Callable[[str], bool]:
        if op == "=":
            return lambda v: v == literal
        if op == "!=":
            return lambda v: v != literal
        if op == ":":
            return lambda v: literal in v
        try:
            number = float(literal)
        except ValueError as exc:
            raise ValueError(f"{op} needs a number") from exc
        compare: dict[str, Callable[[float], bool]] = {
            "<": lambda x: x < number,
            ">": lambda x: x > number,
            "<=": lambda x: x <= number,
            ">=": lambda x: x >= number,
        }

        def test(value: str) -> bool:
            try:
                return compare[op](float(value))
            except ValueError:
                return False

        return test

    def _function(self) -> Callable[[str], bool]:
        name = self._take("word")
        self._take("punct", "(")
        args = [str(json.loads(self._take("string")))]
        while self._accept("punct", ","):
            args.append(str(json.loads(self._take("string"))))
        self._take("punct", ")")
        if name != "one_of" and len(args) != 1:
            raise ValueError(f"{name} takes one argument")
        first = args[0]
        if name == "starts_with":
            return lambda v: v.startswith(first)
        if name == "ends_with":
            return lambda v: v.endswith(first)
        if name == "has_substring":
            return lambda v: first in v
        if name == "one_of":
            return lambda v: v in args
        pattern = re.compile(first)
        return lambda v: pattern.fullmatch(v) is not None


def parse_filter(text: str) -> tuple[str, Predicate]:
    """``(metric type, predicate over a series header)``, or INVALID_ARGUMENT: the filter
    must compare ``metric.type`` with ``=`` to one metric type (wherever it says so)."""
    try:
        parser = _FilterParser(text)
        predicate = parser.parse()
    except (ValueError, re.error) as exc:
        raise StandinError(400, f'Field filter had an invalid value of "{text}": {exc}') from exc
    return parser.metric_types.pop(), predicate


# --------------------------------------------------------------------------- the series


@dataclass(frozen=True, order=True)
class _Key:
    project: str
    location: str
    service: str
    revision: str
    response_code: int


@dataclass
class _Sample:
    """What one series saw during one sample period."""

    count: int
    latencies: _Dist


@dataclass(frozen=True)
class _Metric:
    type: str
    value_type: int
    unit: str


_METRICS = {
    REQUEST_COUNT: _Metric(REQUEST_COUNT, _INT64, "1"),
    REQUEST_LATENCIES: _Metric(REQUEST_LATENCIES, _DISTRIBUTION, "ms"),
}

Value = int | float | _Dist


@dataclass
class _Series:
    """A series on its way through the query: header, kind, type, points ``(start, end,
    value)`` in microseconds since the epoch."""

    metric_labels: dict[str, str]
    resource_labels: dict[str, str]
    kind: int
    value_type: int
    points: list[tuple[int, int, Value]]

    def header(self, metric_type: str, project: str) -> dict[str, str]:
        out = {"metric.type": metric_type, "resource.type": RESOURCE_TYPE, "project": project}
        out.update({f"metric.labels.{k}": v for k, v in self.metric_labels.items()})
        out.update({f"resource.labels.{k}": v for k, v in self.resource_labels.items()})
        return out


# --------------------------------------------------------------------------- aggregation

_PERCENTILE_ALIGNERS = {
    _Aligner.ALIGN_PERCENTILE_99: 99.0,
    _Aligner.ALIGN_PERCENTILE_95: 95.0,
    _Aligner.ALIGN_PERCENTILE_50: 50.0,
    _Aligner.ALIGN_PERCENTILE_05: 5.0,
}
_PERCENTILE_REDUCERS = {
    _Reducer.REDUCE_PERCENTILE_99: 99.0,
    _Reducer.REDUCE_PERCENTILE_95: 95.0,
    _Reducer.REDUCE_PERCENTILE_50: 50.0,
    _Reducer.REDUCE_PERCENTILE_05: 5.0,
}
_NUMERIC_ONLY_ALIGNERS = {
    _Aligner.ALIGN_RATE,
    _Aligner.ALIGN_MEAN,
    _Aligner.ALIGN_MIN,
    _Aligner.ALIGN_MAX,
    _Aligner.ALIGN_COUNT,
}
_NUMERIC_ONLY_REDUCERS = {_Reducer.REDUCE_MIN, _Reducer.REDUCE_MAX}
_SUPPORTED_ALIGNERS = {
    _Aligner.ALIGN_NONE,
    _Aligner.ALIGN_DELTA,
    _Aligner.ALIGN_SUM,
    *_NUMERIC_ONLY_ALIGNERS,
    *_PERCENTILE_ALIGNERS,
}
_SUPPORTED_REDUCERS = {
    _Reducer.REDUCE_NONE,
    _Reducer.REDUCE_SUM,
    _Reducer.REDUCE_MEAN,
    _Reducer.REDUCE_COUNT,
    _Reducer.REDUCE_STDDEV,
    *_NUMERIC_ONLY_REDUCERS,
    *_PERCENTILE_REDUCERS,
}


def _linear_percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    pos = p / 100.0 * (len(ordered) - 1)
    low = math.floor(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


def _align(series: _Series, aligner: Any, period: int, start: int, end: int) -> _Series | None:
    """One point per alignment period ``(end - (k+1)*period, end - k*period]`` with data."""
    windows: dict[int, list[Value]] = {}
    for _s, point_end, raw in series.points:
        windows.setdefault((end - point_end) // period, []).append(raw)
    points: list[tuple[int, int, Value]] = []
    kind = _GAUGE
    value_type = _DOUBLE
    for k in sorted(windows):
        values = windows[k]
        w_end = end - k * period
        if aligner in (_Aligner.ALIGN_DELTA, _Aligner.ALIGN_SUM):
            kind, value_type = series.kind, series.value_type
            if series.value_type == _DISTRIBUTION:
                value: Value = _merge((v for v in values if isinstance(v, _Dist)), LATENCY_BUCKETS)
            else:
                value = sum(v for v in values if not isinstance(v, _Dist))
        elif aligner in _PERCENTILE_ALIGNERS:
            merged = _merge((v for v in values if isinstance(v, _Dist)), LATENCY_BUCKETS)
            value = merged.percentile(_PERCENTILE_ALIGNERS[aligner])
        else:
            numbers = [float(v) for v in values if not isinstance(v, _Dist)]
            if aligner == _Aligner.ALIGN_RATE:
                value = sum(numbers) / (period / US)
            elif aligner == _Aligner.ALIGN_MEAN:
                value = sum(numbers) / len(numbers)
            elif aligner == _Aligner.ALIGN_COUNT:
                value, value_type = len(numbers), _INT64
            else:
                extreme = min(numbers) if aligner == _Aligner.ALIGN_MIN else max(numbers)
                value_type = series.value_type
                value = int(extreme) if value_type == _INT64 else extreme
        w_start = w_end - period if kind == _DELTA else w_end
        points.append((w_start, w_end, value))
    if not points:
        return None
    return _Series(series.metric_labels, series.resource_labels, kind, value_type, points)


def _reduce_values(reducer: Any, values: list[Value], value_type: int) -> tuple[Value, int]:
    if value_type == _DISTRIBUTION:
        merged = _merge((v for v in values if isinstance(v, _Dist)), LATENCY_BUCKETS)
        if reducer == _Reducer.REDUCE_SUM:
            return merged, _DISTRIBUTION
        if reducer == _Reducer.REDUCE_MEAN:
            return merged.mean, _DOUBLE
        if reducer == _Reducer.REDUCE_STDDEV:
            return math.sqrt(merged.ssd / merged.count) if merged.count else 0.0, _DOUBLE
        if reducer == _Reducer.REDUCE_COUNT:
            return len(values), _INT64
        return merged.percentile(_PERCENTILE_REDUCERS[reducer]), _DOUBLE
    numbers = [v for v in values if not isinstance(v, _Dist)]
    if reducer == _Reducer.REDUCE_SUM:
        return sum(numbers), value_type
    if reducer == _Reducer.REDUCE_MEAN:
        return sum(numbers) / len(numbers), _DOUBLE
    if reducer == _Reducer.REDUCE_COUNT:
        return len(numbers), _INT64
    if reducer == _Reducer.REDUCE_MIN:
        return min(numbers), value_type
    if reducer == _Reducer.REDUCE_MAX:
        return max(numbers), value_type
    if reducer == _Reducer.REDUCE_STDDEV:
        mean = sum(numbers) / len(numbers)
        return math.sqrt(sum((x - mean) ** 2 for x in numbers) / len(numbers)), _DOUBLE
    return _linear_percentile([float(x) for x in numbers], _PERCENTILE_REDUCERS[reducer]), _DOUBLE


def _group_field(text: str) -> tuple[str, str]:
    """``resource.label.revision_name`` -> ``("resource", "revision_name")``."""
    cleaned = text.replace('"', "")
    if cleaned in ("resource.type", "metric.type"):
        return "type", cleaned
    match = _LABEL_SELECTOR.match(cleaned)
    if match is None:
        raise invalid("aggregation.groupByFields", text, "not a label of the metric or resource")
    return match.group(1), match.group(2)


def _labels(series: _Series, scope: str) -> dict[str, str]:
    return series.metric_labels if scope == "metric" else series.resource_labels


def _reduce(series: list[_Series], reducer: Any, group_by: Sequence[str]) -> list[_Series]:
    """Partition by the ``group_by`` labels; reduce each partition per alignment period."""
    fields = [_group_field(f) for f in group_by]
    groups: dict[tuple[tuple[str, str], ...], list[_Series]] = {}
    for one in series:
        key = tuple(
            (f"{scope}.{name}", _labels(one, scope).get(name, ""))
            for scope, name in fields
            if scope != "type"
        )
        groups.setdefault(key, []).append(one)
    out: list[_Series] = []
    for key, members in groups.items():
        metric_labels = {k.split(".", 1)[1]: v for k, v in key if k.startswith("metric.")}
        resource_labels = {k.split(".", 1)[1]: v for k, v in key if k.startswith("resource.")}
        resource_labels.setdefault("project_id", members[0].resource_labels["project_id"])
        by_end: dict[int, tuple[int, list[Value]]] = {}
        for member in members:
            for start, end, value in member.points:
                by_end.setdefault(end, (start, []))[1].append(value)
        points: list[tuple[int, int, Value]] = []
        value_type = members[0].value_type
        for end in sorted(by_end, reverse=True):
            start, values = by_end[end]
            value, value_type = _reduce_values(reducer, values, members[0].value_type)
            points.append((start, end, value))
        out.append(_Series(metric_labels, resource_labels, members[0].kind, value_type, points))
    return out


def _check_aggregation(aggregation: Any, metric: _Metric) -> None:
    aligner = aggregation.per_series_aligner
    reducer = aggregation.cross_series_reducer
    kinds = f"kind DELTA and value type {_TYPE_NAMES[metric.value_type]}"
    aligner_name = _Aligner(aligner).name
    if aligner not in _SUPPORTED_ALIGNERS:
        raise invalid("aggregation.perSeriesAligner", aligner_name, "not served by the stand-in")
    if reducer not in _SUPPORTED_REDUCERS:
        raise invalid(
            "aggregation.crossSeriesReducer",
            _Reducer(reducer).name,
            f"the reducer cannot be applied to metrics with {kinds}",
        )
    distribution = metric.value_type == _DISTRIBUTION
    if (distribution and aligner in _NUMERIC_ONLY_ALIGNERS) or (
        not distribution and aligner in _PERCENTILE_ALIGNERS
    ):
        raise invalid(
            "aggregation.perSeriesAligner",
            aligner_name,
            f"the aligner cannot be applied to metrics with {kinds}",
        )
    if aligner == _Aligner.ALIGN_NONE and reducer != _Reducer.REDUCE_NONE:
        raise invalid(
            "aggregation.perSeriesAligner",
            aligner_name,
            "a cross-series reducer needs a per-series aligner other than ALIGN_NONE",
        )
    aligned_distribution = distribution and aligner in (_Aligner.ALIGN_DELTA, _Aligner.ALIGN_SUM)
    if aligned_distribution and reducer in _NUMERIC_ONLY_REDUCERS:
        raise invalid(
            "aggregation.crossSeriesReducer",
            _Reducer(reducer).name,
            "the reducer cannot be applied to a DISTRIBUTION",
        )


# --------------------------------------------------------------------------- the state


class MonitoringState(FaultInjection):
    """Cloud Run request metrics recorded from real requests; every method is thread-safe.

    ``sample_period_s`` is the length of one raw DELTA point (Cloud Run samples every
    60 s; 1 s by default so that local scenarios need not wait minutes);
    ``visibility_delay_s`` hides points that ended less than that long ago (Cloud Run:
    up to 180 s); ``min_alignment_period_s`` is the API's minimum (60 s); a series keeps
    ``retention_s`` of samples behind its newest (6 h, so a long ``make dev`` stays small;
    the real API keeps 6 weeks).
    """

    def __init__(
        self,
        *,
        clock: Clock = utcnow,
        sample_period_s: float = 1.0,
        visibility_delay_s: float = 0.0,
        min_alignment_period_s: float = 60.0,
        retention_s: float = 6 * 3600.0,
    ) -> None:
        self._lock = threading.RLock()
        self.retention_s = retention_s
        self._clock = clock
        self.log = FaultsAndLog(self._lock, clock)
        self._samples: dict[_Key, dict[int, _Sample]] = {}
        self.sample_period_s = sample_period_s
        self.visibility_delay_s = visibility_delay_s
        self.min_alignment_period_s = min_alignment_period_s
        self.configure()

    def configure(
        self,
        *,
        sample_period_s: float | None = None,
        visibility_delay_s: float | None = None,
        min_alignment_period_s: float | None = None,
    ) -> JSON:
        with self._lock:
            if sample_period_s is not None and sample_period_s != self.sample_period_s:
                if self._samples:
                    raise ValueError("reset() before changing sample_period_s")
                self.sample_period_s = sample_period_s
            if visibility_delay_s is not None:
                self.visibility_delay_s = visibility_delay_s
            if min_alignment_period_s is not None:
                self.min_alignment_period_s = min_alignment_period_s
            if self.sample_period_s <= 0 or self.visibility_delay_s < 0:
                raise ValueError("sample_period_s must be > 0 and visibility_delay_s >= 0")
            return {
                "sample_period_s": self.sample_period_s,
                "visibility_delay_s": self.visibility_delay_s,
                "min_alignment_period_s": self.min_alignment_period_s,
            }

    # ----------------------------------------------------------------- ingestion

    def record(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        status_code: int,
        latency_ms: float,
        at: datetime | None = None,
    ) -> None:
        """One request served by ``revision``: +1 on request_count and its latency in
        request_latencies, in the sample period that holds ``at`` (default: now)."""
        check_served(status_code, latency_ms)
        key = _Key(project, location, service, revision, int(status_code))
        with self._lock:
            moment = us(at if at is not None else self._clock())
            period = max(1, round(self.sample_period_s * US))
            end = -(-moment // period) * period  # the sample (end - period, end] holds it
            samples = self._samples.setdefault(key, {})
            sample = samples.get(end)
            if sample is None:
                sample = samples[end] = _Sample(0, _Dist(LATENCY_BUCKETS))
                cutoff = end - round(self.retention_s * US)
                while (oldest := next(iter(samples))) < cutoff:  # mostly in time order
                    del samples[oldest]
            sample.count += 1
            sample.latencies.add(float(latency_ms))

    def reset(self) -> None:
        with self._lock:
            self._samples.clear()
            self.log.reset()

    def series(self, service: str | None = None, revision: str | None = None) -> list[JSON]:
        """What was recorded, per series (oldest sample first) -- for tests and curl."""
        with self._lock:
            period = round(self.sample_period_s * US)
            out: list[JSON] = []
            for key in sorted(self._samples):
                if (service and key.service != service) or (revision and key.revision != revision):
                    continue
                samples = self._samples[key]
                out.append(
                    {
                        "project": key.project,
                        "location": key.location,
                        "service": key.service,
                        "revision": key.revision,
                        "response_code": str(key.response_code),
                        "response_code_class": f"{key.response_code // 100}xx",
                        "requests": sum(s.count for s in samples.values()),
                        "points": [
                            {
                                "start": rfc3339(from_us(end - period)),
                                "end": rfc3339(from_us(end)),
                                "count": sample.count,
                                "latency_mean_ms": sample.latencies.mean,
                            }
                            for end, sample in sorted(samples.items())
                        ],
                    }
                )
            return out

    # ----------------------------------------------------------------- ListTimeSeries

    def _raw(self, metric: _Metric, project: str, start: int, end: int) -> list[_Series]:
        period = max(1, round(self.sample_period_s * US))
        visible_until = us(self._clock()) - round(self.visibility_delay_s * US)
        point_in_time = start == end
        out: list[_Series] = []
        for key, samples in self._samples.items():
            if key.project != project:
                continue
            points: list[tuple[int, int, Value]] = []
            for sample_end, sample in samples.items():
                if sample_end > visible_until:
                    continue
                inside = (
                    sample_end - period < end <= sample_end
                    if point_in_time
                    else start < sample_end <= end
                )
                if inside:
                    value = sample.count if metric.value_type == _INT64 else sample.latencies
                    points.append((sample_end - period, sample_end, value))
            if points:
                points.sort(key=lambda p: p[1], reverse=True)  # newest first, as the API
                out.append(
                    _Series(
                        {
                            "response_code": str(key.response_code),
                            "response_code_class": f"{key.response_code // 100}xx",
                        },
                        {
                            "project_id": key.project,
                            "service_name": key.service,
                            "revision_name": key.revision,
                            "location": key.location,
                            "configuration_name": key.service,
                        },
                        _DELTA,
                        metric.value_type,
                        points,
                    )
                )
        return out

    def list_time_series(self, req: Any) -> Any:
        """A ``ListTimeSeriesRequest`` (protobuf) -> ``ListTimeSeriesResponse``."""
        match = re.fullmatch(r"projects/([^/]+)", req.name)
        if match is None:
            raise invalid("name", req.name, "expected projects/PROJECT_ID_OR_NUMBER")
        project = match.group(1)
        metric_type, predicate = parse_filter(req.filter)
        metric = _METRICS.get(metric_type)
        if metric is None:
            raise StandinError(404, f'Cannot find metric(s) that match type = "{metric_type}".')
        if not req.HasField("interval") or not req.interval.HasField("end_time"):
            raise invalid("interval.endTime", "", "the end time is required")
        end = ts_us(req.interval.end_time)
        start = ts_us(req.interval.start_time) if req.interval.HasField("start_time") else end
        if start > end:
            raise invalid("interval.startTime", rfc3339(from_us(start)), "after the end time")
        if req.order_by:
            raise invalid("orderBy", req.order_by, "unsupported: must be left blank")
        if req.HasField("secondary_aggregation"):
            raise invalid("secondaryAggregation", "", "not served by the stand-in")
        if req.page_size < 0:
            raise invalid("pageSize", str(req.page_size), "must not be negative")
        aggregation = req.aggregation
        _check_aggregation(aggregation, metric)
        aligner = aggregation.per_series_aligner
        period = 0
        if aligner != _Aligner.ALIGN_NONE:
            if not aggregation.HasField("alignment_period"):
                raise invalid(
                    "aggregation.alignmentPeriod", "", "required with a per-series aligner"
                )
            period = duration_us(aggregation.alignment_period)
            if period < round(self.min_alignment_period_s * US):
                raise invalid(
                    "aggregation.alignmentPeriod",
                    f"{period / US:g}s",
                    f"must be at least {self.min_alignment_period_s:g} seconds",
                )
        for text in aggregation.group_by_fields:
            _group_field(text)

        with self._lock:
            raw = self._raw(metric, project, start, end)
        series = [s for s in raw if predicate(s.header(metric_type, project))]
        if aligner != _Aligner.ALIGN_NONE:
            aligned = (_align(s, aligner, period, start, end) for s in series)
            series = [s for s in aligned if s is not None]
            if aggregation.cross_series_reducer != _Reducer.REDUCE_NONE:
                series = _reduce(
                    series, aggregation.cross_series_reducer, aggregation.group_by_fields
                )
        series.sort(
            key=lambda s: (sorted(s.metric_labels.items()), sorted(s.resource_labels.items()))
        )
        return self._page(req, metric, series)

    def _page(self, req: Any, metric: _Metric, series: list[_Series]) -> Any:
        """Pages of at most ``pageSize`` points (FULL) or series (HEADERS)."""
        headers_only = req.view == monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
        size = min(req.page_size or MAX_PAGE_SIZE, MAX_PAGE_SIZE)
        query = fingerprint(req)
        index, offset = read_token(req.page_token, query) or (0, 0)
        response = _Response(unit=metric.unit)
        budget = size
        while index < len(series) and budget > 0:
            one = series[index]
            out = response.time_series.add()
            out.metric.type = metric.type
            out.metric.labels.update(one.metric_labels)
            out.resource.type = RESOURCE_TYPE
            out.resource.labels.update(one.resource_labels)
            out.metric_kind = one.kind
            out.value_type = one.value_type
            out.unit = metric.unit
            if headers_only:
                index, budget = index + 1, budget - 1
                continue
            chunk = one.points[offset : offset + budget]
            for start, end, value in chunk:
                point = out.points.add()
                point.interval.end_time.CopyFrom(ts(end))
                point.interval.start_time.CopyFrom(ts(start))
                if isinstance(value, _Dist):
                    point.value.distribution_value.CopyFrom(value.to_pb())
                elif one.value_type == _INT64:
                    point.value.int64_value = int(value)
                else:
                    point.value.double_value = float(value)
            budget -= len(chunk)
            offset += len(chunk)
            if offset >= len(one.points):
                index, offset = index + 1, 0
        if index < len(series):
            response.next_page_token = write_token(index, offset, query)
        return response


# --------------------------------------------------------------------------- gRPC


def grpc_handler(state: MonitoringState) -> Any:
    """The ``google.monitoring.v3.MetricService`` handler (only ListTimeSeries; every
    other method answers UNIMPLEMENTED, as gRPC does for an unknown method)."""
    return one_method(
        SERVICE, "ListTimeSeries", state.list_time_series, (_Request, _Response), state.log, logger
    )


def serve_grpc(state: MonitoringState, host: str = "127.0.0.1", port: int = 0) -> GrpcServer:
    """Serve the MetricService on ``host:port`` (0 = any free port), insecure."""
    return serve(grpc_handler(state), host, port, "standin-monitoring")


# --------------------------------------------------------------------------- admin app


def _settings_from_admin(body: JSON) -> dict[str, Any]:
    keys = ("sample_period_s", "visibility_delay_s", "min_alignment_period_s")
    return {k: float(body[k]) for k in keys if k in body}


def create_app(state: MonitoringState | None = None) -> Flask:
    """The admin API (JSON under ``/_admin/``); the API itself is :func:`serve_grpc`'s."""
    st = state or MonitoringState()
    app = recorder_admin_app("standins.monitoring", st, st.record, _settings_from_admin)

    @app.get("/_admin/series")
    def admin_series() -> Response:
        found = st.series(request.args.get("service"), request.args.get("revision"))
        return json_response({"series": found})

    return app


__all__ = [
    "LATENCY_BUCKETS",
    "REQUEST_COUNT",
    "REQUEST_LATENCIES",
    "ExponentialBuckets",
    "GrpcServer",
    "MonitoringState",
    "create_app",
    "grpc_handler",
    "parse_filter",
    "serve_grpc",
]
