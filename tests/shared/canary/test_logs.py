"""The canary's Cloud Logging reader, through the official GAPIC LoggingServiceV2Client over
real gRPC against the Logging stand-in (request entries recorded at chosen times), and
with the Cloud Run stand-in's router feeding Monitoring and Logging at once."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import pytest
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)

from shared.canary import (
    Histogram,
    Interval,
    LogsError,
    LogsReader,
    LogsUnavailable,
    Sample,
    exponential_bounds,
    logs_reader_for,
)
from shared.errors import PermanentError, TransientError
from shared.runtime import Deps
from shared.settings import CanaryConfig, Settings
from standins import cloudrun as cloudrun_standin
from standins.logging import GrpcServer, LoggingState, serve_grpc
from standins.traffic import Traffic
from tests.helpers import ROOT
from tests.standins.local_cloud import LocalCloud, local_cloud

PROJECT = "sight-local"
REGION = "europe-west1"
SERVICE = "sight-api"
CANARY = "sight-api-00002-new"
STABLE = "sight-api-00001-old"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
NOW = T0 + timedelta(hours=1)


def client_for(target: str) -> LoggingServiceV2Client:
    channel = grpc.insecure_channel(target)
    return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))


@pytest.fixture
def state() -> LoggingState:
    return LoggingState(clock=lambda: NOW, seed=11)


@pytest.fixture
def server(state: LoggingState) -> Iterator[GrpcServer]:
    with serve_grpc(state) as running:
        yield running


@pytest.fixture
def client(server: GrpcServer) -> Iterator[LoggingServiceV2Client]:
    one = client_for(server.target)
    yield one
    one.transport.close()


def reader(client: LoggingServiceV2Client, **options: Any) -> LogsReader:
    options.setdefault("visibility_delay_s", 0)
    return LogsReader(client, **options)


def served(
    state: LoggingState,
    revision: str,
    period: int,
    ok: int,
    failed: int = 0,
    ms: float | None = 20.0,
    revision_region: str = REGION,
) -> None:
    """``ok`` 200s and ``failed`` 503s served by ``revision`` within the 10 s period
    ``(T0 + 10 * period, T0 + 10 * (period + 1)]``."""
    total = ok + failed
    for i in range(total):
        at = T0 + timedelta(seconds=10 * period + 0.5 + 9 * i / total)
        state.record(
            PROJECT, revision_region, SERVICE, revision, 503 if i < failed else 200, ms, at
        )


def read(
    r: LogsReader,
    start: datetime = T0,
    end: datetime = T0 + timedelta(seconds=30),
    **options: Any,
) -> list[Interval]:
    return r.intervals(
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        canary=options.pop("canary", CANARY),
        stable=STABLE,
        start=start,
        end=end,
        **options,
    )


def counts(intervals: list[Interval]) -> list[tuple[int, int, int, int]]:
    return [
        (i.canary.requests, i.canary.errors, i.stable.requests, i.stable.errors) for i in intervals
    ]


def filters(state: LoggingState) -> list[str]:
    return [str(r["body"].get("filter", "")) for r in state.requests()]


# ---------------------------------------------------------------------------- counting


def test_reader_counts_each_revisions_requests_and_5xx_per_10s_period_oldest_first(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=9, failed=1)
    served(state, STABLE, 0, ok=95, failed=1)
    served(state, STABLE, 1, ok=80)  # the canary served nothing in period 1
    served(state, CANARY, 2, ok=3, failed=4)
    served(state, STABLE, 2, ok=70, failed=2)
    served(state, "sight-api-00000-older", 2, ok=50, failed=50)  # neither revision
    served(state, CANARY, 1, ok=5, failed=5, revision_region="us-central1")  # another region

    intervals = read(reader(client))

    assert counts(intervals) == [(10, 1, 96, 1), (0, 0, 80, 0), (7, 4, 72, 2)]
    assert intervals[1].canary == Sample(0, 0)


def test_a_4xx_counts_as_a_request_but_not_as_an_error(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    for status in (200, 404, 429, 502):
        state.record(PROJECT, REGION, SERVICE, CANARY, status, 5.0, T0 + timedelta(seconds=9))

    [first, *_] = read(reader(client))

    assert (first.canary.requests, first.canary.errors) == (4, 1)


def test_latencies_fill_the_monitoring_stand_ins_exponential_buckets(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=20, ms=400.0)
    served(state, STABLE, 0, ok=20, ms=40.0)
    served(state, STABLE, 0, ok=5, ms=None)  # entries without latency: requests only

    [first, second, _third] = read(reader(client))

    canary, stable = first.canary.latency, first.stable.latency
    assert canary is not None and stable is not None
    assert canary.bounds == stable.bounds == exponential_bounds(100, 1.4, 1.0)
    assert (first.stable.requests, canary.total, stable.total) == (25, 20, 20)
    slow, fast = canary.quantile_bound(0.5), stable.quantile_bound(0.5)
    assert slow is not None and fast is not None
    assert 400.0 < slow <= 400.0 * 1.4 and 40.0 < fast <= 40.0 * 1.4
    assert len(canary.counts) == 19  # 400 ms lies in bucket 18: no trailing empty buckets
    assert second.canary.latency is None and second.stable.latency is None


def test_given_bounds_replace_the_readers_own(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=3, ms=150.0)
    served(state, CANARY, 0, ok=1, ms=5000.0)

    [first, *_] = read(reader(client), bounds=(100.0, 200.0, 1000.0))

    assert first.canary.latency == Histogram((100.0, 200.0, 1000.0), (0, 3, 0, 1))


def test_periods_lie_on_the_10s_grid_inside_start_and_end_minus_the_visibility_delay(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    for period in range(6):
        served(state, CANARY, period, ok=period + 1)
        served(state, STABLE, period, ok=10)

    intervals = read(
        reader(client, visibility_delay_s=10),
        start=T0 + timedelta(seconds=3),  # period 0 began before the step: left out
        end=T0 + timedelta(seconds=58),  # 10:00:48 is the newest visible: periods 4, 5 wait
    )

    assert [i.canary.requests for i in intervals] == [2, 3, 4]
    [query] = filters(state)
    assert query.endswith('timestamp>"2026-03-02T10:00:10Z" AND timestamp<="2026-03-02T10:00:40Z"')


def test_no_whole_period_yet_gives_no_intervals_without_asking_logging(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    r = reader(client, visibility_delay_s=10)

    assert read(r, start=T0, end=T0 + timedelta(seconds=19)) == []
    assert state.requests() == []


def test_the_query_is_one_filter_on_the_service_region_and_both_revisions_oldest_first(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    read(reader(client))

    [request] = state.requests()
    assert request["body"] == {
        "resourceNames": ["projects/sight-local"],
        "filter": 'resource.type="cloud_run_revision" AND '
        'logName="projects/sight-local/logs/run.googleapis.com%2Frequests" AND '
        'resource.labels.service_name="sight-api" AND '
        'resource.labels.location="europe-west1" AND '
        '(resource.labels.revision_name="sight-api-00002-new" OR '
        'resource.labels.revision_name="sight-api-00001-old") AND '
        'timestamp>"2026-03-02T10:00:00Z" AND timestamp<="2026-03-02T10:00:30Z"',
        "orderBy": "timestamp asc",
        "pageSize": 1000,
    }


def test_a_log_view_is_read_instead_of_the_project(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    view = f"projects/{PROJECT}/locations/europe-west1/buckets/canary/views/requests"
    served(state, CANARY, 0, ok=2)

    intervals = read(reader(client, view=view))

    assert intervals[0].canary.requests == 2
    assert state.requests()[0]["body"]["resourceNames"] == [view]


# ---------------------------------------------------------------------------- sampling


def test_a_stable_fraction_samples_the_stables_entries_and_keeps_its_error_rate(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=90, failed=10)
    served(state, STABLE, 0, ok=1800, failed=200)

    [first, *_] = read(reader(client), stable_fraction=0.25)

    assert (first.canary.requests, first.canary.errors) == (100, 10)  # the canary whole
    assert 425 <= first.stable.requests <= 575  # about 500
    assert 0.06 <= first.stable.errors / first.stable.requests <= 0.14  # about 10 %
    [query] = filters(state)
    assert (
        '(resource.labels.revision_name="sight-api-00002-new" OR '
        '(resource.labels.revision_name="sight-api-00001-old" AND sample(insertId, 0.25)))'
    ) in query


def test_the_same_fraction_reads_the_same_stable_entries_every_time(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, STABLE, 0, ok=300, failed=30)

    once = read(reader(client), stable_fraction=0.1)
    again = read(reader(client), stable_fraction=0.1)

    assert counts(once) == counts(again) and 0 < once[0].stable.requests < 330


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_a_stable_fraction_outside_0_to_1_is_a_value_error(
    client: LoggingServiceV2Client, fraction: float
) -> None:
    with pytest.raises(ValueError, match="stable_fraction"):
        read(reader(client), stable_fraction=fraction)


# ---------------------------------------------------------------------------- incremental reads


def test_a_later_call_reads_only_the_periods_after_those_already_read(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    r = reader(client)
    served(state, CANARY, 0, ok=4)
    served(state, STABLE, 1, ok=6)
    first = read(r, end=T0 + timedelta(seconds=20))
    served(state, CANARY, 2, ok=3, failed=1)
    served(state, STABLE, 3, ok=8)

    second = read(r, end=T0 + timedelta(seconds=40))
    third = read(r, end=T0 + timedelta(seconds=40))

    assert counts(first) == [(4, 0, 0, 0), (0, 0, 6, 0)]
    assert counts(second) == [(4, 0, 0, 0), (0, 0, 6, 0), (4, 1, 0, 0), (0, 0, 8, 0)]
    assert third == second
    assert len(state.requests()) == 2  # the third call asked nothing
    assert filters(state)[1].endswith(
        'timestamp>"2026-03-02T10:00:20Z" AND timestamp<="2026-03-02T10:00:40Z"'
    )


def test_a_new_reader_reads_the_step_from_its_start_and_a_later_start_reuses_the_cache(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    cached = reader(client)
    read(cached)  # periods 0..2 read
    served(state, CANARY, 1, ok=5)  # arrived after the read: the cache trusts the delay

    assert [i.canary.requests for i in read(cached)] == [0, 0, 0]
    assert [i.canary.requests for i in read(reader(client))] == [0, 5, 0]  # a cache miss
    later = read(cached, start=T0 + timedelta(seconds=10))
    assert [i.canary.requests for i in later] == [0, 0]  # periods before start never come
    assert len(state.requests()) == 2
    earlier = read(cached, start=T0 - timedelta(seconds=10))  # not cached: from the start
    assert [i.canary.requests for i in earlier] == [0, 0, 5, 0]
    assert len(state.requests()) == 3


def test_the_cache_keeps_the_most_recently_used_queries(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    r = reader(client, cache_size=2)

    for canary in ("rev-a", "rev-b", "rev-a", "rev-c", "rev-a", "rev-b"):
        read(r, canary=canary)

    # a, b, (a cached), c evicts b, (a cached), b again
    assert len(state.requests()) == 4


def test_every_page_is_followed_with_the_same_query(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=4, failed=1)
    served(state, STABLE, 1, ok=5)

    intervals = read(reader(client, page_size=3))

    assert counts(intervals) == [(5, 1, 0, 0), (0, 0, 5, 0), (0, 0, 0, 0)]
    calls = state.requests()
    assert len(calls) == 4 and len({c["body"]["filter"] for c in calls}) == 1
    assert [bool(c["body"].get("pageToken")) for c in calls] == [False, True, True, True]


# ---------------------------------------------------------------------------- faults


def test_an_unavailable_logging_is_retried_within_the_timeout(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, CANARY, 0, ok=5)
    state.inject_fault(503, count=2, path_regex="ListLogEntries$")

    intervals = read(reader(client, timeout_s=5))

    assert intervals[0].canary.requests == 5
    assert [r["status"] for r in state.requests()] == [503, 503, 200]


def test_a_logging_that_stays_throttled_is_logs_unavailable_after_the_bounded_retries(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    state.configure(list_quota_per_minute=1)
    read(reader(client))  # the minute's one call

    began = time.monotonic()
    with pytest.raises(LogsUnavailable, match="request logs of sight-api") as caught:
        read(reader(client, timeout_s=0.6))

    assert isinstance(caught.value, TransientError) and caught.value.retryable
    assert "RESOURCE_EXHAUSTED" in str(caught.value)
    assert time.monotonic() - began < 2.0
    assert 2 <= len(state.requests()) - 1 < 20


def test_permission_denied_is_a_logs_error_naming_the_service_and_never_retried(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    state.inject_fault(403, message="Permission logging.views.access denied on resource.")

    with pytest.raises(LogsError) as caught:
        read(reader(client))

    message = str(caught.value)
    assert isinstance(caught.value, PermanentError)
    assert "sight-api" in message and "PERMISSION_DENIED" in message
    assert "logging.views.access" in message
    assert len(state.requests()) == 1


def test_a_query_the_api_refuses_is_a_logs_error(client: LoggingServiceV2Client) -> None:
    with pytest.raises(LogsError, match="INVALID_ARGUMENT") as caught:
        read(reader(client, view="folders/1"))  # the stand-in serves projects and views

    assert "resourceNames" in str(caught.value)


def test_a_revision_name_with_quotes_and_backslashes_is_escaped_in_the_filter(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    odd = 'rev "quoted" \\ back'
    served(state, odd, 0, ok=2, failed=1)
    served(state, "rev ", 0, ok=7)  # a prefix of it: must not match

    [first, *_] = read(reader(client), canary=odd)

    assert (first.canary.requests, first.canary.errors) == (3, 1)
    assert 'resource.labels.revision_name="rev \\"quoted\\" \\\\ back"' in filters(state)[0]


# ---------------------------------------------------------------------------- wiring


def test_the_reader_of_a_deps_talks_to_the_configured_endpoint_with_its_settings(
    state: LoggingState, server: GrpcServer
) -> None:
    served(state, CANARY, 0, ok=4, failed=1)
    config = CanaryConfig(
        logging_endpoint=server.target,
        logs_alignment_s=10,
        logs_visibility_delay_s=0,
        api_timeout_s=3,
    )
    deps = Deps(Settings(canary=config))
    try:
        r = logs_reader_for(deps)

        assert logs_reader_for(deps) is r  # one per Deps, and one cache
        assert (r.alignment_s, r.visibility_delay_s, r.timeout_s) == (10, 0, 3)
        first = read(r)[0].canary
        assert (first.requests, first.errors) == (5, 1)
    finally:
        deps.close()


def test_importing_the_reader_loads_no_logging_client() -> None:
    probe = (
        "import sys, shared.canary._logs\n"
        "print([m for m in sys.modules if m.startswith(('google.cloud.logging', 'grpc'))])"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )

    assert out.stdout.strip() == "[]"


# ---------------------------------------------------------------------------- with Cloud Run


@pytest.fixture
def cloud() -> Iterator[tuple[LocalCloud, LoggingState, GrpcServer]]:
    """tests/standins/local_cloud.py's stand-ins, the router recording into Monitoring and
    Logging both, as ``python -m standins all`` wires them."""
    logs = LoggingState()
    with local_cloud() as cloud, serve_grpc(logs) as logging_server:
        cloud.cloudrun.record_to(cloudrun_standin.Recorders(cloud.monitoring, logs))
        cloud.cloudrun.create_service(PROJECT, REGION, SERVICE, "repo/api:v1", revision=STABLE)
        cloud.cloudrun.create_revision(
            PROJECT, REGION, SERVICE, image="repo/api:v2", revision=CANARY, no_traffic=True
        )
        yield cloud, logs, logging_server


def test_requests_routed_by_cloud_run_reach_monitoring_and_logging_and_the_readers_agree(
    cloud: tuple[LocalCloud, LoggingState, GrpcServer],
) -> None:
    local, logs, logging_server = cloud
    local.cloudrun.set_traffic(
        PROJECT,
        REGION,
        SERVICE,
        [
            {"type": "REVISION", "revision": STABLE, "percent": 50},
            {"type": "REVISION", "revision": CANARY, "percent": 50},
        ],
    )
    local.sight.set_image("repo/api:v2", error_rate=0.2)
    began = datetime.now(UTC).replace(microsecond=0)

    Traffic(local.service_uri(SERVICE), 50, seed=3).run(1.5)

    end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))
    client = client_for(logging_server.target)
    try:
        from_logs = read(LogsReader(client, alignment_s=1, visibility_delay_s=0), began, end)
    finally:
        client.transport.close()
    from_metrics = local.reader().intervals(
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        canary=CANARY,
        stable=STABLE,
        start=began,
        end=end,
    )

    def totals(intervals: list[Interval]) -> dict[str, tuple[int, int, tuple[int, ...]]]:
        out: dict[str, tuple[int, int, tuple[int, ...]]] = {}
        for name in ("canary", "stable"):
            samples = [getattr(i, name) for i in intervals]
            buckets = [s.latency.padded() for s in samples if s.latency is not None]
            out[name] = (
                sum(s.requests for s in samples),
                sum(s.errors for s in samples),
                tuple(map(sum, zip(*buckets, strict=True))),
            )
        return out

    # (each stand-in stamps a request with its own clock, microseconds apart: the totals
    # agree exactly, a request at a second's edge may fall in neighbouring periods)
    assert totals(from_logs) == totals(from_metrics)
    canary, stable = totals(from_logs)["canary"], totals(from_logs)["stable"]
    assert canary[0] + stable[0] == 75 and canary[1] > 0 and stable[1] == 0
    assert len(logs.entries()) == 75
