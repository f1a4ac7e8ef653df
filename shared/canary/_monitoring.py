"""Cloud Monitoring reader for the canary: Cloud Run's request metrics per revision and per
aligned period, as the analysis's typed inputs (docs/canary.md, "Reading Cloud Monitoring").

Two ``ListTimeSeries`` calls per analysis, both on the monitored resource
``cloud_run_revision`` of one service and the two revisions:

- ``run.googleapis.com/request_count``: ``ALIGN_DELTA`` per ``alignment_s``, then
  ``REDUCE_SUM`` grouped by ``revision_name`` and ``response_code_class``;
- ``run.googleapis.com/request_latencies``: ``ALIGN_DELTA``, ``REDUCE_SUM`` grouped by
  ``revision_name`` (a summed DISTRIBUTION per revision and period).

The periods are fixed on the epoch grid of ``alignment_s`` (not on the tick's "now"), so
every analysis of a step sees the same intervals; the newest ``visibility_delay_s`` is
left out because Monitoring may still be filling it. Monitoring has no point for a period
without requests: such a revision gets ``Sample(0, 0)``.

google-cloud-monitoring is imported on first use (docs/architecture.md, "Cold start").
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.canary._model import (
    Histogram,
    Interval,
    Sample,
    exponential_bounds,
    linear_bounds,
)
from shared.canary._reading import US, ApiReader, from_us, grid, grpc_client, quote, us
from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from google.cloud import monitoring_v3

    from shared.runtime import Deps
    from shared.settings import Settings

REQUEST_COUNT = "run.googleapis.com/request_count"
REQUEST_LATENCIES = "run.googleapis.com/request_latencies"
RESOURCE_TYPE = "cloud_run_revision"


class MonitoringError(PermanentError):
    """Cloud Monitoring refused the query (bad filter, no permission, unknown metric): a
    retry cannot fix it."""


class MonitoringUnavailable(TransientError):
    """Cloud Monitoring stayed unavailable, slow or throttling through the bounded
    retries; a later analysis may succeed."""


@dataclass(frozen=True, slots=True)
class _Query:
    project: str
    region: str
    service: str
    revisions: tuple[str, ...]
    #: the aligned periods: ``(first - period, first]`` ... ``(last - period, last]``
    first_end: int  # microseconds since the epoch
    last_end: int
    period: int


class MonitoringReader(ApiReader):
    """Reads Cloud Run's request count and latencies of a canary and its stable revision.

    ``client`` is the official ``MetricServiceClient`` (the stand-in's over an insecure
    channel in tests and locally: :func:`create_metric_client`). Every call retries
    UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL for at most
    ``timeout_s`` in all (pages included), then raises :class:`MonitoringUnavailable`;
    any other refusal is a :class:`MonitoringError`.
    """

    unavailable = MonitoringUnavailable
    refused = MonitoringError

    def __init__(
        self,
        client: monitoring_v3.MetricServiceClient,
        *,
        alignment_s: int = 60,
        visibility_delay_s: float = 0.0,
        timeout_s: float = 10.0,
    ) -> None:
        super().__init__(
            alignment_s=alignment_s, visibility_delay_s=visibility_delay_s, timeout_s=timeout_s
        )
        self._client = client

    # ------------------------------------------------------------------ public

    def intervals(
        self,
        *,
        project: str,
        region: str,
        service: str,
        canary: str,
        stable: str,
        start: datetime,
        end: datetime,
    ) -> list[Interval]:
        """Canary and stable per aligned period inside ``(start, end - visibility_delay]``,
        oldest first; empty when no whole period fits yet."""
        query = self._query(project, region, service, (canary, stable), start, end)
        if query is None:
            return []
        deadline = time.monotonic() + self.timeout_s
        counts = self._counts(query, deadline)
        latencies = self._latencies(query, deadline, query.period)
        out: list[Interval] = []
        for period_end in range(query.first_end, query.last_end + 1, query.period):
            samples = [
                Sample.from_classes(
                    counts.get((revision, period_end), {}),
                    latencies.get((revision, period_end)),
                )
                for revision in (canary, stable)
            ]
            out.append(Interval(canary=samples[0], stable=samples[1]))
        return out

    def baseline(
        self,
        *,
        project: str,
        region: str,
        service: str,
        stable: str,
        start: datetime,
        end: datetime,
    ) -> Histogram | None:
        """The stable revision's latencies over ``(start, end - visibility_delay]`` (the
        whole periods of the grid inside it) as one histogram; None without requests."""
        query = self._query(project, region, service, (stable,), start, end)
        if query is None:
            return None
        # one alignment period over the whole window: one point, whatever its length
        span = query.last_end - query.first_end + query.period
        whole = _Query(project, region, service, (stable,), query.last_end, query.last_end, span)
        found = self._latencies(whole, time.monotonic() + self.timeout_s, span)
        total: Histogram | None = None
        for (_revision, _end), histogram in sorted(found.items()):
            total = histogram if total is None else _add(total, histogram, service)
        return total if total is not None and total.total else None

    # ------------------------------------------------------------------ queries

    def _query(
        self,
        project: str,
        region: str,
        service: str,
        revisions: tuple[str, ...],
        start: datetime,
        end: datetime,
    ) -> _Query | None:
        periods = grid(start, end, self.alignment_s, self.visibility_delay_s)
        if periods is None:
            return None
        return _Query(project, region, service, revisions, *periods)

    def _counts(self, query: _Query, deadline: float) -> dict[tuple[str, int], dict[str, int]]:
        """``{(revision, period end): {response_code_class: requests}}``."""
        out: dict[tuple[str, int], dict[str, int]] = {}
        group_by = ("resource.label.revision_name", "metric.label.response_code_class")
        for series in self._list(REQUEST_COUNT, query, query.period, group_by, deadline):
            revision = series.resource.labels.get("revision_name", "")
            code_class = series.metric.labels.get("response_code_class", "")
            for point in series.points:
                by_class = out.setdefault((revision, us(point.interval.end_time)), {})
                by_class[code_class] = by_class.get(code_class, 0) + int(point.value.int64_value)
        return out

    def _latencies(
        self, query: _Query, deadline: float, period: int
    ) -> dict[tuple[str, int], Histogram]:
        """``{(revision, period end): histogram}``; a point without bucket counts has no
        histogram (Monitoring may send only count and mean)."""
        out: dict[tuple[str, int], Histogram] = {}
        group_by = ("resource.label.revision_name",)
        for series in self._list(REQUEST_LATENCIES, query, period, group_by, deadline):
            revision = series.resource.labels.get("revision_name", "")
            for point in series.points:
                histogram = to_histogram(point.value.distribution_value, query.service)
                if histogram is None:
                    continue
                key = (revision, us(point.interval.end_time))
                seen = out.get(key)
                out[key] = histogram if seen is None else _add(seen, histogram, query.service)
        return out

    def _list(
        self,
        metric: str,
        query: _Query,
        period: int,
        group_by: tuple[str, ...],
        deadline: float,
    ) -> Iterator[Any]:
        """Every series of every page, each page retried within the common deadline."""
        from google.cloud import monitoring_v3

        request: dict[str, Any] = {
            "name": f"projects/{query.project}",
            "filter": _filter(metric, query),
            "interval": {
                "start_time": from_us(query.first_end - period),
                "end_time": from_us(query.last_end),
            },
            "aggregation": {
                "alignment_period": {"seconds": period // US, "nanos": period % US * 1000},
                "per_series_aligner": monitoring_v3.Aggregation.Aligner.ALIGN_DELTA,
                "cross_series_reducer": monitoring_v3.Aggregation.Reducer.REDUCE_SUM,
                "group_by_fields": list(group_by),
            },
            "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        }
        token = ""
        while True:
            page = self._page(metric, query.service, {**request, "page_token": token}, deadline)
            yield from page.time_series
            token = page.next_page_token
            if not token:
                return

    def _page(self, metric: str, service: str, request: dict[str, Any], deadline: float) -> Any:
        what = f"Cloud Monitoring {metric} of {service}"
        return self.first_page(self._client.list_time_series, request, what, deadline)


# --------------------------------------------------------------------------- helpers


def _filter(metric: str, query: _Query) -> str:
    revisions = ", ".join(quote(r) for r in query.revisions)
    return " AND ".join(
        (
            f"metric.type = {quote(metric)}",
            f"resource.type = {quote(RESOURCE_TYPE)}",
            f"resource.labels.service_name = {quote(query.service)}",
            f"resource.labels.location = {quote(query.region)}",
            f"resource.labels.revision_name = one_of({revisions})",
        )
    )


def to_histogram(distribution: Any, service: str = "") -> Histogram | None:
    """A ``google.api.Distribution`` as a :class:`Histogram` (bounds from its bucket
    options); None when it carries no bucket counts although it counted requests."""
    options = distribution.bucket_options
    kind = options.WhichOneof("options")
    if kind == "exponential_buckets":
        exp = options.exponential_buckets
        bounds = exponential_bounds(exp.num_finite_buckets, exp.growth_factor, exp.scale)
    elif kind == "linear_buckets":
        lin = options.linear_buckets
        bounds = linear_bounds(lin.num_finite_buckets, lin.width, lin.offset)
    elif kind == "explicit_buckets":
        bounds = tuple(options.explicit_buckets.bounds)
    elif int(distribution.count) == 0:
        return None
    else:
        raise MonitoringError(
            f"Cloud Monitoring {REQUEST_LATENCIES} of {service}: a distribution without "
            "bucket options"
        )
    counts = tuple(int(c) for c in distribution.bucket_counts)
    if not counts and int(distribution.count) > 0:
        return None
    try:
        return Histogram(bounds, counts)
    except ValueError as exc:
        raise MonitoringError(f"Cloud Monitoring {REQUEST_LATENCIES} of {service}: {exc}") from exc


def _add(a: Histogram, b: Histogram, service: str) -> Histogram:
    if a.bounds != b.bounds:
        raise MonitoringError(
            f"Cloud Monitoring {REQUEST_LATENCIES} of {service}: the bucket options "
            "changed within the window"
        )
    pa, pb = a.padded(), b.padded()
    summed = tuple(x + y for x, y in zip(pa, pb, strict=True))
    last = max((i for i, n in enumerate(summed) if n), default=-1)
    return Histogram(a.bounds, summed[: last + 1])


# --------------------------------------------------------------------------- wiring


def create_metric_client(settings: Settings) -> monitoring_v3.MetricServiceClient:
    """The official MetricServiceClient: over an insecure gRPC channel to
    ``canary.monitoring_endpoint`` (``host:port`` of the stand-in) when it is set, with
    Application Default Credentials to the real API otherwise."""
    from google.cloud import monitoring_v3
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )

    endpoint = settings.canary.monitoring_endpoint
    return grpc_client(endpoint, monitoring_v3.MetricServiceClient, MetricServiceGrpcTransport)


def create_monitoring_reader(settings: Settings) -> MonitoringReader:
    config = settings.canary
    return MonitoringReader(
        create_metric_client(settings),
        alignment_s=config.alignment_s,
        visibility_delay_s=config.visibility_delay_s,
        timeout_s=config.api_timeout_s,
    )


def _reader_of(deps: Deps) -> MonitoringReader:
    return create_monitoring_reader(deps.settings)


def monitoring_reader_for(deps: Deps) -> MonitoringReader:
    """The one reader of these deps, built on first use (a gRPC channel is costly)."""
    return deps.service(_reader_of)


__all__ = [
    "REQUEST_COUNT",
    "REQUEST_LATENCIES",
    "MonitoringError",
    "MonitoringReader",
    "MonitoringUnavailable",
    "create_metric_client",
    "create_monitoring_reader",
    "monitoring_reader_for",
    "to_histogram",
]
