"""The canary's Cloud Monitoring reader, through the official MetricServiceClient over real
gRPC: against the Monitoring stand-in (series from recorded requests) and against canned
answers in the real API's wire format (tests/fixtures/golden/metric_service)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.api import distribution_pb2
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)
from google.protobuf import json_format

from shared.canary import (
    Histogram,
    Interval,
    MonitoringError,
    MonitoringReader,
    MonitoringUnavailable,
    Sample,
    exponential_bounds,
    linear_bounds,
)
from shared.canary._monitoring import monitoring_reader_for, to_histogram
from shared.errors import PermanentError, TransientError
from shared.runtime import Deps
from shared.settings import CanaryConfig, Settings
from standins.monitoring import GrpcServer, MonitoringState, serve_grpc
from tests.helpers import GOLDEN

PROJECT = "sight-local"
REGION = "europe-west1"
SERVICE = "sight-api"
CANARY = "sight-api-00002-new"
STABLE = "sight-api-00001-old"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
FIXTURES = GOLDEN / "metric_service"
_Request: Any = monitoring_v3.ListTimeSeriesRequest.pb()
_Response: Any = monitoring_v3.ListTimeSeriesResponse.pb()


def client_for(target: str) -> monitoring_v3.MetricServiceClient:
    channel = grpc.insecure_channel(target)
    return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))


@pytest.fixture
def state() -> MonitoringState:
    return MonitoringState(clock=lambda: T0 + timedelta(hours=1))


@pytest.fixture
def client(state: MonitoringState) -> Iterator[monitoring_v3.MetricServiceClient]:
    with serve_grpc(state) as server:
        client = client_for(server.target)
        yield client
        client.transport.close()


def reader(client: monitoring_v3.MetricServiceClient, **options: Any) -> MonitoringReader:
    return MonitoringReader(client, **options)


def served(
    state: MonitoringState, revision: str, minute: int, ok: int, failed: int = 0, ms: float = 20.0
) -> None:
    """``ok`` 200s and ``failed`` 503s served by ``revision`` within minute ``minute``."""
    for i in range(ok + failed):
        at = T0 + timedelta(minutes=minute, seconds=1 + 50 * i / (ok + failed))
        state.record(PROJECT, REGION, SERVICE, revision, 503 if i < failed else 200, ms, at)


def read(r: MonitoringReader, start: datetime = T0, end: datetime | None = None) -> list[Interval]:
    return r.intervals(
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        canary=CANARY,
        stable=STABLE,
        start=start,
        end=end or T0 + timedelta(minutes=3),
    )


def counts(intervals: list[Interval]) -> list[tuple[int, int, int, int]]:
    return [
        (i.canary.requests, i.canary.errors, i.stable.requests, i.stable.errors) for i in intervals
    ]


# ---------------------------------------------------------------------------- the stand-in


def test_intervals_count_each_revisions_requests_and_5xx_per_minute_oldest_first(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    served(state, CANARY, 0, ok=9, failed=1)
    served(state, STABLE, 0, ok=95, failed=1)
    served(state, STABLE, 1, ok=80)  # the canary served nothing in minute 1
    served(state, CANARY, 2, ok=3, failed=4)
    served(state, STABLE, 2, ok=70, failed=2)
    served(state, "sight-api-00000-older", 2, ok=50, failed=50)  # neither revision
    state.record(PROJECT, "us-central1", SERVICE, CANARY, 500, 1.0, T0 + timedelta(seconds=5))

    intervals = read(reader(client))

    assert counts(intervals) == [(10, 1, 96, 1), (0, 0, 80, 0), (7, 4, 72, 2)]
    assert intervals[1].canary == Sample(0, 0)


def test_a_4xx_counts_as_a_request_but_not_as_an_error(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    for status in (200, 404, 429, 502):
        state.record(PROJECT, REGION, SERVICE, CANARY, status, 5.0, T0 + timedelta(seconds=9))

    [first, *_] = read(reader(client))

    assert (first.canary.requests, first.canary.errors) == (4, 1)


def test_latency_histograms_take_their_bounds_from_the_points_bucket_options(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    served(state, CANARY, 0, ok=20, ms=400.0)
    served(state, STABLE, 0, ok=20, ms=40.0)

    [first, second, third] = read(reader(client))

    canary, stable = first.canary.latency, first.stable.latency
    assert canary is not None and stable is not None
    assert canary.bounds == stable.bounds == exponential_bounds(100, 1.4, 1.0)
    assert (canary.total, stable.total) == (20, 20)
    slow = canary.quantile_bound(0.5)
    fast = stable.quantile_bound(0.5)
    assert slow is not None and fast is not None
    assert 400.0 <= slow < 400.0 * 1.4 and 40.0 <= fast < 40.0 * 1.4
    assert second.canary.latency is None and third.stable.latency is None


def test_periods_lie_on_the_alignment_grid_inside_start_and_end_minus_the_visibility_delay(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    for minute in range(6):
        served(state, CANARY, minute, ok=minute + 1)
        served(state, STABLE, minute, ok=10)

    intervals = read(
        reader(client, visibility_delay_s=90),
        start=T0 + timedelta(seconds=20),  # minute 0 began before the step: left out
        end=T0 + timedelta(minutes=5, seconds=40),  # minutes 4 and 5 may still be filling
    )

    assert [i.canary.requests for i in intervals] == [2, 3, 4]
    [request] = [r for r in state.requests() if "request_count" in json.dumps(r)]
    body = request["body"]
    assert body["interval"] == {
        "startTime": "2026-03-02T10:01:00Z",
        "endTime": "2026-03-02T10:04:00Z",
    }


def test_no_whole_period_yet_gives_no_intervals_without_asking_monitoring(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    r = reader(client, visibility_delay_s=30)

    assert read(r, start=T0, end=T0 + timedelta(seconds=80)) == []
    assert state.requests() == []


def test_baseline_is_the_stable_revisions_latencies_summed_over_the_window(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    for minute, ms in ((0, 10.0), (1, 30.0), (2, 3000.0)):
        served(state, STABLE, minute, ok=10, ms=ms)
    served(state, CANARY, 1, ok=10, ms=9000.0)

    baseline = reader(client).baseline(
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        stable=STABLE,
        start=T0,
        end=T0 + timedelta(minutes=2),
    )

    assert baseline is not None
    assert baseline.total == 20  # minute 2 and the canary left out
    assert baseline.quantile_bound(0.95) == pytest.approx(1.4**11)  # 30 ms lies in [28.9, 40.5)


def test_baseline_without_stable_requests_is_none(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    served(state, CANARY, 0, ok=10)

    assert (
        reader(client).baseline(
            project=PROJECT,
            region=REGION,
            service=SERVICE,
            stable=STABLE,
            start=T0,
            end=T0 + timedelta(minutes=2),
        )
        is None
    )


def test_an_alignment_below_the_apis_minimum_is_refused_as_a_permanent_error(
    client: monitoring_v3.MetricServiceClient,
) -> None:
    # the real API's minimum is 60 s; the local stack lowers the stand-in's to 1 s
    with pytest.raises(MonitoringError, match="request_count of sight-api refused") as caught:
        read(reader(client, alignment_s=10))

    assert isinstance(caught.value, PermanentError)
    assert "INVALID_ARGUMENT" in str(caught.value)
    assert "alignmentPeriod" in str(caught.value)


def test_one_second_periods_where_the_stand_in_allows_them(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    state.configure(min_alignment_period_s=1)
    state.record(PROJECT, REGION, SERVICE, CANARY, 200, 5.0, T0 + timedelta(milliseconds=1500))
    state.record(PROJECT, REGION, SERVICE, STABLE, 500, 5.0, T0 + timedelta(milliseconds=2500))

    intervals = read(reader(client, alignment_s=1), end=T0 + timedelta(seconds=3))

    assert counts(intervals) == [(0, 0, 0, 0), (1, 0, 0, 0), (0, 0, 1, 1)]


# ---------------------------------------------------------------------------- faults


def test_an_unavailable_monitoring_is_retried_within_the_timeout(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    served(state, CANARY, 0, ok=5)
    state.inject_fault(503, count=2, path_regex="ListTimeSeries$")

    intervals = read(reader(client, timeout_s=5))

    assert intervals[0].canary.requests == 5
    assert [r["status"] for r in state.requests()] == [503, 503, 200, 200]


def test_permission_denied_is_a_monitoring_error_naming_metric_and_service(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    state.inject_fault(
        403, count=1, message="Permission monitoring.timeSeries.list denied (or it may not exist)."
    )

    with pytest.raises(MonitoringError) as caught:
        read(reader(client))

    message = str(caught.value)
    assert "run.googleapis.com/request_count" in message and "sight-api" in message
    assert "PERMISSION_DENIED" in message
    assert len(state.requests()) == 1  # never retried


def test_a_monitoring_that_stays_unavailable_is_transient_after_the_bounded_retries(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    state.inject_fault(429, count=1000, message="Quota exceeded for ListTimeSeries.")

    began = time.monotonic()
    with pytest.raises(MonitoringUnavailable, match="request_count of sight-api") as caught:
        read(reader(client, timeout_s=0.6))

    assert isinstance(caught.value, TransientError) and caught.value.retryable
    assert time.monotonic() - began < 2.0
    assert 2 <= len(state.requests()) < 20


# ---------------------------------------------------------------------------- canned answers


class Canned:
    """A MetricService answering ListTimeSeries from a queue of responses (the real API's
    JSON, as saved in the golden fixtures), recording each request."""

    def __init__(self, answer: Callable[[Any], Any]) -> None:
        self.answer = answer
        self.requests: list[Any] = []
        self._lock = threading.Lock()

    def handler(self) -> Any:
        def handle(req: Any, _context: Any) -> Any:
            with self._lock:
                self.requests.append(req)
            return self.answer(req)

        return grpc.method_handlers_generic_handler(
            "google.monitoring.v3.MetricService",
            {
                "ListTimeSeries": grpc.unary_unary_rpc_method_handler(
                    handle,
                    request_deserializer=_Request.FromString,
                    response_serializer=_Response.SerializeToString,
                )
            },
        )


@pytest.fixture
def canned() -> Iterator[Callable[[Callable[[Any], Any]], tuple[Canned, MonitoringReader]]]:
    from concurrent import futures

    servers: list[Any] = []
    clients: list[monitoring_v3.MetricServiceClient] = []

    def start(answer: Callable[[Any], Any]) -> tuple[Canned, MonitoringReader]:
        fake = Canned(answer)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        server.add_generic_rpc_handlers((fake.handler(),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        clients.append(client_for(GrpcServer(server, "127.0.0.1", port).target))
        return fake, MonitoringReader(clients[-1])

    yield start
    for one in clients:
        one.transport.close()
    for server in servers:
        server.stop(0).wait()


def golden(name: str) -> Any:
    response = _Response()
    json_format.Parse((FIXTURES / f"{name}.json").read_text(), response)
    return response


def test_the_real_apis_answers_become_intervals_and_explicit_bucket_histograms(
    canned: Callable[[Callable[[Any], Any]], tuple[Canned, MonitoringReader]],
) -> None:
    _fake, r = canned(
        lambda req: golden(
            "list_time_series_request_count"
            if "request_count" in req.filter
            else "list_time_series_request_latencies"
        )
    )

    intervals = read(r)

    assert counts(intervals) == [(12, 0, 190, 0), (0, 0, 175, 0), (20, 1, 184, 1)]
    bounds = (0.0, 50.0, 100.0, 250.0, 500.0, 1000.0)
    assert intervals[2].canary.latency == Histogram(bounds, (0, 5, 6, 6, 2, 0, 1))
    assert intervals[0].stable.latency == Histogram(bounds, (0, 140, 45, 5))
    assert intervals[1].canary.latency is None


def test_the_query_names_one_service_region_and_the_two_revisions_and_sums_per_minute(
    canned: Callable[[Callable[[Any], Any]], tuple[Canned, MonitoringReader]],
) -> None:
    fake, r = canned(lambda _req: _Response())

    read(r)

    count, latency = (json_format.MessageToDict(req) for req in fake.requests)
    assert count == {
        "name": "projects/sight-local",
        "filter": 'metric.type = "run.googleapis.com/request_count" AND '
        'resource.type = "cloud_run_revision" AND resource.labels.service_name = "sight-api" '
        'AND resource.labels.location = "europe-west1" AND '
        'resource.labels.revision_name = one_of("sight-api-00002-new", "sight-api-00001-old")',
        "interval": {"startTime": "2026-03-02T10:00:00Z", "endTime": "2026-03-02T10:03:00Z"},
        "aggregation": {
            "alignmentPeriod": "60s",
            "perSeriesAligner": "ALIGN_DELTA",
            "crossSeriesReducer": "REDUCE_SUM",
            "groupByFields": ["resource.label.revision_name", "metric.label.response_code_class"],
        },
    }
    assert latency["filter"].startswith('metric.type = "run.googleapis.com/request_latencies"')
    assert latency["aggregation"]["groupByFields"] == ["resource.label.revision_name"]


def test_every_page_is_read_with_the_same_query(
    canned: Callable[[Callable[[Any], Any]], tuple[Canned, MonitoringReader]],
) -> None:
    whole = golden("list_time_series_request_count")

    def paged(req: Any) -> Any:
        if "request_latencies" in req.filter:
            return _Response()
        index = int(req.page_token or "0")
        page = _Response(unit="1", next_page_token=str(index + 2) if index + 2 < 5 else "")
        page.time_series.extend(whole.time_series[index : index + 2])
        return page

    fake, r = canned(paged)

    intervals = read(r)

    assert counts(intervals) == [(12, 0, 190, 0), (0, 0, 175, 0), (20, 1, 184, 1)]
    tokens = [req.page_token for req in fake.requests if "request_count" in req.filter]
    assert tokens == ["", "2", "4"]
    filters = {req.filter for req in fake.requests if "request_count" in req.filter}
    assert len(filters) == 1


def test_the_stand_ins_answer_to_the_readers_query_has_the_real_apis_shape(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    served(state, CANARY, 0, ok=3, failed=1)
    served(state, STABLE, 0, ok=3)
    saved = json.loads((FIXTURES / "list_time_series_request_count.json").read_text())

    answer = client.list_time_series(
        request={
            "name": f"projects/{PROJECT}",
            "filter": f'metric.type = "run.googleapis.com/request_count" '
            f'AND resource.labels.service_name = "{SERVICE}"',
            "interval": {"start_time": T0, "end_time": T0 + timedelta(minutes=3)},
            "aggregation": {
                "alignment_period": {"seconds": 60},
                "per_series_aligner": "ALIGN_DELTA",
                "cross_series_reducer": "REDUCE_SUM",
                "group_by_fields": [
                    "resource.label.revision_name",
                    "metric.label.response_code_class",
                ],
            },
        }
    )
    got = json_format.MessageToDict(next(iter(answer.pages))._pb)

    assert shape(got["timeSeries"][0]) == shape(saved["timeSeries"][0])


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return type(value).__name__


# ---------------------------------------------------------------------------- bucket options


@pytest.mark.parametrize(
    ("options", "bounds"),
    [
        (
            {"exponential_buckets": {"num_finite_buckets": 3, "growth_factor": 2, "scale": 10}},
            exponential_bounds(3, 2.0, 10.0),
        ),
        (
            {"linear_buckets": {"num_finite_buckets": 4, "width": 25, "offset": 0}},
            linear_bounds(4, 25.0, 0.0),
        ),
        ({"explicit_buckets": {"bounds": [5, 50, 500]}}, (5.0, 50.0, 500.0)),
    ],
)
def test_each_kind_of_bucket_options_gives_monitorings_boundaries(
    options: dict[str, Any], bounds: tuple[float, ...]
) -> None:
    dist = json_format.ParseDict(
        {"count": 3, "bucket_options": options, "bucket_counts": [0, 2, 1]},
        distribution_pb2.Distribution(),
        ignore_unknown_fields=False,
    )

    assert to_histogram(dist) == Histogram(bounds, (0, 2, 1))


def test_a_distribution_without_bucket_counts_has_no_histogram() -> None:
    dist = distribution_pb2.Distribution(count=4, mean=12.0)
    dist.bucket_options.explicit_buckets.bounds.extend([10, 20])

    assert to_histogram(dist) is None


# ---------------------------------------------------------------------------- wiring


def test_the_reader_of_a_deps_talks_to_the_configured_endpoint_with_its_settings(
    state: MonitoringState,
) -> None:
    served(state, CANARY, 0, ok=4, failed=1)
    with serve_grpc(state) as server:
        config = CanaryConfig(
            monitoring_endpoint=server.target, alignment_s=60, visibility_delay_s=0, api_timeout_s=3
        )
        deps = Deps(Settings(canary=config))
        try:
            r = monitoring_reader_for(deps)

            assert monitoring_reader_for(deps) is r  # one per Deps
            assert (r.alignment_s, r.visibility_delay_s, r.timeout_s) == (60, 0, 3)
            first = read(r)[0].canary
            assert (first.requests, first.errors) == (5, 1)
        finally:
            deps.close()
