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

import base64
import hashlib
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, Self

import grpc
from flask import Flask, Response, request
from google.api import distribution_pb2, metric_pb2
from google.cloud import monitoring_v3
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from standins._common import (
    HTTP_TO_RPC_STATUS,
    JSON,
    Clock,
    FaultInjection,
    FaultsAndLog,
    StandinError,
    add_fault_admin_routes,
    admin_json,
    google_error,
    install_google_http_errors,
    json_response,
    parse_time,
    rfc3339,
    utcnow,
)

logger = logging.getLogger("standins.monitoring")

SERVICE = "google.monitoring.v3.MetricService"
LIST_TIME_SERIES = f"/{SERVICE}/ListTimeSeries"
REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
RESOURCE_TYPE = "cloud_run_revision"
MAX_PAGE_SIZE = 100_000
_US = 1_000_000

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


_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<op>!=|<=|>=|=|<|>|:)
      | (?P<punct>[(),])
      | (?P<word>[A-Za-z_][A-Za-z0-9_.]*)
    )""",
    re.VERBOSE,
)
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


class _FilterParser:
    """Monitoring filter syntax: ``selector op value``, functions as the value
    (``starts_with``, ``ends_with``, ``has_substring``, ``one_of``,
    ``monitoring.regex.full_match``), ``AND``/``OR``/``NOT`` and parentheses."""

    def __init__(self, text: str) -> None:
        self.tokens: list[tuple[str, str]] = []
        pos = 0
        text = text.rstrip()
        while pos < len(text):
            match = _TOKEN.match(text, pos)
            if match is None or match.end() == pos:
                raise ValueError(f"unexpected character at offset {pos}")
            kind = match.lastgroup or ""
            self.tokens.append((kind, match.group(kind)))
            pos = match.end()
        self.pos = 0
        self.metric_types: set[str] = set()

    def _peek(self) -> tuple[str, str]:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else ("end", "end of filter")

    def _take(self, kind: str, value: str | None = None) -> str:
        found_kind, found = self._peek()
        if found_kind != kind or (value is not None and found != value):
            raise ValueError(f"expected {value or kind}, found {found!r}")
        self.pos += 1
        return found

    def _accept(self, kind: str, value: str) -> bool:
        if self._peek() == (kind, value):
            self.pos += 1
            return True
        return False

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


def _us(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * _US + delta.microseconds


def _from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // _US, UTC).replace(microsecond=us % _US)


def _ts(us: int) -> Timestamp:
    return Timestamp(seconds=us // _US, nanos=(us % _US) * 1000)


def _ts_us(ts: Timestamp) -> int:
    return int(ts.seconds) * _US + int(ts.nanos) // 1000


def _duration_us(duration: Duration) -> int:
    return int(duration.seconds) * _US + int(duration.nanos) // 1000


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


def _invalid(field_name: str, value: str, why: str) -> StandinError:
    return StandinError(400, f'Field {field_name} had an invalid value of "{value}": {why}')


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
                value = sum(numbers) / (period / _US)
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
        raise _invalid("aggregation.groupByFields", text, "not a label of the metric or resource")
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
        raise _invalid("aggregation.perSeriesAligner", aligner_name, "not served by the stand-in")
    if reducer not in _SUPPORTED_REDUCERS:
        raise _invalid(
            "aggregation.crossSeriesReducer",
            _Reducer(reducer).name,
            f"the reducer cannot be applied to metrics with {kinds}",
        )
    distribution = metric.value_type == _DISTRIBUTION
    if (distribution and aligner in _NUMERIC_ONLY_ALIGNERS) or (
        not distribution and aligner in _PERCENTILE_ALIGNERS
    ):
        raise _invalid(
            "aggregation.perSeriesAligner",
            aligner_name,
            f"the aligner cannot be applied to metrics with {kinds}",
        )
    if aligner == _Aligner.ALIGN_NONE and reducer != _Reducer.REDUCE_NONE:
        raise _invalid(
            "aggregation.perSeriesAligner",
            aligner_name,
            "a cross-series reducer needs a per-series aligner other than ALIGN_NONE",
        )
    aligned_distribution = distribution and aligner in (_Aligner.ALIGN_DELTA, _Aligner.ALIGN_SUM)
    if aligned_distribution and reducer in _NUMERIC_ONLY_REDUCERS:
        raise _invalid(
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
        if not 100 <= int(status_code) <= 599:
            raise ValueError(f"status_code must be an HTTP status, got {status_code}")
        if not latency_ms >= 0:
            raise ValueError(f"latency_ms must be >= 0, got {latency_ms}")
        key = _Key(project, location, service, revision, int(status_code))
        with self._lock:
            moment = _us(at if at is not None else self._clock())
            period = max(1, round(self.sample_period_s * _US))
            end = -(-moment // period) * period  # the sample (end - period, end] holds it
            samples = self._samples.setdefault(key, {})
            sample = samples.get(end)
            if sample is None:
                sample = samples[end] = _Sample(0, _Dist(LATENCY_BUCKETS))
                cutoff = end - round(self.retention_s * _US)
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
            period = round(self.sample_period_s * _US)
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
                                "start": rfc3339(_from_us(end - period)),
                                "end": rfc3339(_from_us(end)),
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
        period = max(1, round(self.sample_period_s * _US))
        visible_until = _us(self._clock()) - round(self.visibility_delay_s * _US)
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
            raise _invalid("name", req.name, "expected projects/PROJECT_ID_OR_NUMBER")
        project = match.group(1)
        metric_type, predicate = parse_filter(req.filter)
        metric = _METRICS.get(metric_type)
        if metric is None:
            raise StandinError(404, f'Cannot find metric(s) that match type = "{metric_type}".')
        if not req.HasField("interval") or not req.interval.HasField("end_time"):
            raise _invalid("interval.endTime", "", "the end time is required")
        end = _ts_us(req.interval.end_time)
        start = _ts_us(req.interval.start_time) if req.interval.HasField("start_time") else end
        if start > end:
            raise _invalid("interval.startTime", rfc3339(_from_us(start)), "after the end time")
        if req.order_by:
            raise _invalid("orderBy", req.order_by, "unsupported: must be left blank")
        if req.HasField("secondary_aggregation"):
            raise _invalid("secondaryAggregation", "", "not served by the stand-in")
        if req.page_size < 0:
            raise _invalid("pageSize", str(req.page_size), "must not be negative")
        aggregation = req.aggregation
        _check_aggregation(aggregation, metric)
        aligner = aggregation.per_series_aligner
        period = 0
        if aligner != _Aligner.ALIGN_NONE:
            if not aggregation.HasField("alignment_period"):
                raise _invalid(
                    "aggregation.alignmentPeriod", "", "required with a per-series aligner"
                )
            period = _duration_us(aggregation.alignment_period)
            if period < round(self.min_alignment_period_s * _US):
                raise _invalid(
                    "aggregation.alignmentPeriod",
                    f"{period / _US:g}s",
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
        fingerprint = _fingerprint(req)
        index, offset = _read_token(req.page_token, fingerprint)
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
                point.interval.end_time.CopyFrom(_ts(end))
                point.interval.start_time.CopyFrom(_ts(start))
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
            response.next_page_token = _write_token(index, offset, fingerprint)
        return response


def _fingerprint(req: Any) -> str:
    """The request without its paging fields: a token is only good for the same query."""
    copy = _Request()
    copy.CopyFrom(req)
    copy.page_token = ""
    copy.page_size = 0
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def _write_token(index: int, offset: int, fingerprint: str) -> str:
    raw = json.dumps([index, offset, fingerprint]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _read_token(token: str, fingerprint: str) -> tuple[int, int]:
    if not token:
        return 0, 0
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        index, offset, seen = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise _invalid("pageToken", token, "not a page token") from exc
    if seen != fingerprint or not isinstance(index, int) or not isinstance(offset, int):
        raise _invalid("pageToken", token, "not a page token of this query")
    if index < 0 or offset < 0:
        raise _invalid("pageToken", token, "not a page token of this query")
    return index, offset


# --------------------------------------------------------------------------- gRPC


def _abort(context: Any, status: str, message: str, retry_after: int | None = None) -> NoReturn:
    """End the call the way Google's front end does: code, message and a
    ``google.rpc.Status`` in the trailers (with ``RetryInfo`` when there is a delay)."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    code = grpc.StatusCode[status]
    details = []
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after))
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    rich = status_pb2.Status(code=code.value[0], message=message, details=details)
    context.abort_with_status(rpc_status.to_status(rich))
    raise AssertionError("abort_with_status returned")  # it raises; this is for the types


def _log_call(path: str, status: str, started: float) -> None:
    """One line per call, like the HTTP stand-ins' (never a request body)."""
    logger.info("POST %s -> %s (%.1f ms)", path, status, (time.monotonic() - started) * 1000)


def _method(
    state: MonitoringState, path: str, call: Callable[[Any], Any]
) -> Callable[[Any, Any], Any]:
    """A unary handler: logged, subject to fault rules, errors as gRPC status codes."""

    def handle(req: Any, context: Any) -> Any:
        started = time.monotonic()
        body = json_format.MessageToDict(req)
        index = state.log.record("POST", path, {}, body)
        rule = state.log.take_fault("POST", path)
        if rule is not None:
            state.log.set_status(index, rule.status)
            status = HTTP_TO_RPC_STATUS.get(rule.status, "UNKNOWN")
            _log_call(path, f"{status} (injected)", started)
            _abort(context, status, rule.body or "Injected fault.", rule.retry_after)
        try:
            answer = call(req)
        except StandinError as exc:
            state.log.set_status(index, exc.code)
            _log_call(path, exc.status, started)
            _abort(context, exc.status, exc.message)
        state.log.set_status(index, 200)
        _log_call(path, "OK", started)
        return answer

    return handle


def grpc_handler(state: MonitoringState) -> Any:
    """The ``google.monitoring.v3.MetricService`` handler (only ListTimeSeries; every
    other method answers UNIMPLEMENTED, as gRPC does for an unknown method)."""
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                _method(state, LIST_TIME_SERIES, state.list_time_series),
                request_deserializer=_Request.FromString,
                response_serializer=_Response.SerializeToString,
            )
        },
    )


class GrpcServer:
    """The MetricService on a gRPC server (thread pool); ``target`` is ``HOST:PORT``."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port
        self._stopped = False

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self, grace: float = 0.5) -> None:
        """Stop serving and release the port. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._server.stop(grace).wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve_grpc(state: MonitoringState, host: str = "127.0.0.1", port: int = 0) -> GrpcServer:
    """Serve the MetricService on ``host:port`` (0 = any free port), insecure."""
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix="standin-monitoring")
    )
    server.add_generic_rpc_handlers((grpc_handler(state),))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return GrpcServer(server, host, bound)


# --------------------------------------------------------------------------- admin app


def _record_from_admin(st: MonitoringState, item: Mapping[str, Any]) -> None:
    try:
        st.record(
            str(item.get("project", "sight-local")),
            str(item.get("location", "europe-west1")),
            str(item["service"]),
            str(item["revision"]),
            int(item["status_code"]),
            float(item.get("latency_ms", 0.0)),
            parse_time(item.get("at")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StandinError(400, f"bad record: {exc}") from exc


def create_app(state: MonitoringState | None = None) -> Flask:
    """The admin API (JSON under ``/_admin/``); the API itself is :func:`serve_grpc`'s."""
    st = state or MonitoringState()
    app = Flask("standins.monitoring")
    app.extensions["standin"] = st
    install_google_http_errors(app)
    app.register_error_handler(
        StandinError, lambda exc: google_error(exc.code, exc.message, exc.status)
    )
    add_fault_admin_routes(app, st)

    @app.post("/_admin/record")
    def admin_record() -> Response:
        body = admin_json()
        items = body["requests"] if isinstance(body.get("requests"), list) else [body]
        for item in items:
            if not isinstance(item, dict):
                raise StandinError(400, "bad record: each request is a JSON object")
            _record_from_admin(st, item)
        return json_response({"recorded": len(items)}, 201)

    @app.get("/_admin/series")
    def admin_series() -> Response:
        found = st.series(request.args.get("service"), request.args.get("revision"))
        return json_response({"series": found})

    @app.get("/_admin/config")
    def admin_get_config() -> Response:
        return json_response(st.configure())

    @app.post("/_admin/config")
    def admin_config() -> Response:
        body = admin_json()
        try:
            settings = {
                k: float(body[k])
                for k in ("sample_period_s", "visibility_delay_s", "min_alignment_period_s")
                if k in body
            }
            return json_response(st.configure(**settings))
        except (TypeError, ValueError) as exc:
            raise StandinError(400, f"bad config: {exc}") from exc

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return json_response({})

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
