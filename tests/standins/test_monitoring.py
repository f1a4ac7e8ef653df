"""The Cloud Monitoring stand-in, driven by the official MetricServiceClient over real gRPC."""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api import metric_pb2
from google.api_core import exceptions
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)

from standins import RunningServer, serve
from standins.monitoring import (
    REQUEST_COUNT,
    REQUEST_LATENCIES,
    GrpcServer,
    MonitoringState,
    create_app,
    serve_grpc,
)

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "sight-local"
REGION = "europe-west1"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)  # the start of every window below
COUNT_FILTER = f'metric.type = "{REQUEST_COUNT}" AND resource.labels.service_name = "sight-api"'
LATENCY_FILTER = (
    f'metric.type = "{REQUEST_LATENCIES}" AND resource.label.service_name = "sight-api"'
)
Aligner = monitoring_v3.Aggregation.Aligner
Reducer = monitoring_v3.Aggregation.Reducer


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(hours=1))


@pytest.fixture
def state(clock: Clock) -> MonitoringState:
    return MonitoringState(clock=clock)


@pytest.fixture
def metric_service(state: MonitoringState) -> Iterator[GrpcServer]:
    with serve_grpc(state) as server:
        yield server


@pytest.fixture
def admin(state: MonitoringState) -> Iterator[RunningServer]:
    with serve(create_app(state)) as server:
        yield server


def metric_client(target: str) -> monitoring_v3.MetricServiceClient:
    """The official client, unmodified: only its channel is an insecure one."""
    channel = grpc.insecure_channel(target)
    return monitoring_v3.MetricServiceClient(transport=MetricServiceGrpcTransport(channel=channel))


@pytest.fixture
def client(metric_service: GrpcServer) -> Iterator[monitoring_v3.MetricServiceClient]:
    client = metric_client(metric_service.target)
    yield client
    client.transport.close()


def record_requests(
    state: MonitoringState,
    revision: str,
    total: int,
    failures: int,
    latencies: list[float] | None = None,
    within: timedelta = timedelta(minutes=5),
    service: str = "sight-api",
) -> None:
    """``total`` requests spread over ``within`` after T0; the first ``failures`` answer 503."""
    for i in range(total):
        at = T0 + within * (i + 0.5) / total
        status = 503 if i < failures else 200
        latency = latencies[i] if latencies is not None else 20.0
        state.record(PROJECT, REGION, service, revision, status, latency, at)


def query(
    client: monitoring_v3.MetricServiceClient,
    filter_: str,
    start: datetime = T0,
    end: datetime = T0 + timedelta(minutes=5),
    aggregation: dict[str, Any] | None = None,
    **extra: Any,
) -> list[monitoring_v3.TimeSeries]:
    request: dict[str, Any] = {
        "name": f"projects/{PROJECT}",
        "filter": filter_,
        "interval": {"start_time": start, "end_time": end},
        "view": monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
        **extra,
    }
    if aggregation is not None:
        request["aggregation"] = aggregation
    return list(client.list_time_series(request=request, retry=None))


def aligned(
    aligner: Any, period_s: int = 300, reducer: Any = Reducer.REDUCE_NONE, group_by: Any = ()
) -> dict[str, Any]:
    return {
        "alignment_period": {"seconds": period_s},
        "per_series_aligner": aligner,
        "cross_series_reducer": reducer,
        "group_by_fields": list(group_by),
    }


def window_sum(group_by: list[str], reducer: Any = Reducer.REDUCE_SUM) -> dict[str, Any]:
    """What the canary asks: one point per series summing the whole (5-minute) window."""
    return aligned(Aligner.ALIGN_DELTA, reducer=reducer, group_by=group_by)


def by_revision_and_class(series: list[monitoring_v3.TimeSeries]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for one in series:
        key = (one.resource.labels["revision_name"], one.metric.labels["response_code_class"])
        out[key] = out.get(key, 0) + sum(p.value.int64_value for p in one.points)
    return out


# ---------------------------------------------------------------------------- counts


def test_request_counts_per_revision_and_response_class_are_exactly_what_was_served(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "sight-api-00001-aaa", total=1000, failures=5)
    record_requests(state, "sight-api-00002-bbb", total=200, failures=10)
    record_requests(state, "other-00001-ccc", total=50, failures=50, service="other")

    series = query(
        client,
        COUNT_FILTER,
        aggregation=window_sum(
            ["resource.label.revision_name", "metric.label.response_code_class"]
        ),
    )

    assert by_revision_and_class(series) == {
        ("sight-api-00001-aaa", "2xx"): 995,
        ("sight-api-00001-aaa", "5xx"): 5,
        ("sight-api-00002-bbb", "2xx"): 190,
        ("sight-api-00002-bbb", "5xx"): 10,
    }
    one = series[0]
    assert len(one.points) == 1  # the whole window in one aligned point
    assert one.metric.type == REQUEST_COUNT
    assert one.resource.type == "cloud_run_revision"
    # a reduced series keeps only the grouped labels (and the project)
    assert set(one.resource.labels) == {"revision_name", "project_id"}
    assert set(one.metric.labels) == {"response_code_class"}
    assert one.metric_kind == metric_pb2.MetricDescriptor.MetricKind.DELTA
    assert one.value_type == metric_pb2.MetricDescriptor.ValueType.INT64
    assert one.points[0].interval.end_time == T0 + timedelta(minutes=5)
    assert one.points[0].interval.start_time == T0


def test_raw_series_carry_cloud_run_labels_and_one_point_per_sample_period_newest_first(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    for second in (1.5, 1.7, 3.2):
        at = T0 + timedelta(seconds=second)
        state.record(PROJECT, REGION, "sight-api", "sight-api-00001-aaa", 404, 5.0, at)

    [series] = query(client, COUNT_FILTER)

    assert dict(series.resource.labels) == {
        "project_id": PROJECT,
        "service_name": "sight-api",
        "revision_name": "sight-api-00001-aaa",
        "location": REGION,
        "configuration_name": "sight-api",
    }
    assert dict(series.metric.labels) == {"response_code": "404", "response_code_class": "4xx"}
    assert series.unit == "1"
    points = [
        (p.interval.start_time, p.interval.end_time, p.value.int64_value) for p in series.points
    ]
    assert points == [
        (T0 + timedelta(seconds=3), T0 + timedelta(seconds=4), 1),
        (T0 + timedelta(seconds=1), T0 + timedelta(seconds=2), 2),
    ]


def test_interval_excludes_its_start_includes_its_end_and_nothing_outside(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    start, end = T0, T0 + timedelta(minutes=1)
    outside = [start - timedelta(seconds=30), start, end + timedelta(milliseconds=1)]
    inside = [start + timedelta(milliseconds=1), start + timedelta(seconds=30), end]
    for at in outside + inside:
        state.record(PROJECT, REGION, "sight-api", "sight-api-00001-aaa", 200, 10.0, at)

    series = query(
        client,
        COUNT_FILTER,
        start=start,
        end=end,
        aggregation=aligned(Aligner.ALIGN_DELTA, period_s=60, reducer=Reducer.REDUCE_SUM),
    )

    assert [p.value.int64_value for s in series for p in s.points] == [len(inside)]


def test_aligned_points_end_at_the_interval_end_step_back_by_the_period_and_skip_empty_periods(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    end = T0 + timedelta(minutes=3)
    for minute, requests in ((0, 4), (2, 7)):  # nothing in the middle minute
        for i in range(requests):
            at = T0 + timedelta(minutes=minute, seconds=10 + i)
            state.record(PROJECT, REGION, "sight-api", "sight-api-00001-aaa", 200, 10.0, at)

    [series] = query(
        client,
        COUNT_FILTER,
        end=end,
        aggregation=aligned(Aligner.ALIGN_SUM, period_s=60),
    )

    assert [(p.interval.end_time, p.value.int64_value) for p in series.points] == [
        (end, 7),
        (end - timedelta(minutes=2), 4),
    ]


def test_align_rate_is_requests_per_second_over_the_alignment_period(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "sight-api-00001-aaa", total=600, failures=0)

    [series] = query(
        client,
        COUNT_FILTER,
        aggregation=aligned(Aligner.ALIGN_RATE, reducer=Reducer.REDUCE_SUM),
    )

    assert series.points[0].value.double_value == pytest.approx(2.0)


# ---------------------------------------------------------------------------- latencies


def bucket_of(value: float, growth: float = 1.4, scale: float = 1.0) -> tuple[float, float]:
    """The exponential bucket [lower, upper) holding ``value`` (the stand-in's default)."""
    i = math.floor(math.log(value / scale, growth))
    return scale * growth**i, scale * growth ** (i + 1)


def test_p95_latency_per_revision_falls_in_the_bucket_of_the_true_p95(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    fast = [float(ms) for ms in range(1, 1001)]  # true p95: 950 ms
    record_requests(state, "sight-api-00001-aaa", 1000, 5, latencies=fast)
    record_requests(state, "sight-api-00002-bbb", 1000, 0, latencies=[ms * 3 for ms in fast])

    series = query(
        client,
        LATENCY_FILTER,
        aggregation=window_sum(["resource.label.revision_name"], Reducer.REDUCE_PERCENTILE_95),
    )

    p95 = {s.resource.labels["revision_name"]: s.points[0].value.double_value for s in series}
    low, high = bucket_of(950.0)
    assert low <= p95["sight-api-00001-aaa"] < high
    low, high = bucket_of(2850.0)
    assert low <= p95["sight-api-00002-bbb"] < high
    assert p95["sight-api-00002-bbb"] > 2 * p95["sight-api-00001-aaa"]


def test_per_series_percentile_aligner_gives_a_double_per_series(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "sight-api-00001-aaa", 100, 0, latencies=[40.0] * 100)

    [series] = query(
        client,
        LATENCY_FILTER,
        aggregation=aligned(Aligner.ALIGN_PERCENTILE_50),
    )

    low, high = bucket_of(40.0)
    assert low <= series.points[0].value.double_value < high
    assert series.unit == "ms"


def test_summed_latency_distribution_has_exact_count_and_mean_and_no_trailing_zero_buckets(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    latencies = [10.0, 20.0, 30.0, 40.0, 1000.0]
    record_requests(state, "sight-api-00001-aaa", 5, 1, latencies=latencies)

    [series] = query(
        client, LATENCY_FILTER, aggregation=window_sum(["resource.label.revision_name"])
    )

    dist = series.points[0].value.distribution_value
    assert dist.count == 5
    assert dist.mean == pytest.approx(220.0)
    assert dist.sum_of_squared_deviation == pytest.approx(sum((x - 220.0) ** 2 for x in latencies))
    assert sum(dist.bucket_counts) == 5
    assert dist.bucket_counts[-1] != 0  # the API omits trailing zero buckets
    assert dist.bucket_options.exponential_buckets.growth_factor == pytest.approx(1.4)


# ---------------------------------------------------------------------------- filters


@pytest.mark.parametrize(
    ("filter_", "revisions"),
    [
        ('resource.labels.revision_name = one_of("rev-a", "rev-c")', {"rev-a", "rev-c"}),
        ('resource.label.revision_name = starts_with("rev-b")', {"rev-b"}),
        ('NOT resource.labels.revision_name = ends_with("-a")', {"rev-b", "rev-c"}),
        ('(resource.labels.revision_name = "rev-a" OR metric.labels.response_code = "503")',
         {"rev-a", "rev-c"}),
        ('metric.label.response_code_class != "5xx"', {"rev-a", "rev-b"}),
        ('resource.labels.revision_name = monitoring.regex.full_match("rev-[ab]")',
         {"rev-a", "rev-b"}),
    ],
)  # fmt: skip
def test_filter_selects_series_by_labels(
    client: monitoring_v3.MetricServiceClient,
    state: MonitoringState,
    filter_: str,
    revisions: set[str],
) -> None:
    record_requests(state, "rev-a", 3, 0)
    record_requests(state, "rev-b", 3, 0)
    record_requests(state, "rev-c", 3, 3)

    series = query(client, f"{COUNT_FILTER} AND {filter_}")

    assert {s.resource.labels["revision_name"] for s in series} == revisions


@pytest.mark.parametrize(
    "filter_",
    [
        f'metric.type == "{REQUEST_COUNT}"',
        'resource.labels.service_name = "sight-api"',  # no metric type
        f'metric.type = "{REQUEST_COUNT}" and resource.type = "cloud_run_revision"',
        f'metric.type = "{REQUEST_COUNT}" AND foo.bar = "x"',
        f'metric.type = "{REQUEST_COUNT}" AND resource.labels.service_name = "sight-api',
        'metric.type = starts_with("run.googleapis.com/")',
        f'metric.type = "{REQUEST_COUNT}" AND metric.type = "{REQUEST_LATENCIES}"',
    ],
)
def test_a_bad_filter_is_refused_with_invalid_argument(
    client: monitoring_v3.MetricServiceClient, filter_: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match="Field filter had an invalid value"):
        query(client, filter_)


def test_an_unknown_metric_type_is_not_found(client: monitoring_v3.MetricServiceClient) -> None:
    with pytest.raises(exceptions.NotFound, match="Cannot find metric"):
        query(client, 'metric.type = "run.googleapis.com/no_such_metric"')


def test_another_project_sees_none_of_the_series(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "rev-a", 3, 0)

    answer = client.list_time_series(
        name="projects/someone-else",
        filter=COUNT_FILTER,
        interval={"start_time": T0, "end_time": T0 + timedelta(minutes=5)},
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
    )

    assert list(answer) == []


# ---------------------------------------------------------------------------- aggregation


@pytest.mark.parametrize(
    ("filter_", "aggregation", "complaint"),
    [
        (LATENCY_FILTER, {"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_RATE"},
         "cannot be applied to metrics with kind DELTA and value type DISTRIBUTION"),
        (COUNT_FILTER, {"alignment_period": {"seconds": 60},
                        "per_series_aligner": "ALIGN_PERCENTILE_95"}, "value type INT64"),
        (COUNT_FILTER, {"cross_series_reducer": "REDUCE_SUM"}, "needs a per-series aligner"),
        (COUNT_FILTER, {"per_series_aligner": "ALIGN_DELTA"}, "alignmentPeriod"),
        (COUNT_FILTER, {"alignment_period": {"seconds": 30}, "per_series_aligner": "ALIGN_DELTA"},
         "at least 60 seconds"),
        (COUNT_FILTER, {"alignment_period": {"seconds": 60}, "per_series_aligner": "ALIGN_DELTA",
                        "cross_series_reducer": "REDUCE_SUM", "group_by_fields": ["revision"]},
         "groupByFields"),
    ],
)  # fmt: skip
def test_an_aggregation_that_does_not_apply_is_refused_with_invalid_argument(
    client: monitoring_v3.MetricServiceClient,
    filter_: str,
    aggregation: dict[str, Any],
    complaint: str,
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=re.escape(complaint)):
        query(client, filter_, aggregation=aggregation)


def test_headers_view_lists_series_without_points(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "rev-a", 10, 2)

    series = query(
        client, COUNT_FILTER, view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.HEADERS
    )

    assert sorted(s.metric.labels["response_code"] for s in series) == ["200", "503"]
    assert all(len(s.points) == 0 for s in series)


def test_points_not_yet_visible_are_left_out_until_the_ingestion_delay_has_passed(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState, clock: Clock
) -> None:
    state.configure(visibility_delay_s=180)
    at = T0 + timedelta(seconds=10)
    state.record(PROJECT, REGION, "sight-api", "rev-a", 200, 10.0, at)

    clock.now = at + timedelta(seconds=60)
    assert query(client, COUNT_FILTER) == []
    clock.now = at + timedelta(seconds=181)
    assert len(query(client, COUNT_FILTER)) == 1


# ---------------------------------------------------------------------------- pagination


def test_a_page_holds_at_most_page_size_points_and_a_series_can_continue_on_the_next(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    for revision in ("rev-a", "rev-b", "rev-c"):
        for second in range(4):
            at = T0 + timedelta(seconds=second * 10 + 5)
            state.record(PROJECT, REGION, "sight-api", revision, 200, 10.0, at)

    pager = client.list_time_series(
        request={
            "name": f"projects/{PROJECT}",
            "filter": COUNT_FILTER,
            "interval": {"start_time": T0, "end_time": T0 + timedelta(minutes=1)},
            "page_size": 5,
        }
    )
    pages = list(pager.pages)

    assert [sum(len(s.points) for s in page.time_series) for page in pages] == [5, 5, 2]
    assert pages[0].next_page_token and not pages[-1].next_page_token
    points: dict[str, list[datetime]] = {}
    for page in pages:
        for series in page.time_series:
            ends = [p.interval.end_time for p in series.points]
            points.setdefault(series.resource.labels["revision_name"], []).extend(ends)
    expected = [T0 + timedelta(seconds=s * 10 + 5) for s in (3, 2, 1, 0)]  # newest first
    assert points == {"rev-a": expected, "rev-b": expected, "rev-c": expected}


def test_a_page_token_of_another_query_is_refused(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "rev-a", 20, 0)
    first = next(
        iter(
            client.list_time_series(
                request={
                    "name": f"projects/{PROJECT}",
                    "filter": COUNT_FILTER,
                    "interval": {"start_time": T0, "end_time": T0 + timedelta(minutes=5)},
                    "page_size": 3,
                }
            ).pages
        )
    )

    with pytest.raises(exceptions.InvalidArgument, match="pageToken"):
        query(client, LATENCY_FILTER, page_token=first.next_page_token)


# ---------------------------------------------------------------------------- faults


def test_an_injected_unavailable_reaches_the_client_as_service_unavailable(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    state.inject_fault(503, count=1, path_regex="ListTimeSeries$")

    with pytest.raises(exceptions.ServiceUnavailable):
        query(client, COUNT_FILTER)

    assert query(client, COUNT_FILTER) == []  # one fault, consumed
    assert [r["status"] for r in state.requests()] == [503, 200]


def test_the_clients_default_retry_rides_over_one_unavailable(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    record_requests(state, "rev-a", 3, 0)
    state.inject_fault(503, count=1)

    answer = client.list_time_series(
        name=f"projects/{PROJECT}",
        filter=COUNT_FILTER,
        interval={"start_time": T0, "end_time": T0 + timedelta(minutes=5)},
        view=monitoring_v3.ListTimeSeriesRequest.TimeSeriesView.FULL,
    )

    assert len(list(answer)) == 1
    assert [r["status"] for r in state.requests()] == [503, 200]


def test_an_injected_quota_error_is_resource_exhausted_with_a_retry_delay(
    client: monitoring_v3.MetricServiceClient, state: MonitoringState
) -> None:
    state.inject_fault(429, count=1, retry_after=7, message="Quota exceeded for ListTimeSeries.")

    with pytest.raises(exceptions.ResourceExhausted, match="Quota exceeded") as caught:
        query(client, COUNT_FILTER)

    [retry_info] = [d for d in caught.value.details if type(d).__name__ == "RetryInfo"]
    assert retry_info.retry_delay.seconds == 7


# ---------------------------------------------------------------------------- admin


def test_requests_recorded_over_http_are_served_over_grpc_until_reset(
    client: monitoring_v3.MetricServiceClient, admin: RunningServer, web: Any
) -> None:
    at = (T0 + timedelta(seconds=30)).isoformat()
    batch = {
        "requests": [
            {"service": "sight-api", "revision": "rev-a", "status_code": 200, "latency_ms": 12,
             "at": at, "project": PROJECT, "location": REGION},
            {"service": "sight-api", "revision": "rev-a", "status_code": 502, "latency_ms": 90,
             "at": at, "project": PROJECT, "location": REGION},
        ]
    }  # fmt: skip

    assert web.json("POST", f"{admin.url}/_admin/record", batch) == (201, {"recorded": 2})
    status, listed = web.json("GET", f"{admin.url}/_admin/series?revision=rev-a")
    assert status == 200
    assert {(s["response_code_class"], s["requests"]) for s in listed["series"]} == {
        ("2xx", 1),
        ("5xx", 1),
    }
    counts = by_revision_and_class(
        query(client, COUNT_FILTER, aggregation=window_sum(["metric.label.response_code_class",
                                                            "resource.label.revision_name"]))
    )  # fmt: skip
    assert counts == {("rev-a", "2xx"): 1, ("rev-a", "5xx"): 1}

    assert web.json("POST", f"{admin.url}/_admin/reset") == (200, {})
    assert query(client, COUNT_FILTER) == []


def test_a_bad_record_is_refused_with_400(admin: RunningServer, web: Any) -> None:
    status, body = web.json(
        "POST", f"{admin.url}/_admin/record", {"service": "s", "revision": "r", "status_code": 42}
    )

    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"


def test_faults_are_injected_through_the_admin_api_too(
    client: monitoring_v3.MetricServiceClient, admin: RunningServer, web: Any
) -> None:
    status, _ = web.json("POST", f"{admin.url}/_admin/faults", {"status": 503, "count": 1})
    assert status == 201

    with pytest.raises(exceptions.ServiceUnavailable):
        query(client, COUNT_FILTER)


# ---------------------------------------------------------------------------- process


def test_python_m_standins_monitoring_serves_admin_and_grpc_and_exits_0_on_sigterm() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins", "monitoring", "--port", "0",
         "--monitoring-grpc-port", "0"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    assert proc.stderr is not None
    lines: list[str] = []
    admin_url = target = None
    deadline = time.monotonic() + 30
    while (admin_url is None or target is None) and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if found := re.search(r"monitoring listening on (http://\S+)", line):
            admin_url = found.group(1)
        if found := re.search(r"monitoring gRPC listening on (\S+)", line):
            target = found.group(1)
    try:
        assert admin_url and target, "".join(lines)
        import urllib.request

        body = (
            b'{"service": "sight-api", "revision": "rev-a", "status_code": 500, '
            b'"project": "sight-local", "at": "2026-03-02T10:00:30Z"}'
        )
        post = urllib.request.Request(
            f"{admin_url}/_admin/record", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=10) as resp:
            assert resp.status == 201
        client = metric_client(target)
        [series] = query(client, COUNT_FILTER)
        assert series.metric.labels["response_code_class"] == "5xx"
        client.transport.close()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(15)
    rest = proc.stderr.read()
    assert code == 0
    assert "POST /google.monitoring.v3.MetricService/ListTimeSeries -> OK" in "".join(lines) + rest


def test_a_series_keeps_only_its_retention_behind_its_newest_sample(clock: Clock) -> None:
    state = MonitoringState(clock=clock, retention_s=60)
    for seconds in (0, 30, 100):
        at = T0 + timedelta(seconds=seconds)
        state.record(PROJECT, REGION, "sight-api", "rev-a", 200, 1.0, at)

    [series] = state.series()

    assert [p["end"] for p in series["points"]] == ["2026-03-02T10:01:40.000000Z"]
    assert series["requests"] == 1
