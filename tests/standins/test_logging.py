"""The Cloud Logging stand-in, driven by the official GAPIC LoggingServiceV2Client over real
gRPC: Cloud Run's request entries, the filter subset, paging, order, sample(), faults,
bounded memory and the golden shape of an entry."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.api_core import exceptions
from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
from google.cloud.logging_v2.services.logging_service_v2.transports import (
    LoggingServiceV2GrpcTransport,
)
from google.cloud.logging_v2.types import LogEntry
from google.logging.type.log_severity_pb2 import LogSeverity
from google.protobuf import json_format

from standins import RunningServer, serve
from standins.logging import (
    GrpcServer,
    LoggingState,
    create_app,
    request_log_name,
    sample_hash,
    serve_grpc,
)

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "fixtures" / "golden" / "logging" / "cloud_run_request_entry.json"
PROJECT = "sight-local"
REGION = "europe-west1"
SERVICE = "sight-api"
OLD, NEW = "sight-api-00001-old", "sight-api-00002-new"
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
LOG_NAME = "projects/sight-local/logs/run.googleapis.com%2Frequests"
#: fields of a real request entry the router cannot tell the stand-in (the client's
#: address and agent, sizes, the trace, the instance)
NOT_RECORDED = {
    "httpRequest.requestSize",
    "httpRequest.responseSize",
    "httpRequest.userAgent",
    "httpRequest.remoteIp",
    "httpRequest.serverIp",
    "labels",
    "trace",
    "spanId",
    "traceSampled",
}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock(T0 + timedelta(hours=1))


@pytest.fixture
def state(clock: Clock) -> LoggingState:
    return LoggingState(clock=clock, seed=3)


@pytest.fixture
def server(state: LoggingState) -> Iterator[GrpcServer]:
    with serve_grpc(state) as running:
        yield running


def logging_client(target: str) -> LoggingServiceV2Client:
    """The official client, unmodified: only its channel is an insecure one."""
    channel = grpc.insecure_channel(target)
    return LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))


@pytest.fixture
def client(server: GrpcServer) -> Iterator[LoggingServiceV2Client]:
    one = logging_client(server.target)
    yield one
    one.transport.close()


@pytest.fixture
def admin(state: LoggingState) -> Iterator[RunningServer]:
    with serve(create_app(state)) as running:
        yield running


def served(
    state: LoggingState,
    revision: str,
    count: int,
    *,
    failed: int = 0,
    at: datetime = T0,
    every: timedelta = timedelta(seconds=1),
    ms: float = 20.0,
    service: str = SERVICE,
) -> None:
    """``count`` requests of ``revision`` from ``at`` on, one per ``every``; the first
    ``failed`` answer 503."""
    for i in range(count):
        status = 503 if i < failed else 200
        state.record(PROJECT, REGION, service, revision, status, ms, at + every * i)


def listed(client: LoggingServiceV2Client, filter_: str = "", **request: Any) -> list[LogEntry]:
    """Every entry of every page (the client's pager follows the tokens)."""
    request.setdefault("resource_names", [f"projects/{PROJECT}"])
    return list(client.list_log_entries(request={"filter": filter_, **request}, retry=None))


def statuses(entries: list[LogEntry]) -> list[int]:
    return [e.http_request.status for e in entries]


# ---------------------------------------------------------------------------- entries


def test_a_served_request_is_cloud_runs_request_entry_through_the_official_client(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    state.record(PROJECT, REGION, SERVICE, NEW, 503, 12.5, T0 + timedelta(milliseconds=250))

    [entry] = listed(client)

    assert entry.log_name == LOG_NAME == request_log_name(PROJECT)
    assert entry.resource.type == "cloud_run_revision"
    assert dict(entry.resource.labels) == {
        "project_id": PROJECT,
        "service_name": SERVICE,
        "revision_name": NEW,
        "location": REGION,
        "configuration_name": SERVICE,
    }
    assert entry.http_request.status == 503
    assert entry.http_request.latency.ToTimedelta() == timedelta(microseconds=12_500)
    assert entry.http_request.request_method == "GET"
    assert entry.http_request.request_url == f"https://{SERVICE}-123456789012.{REGION}.run.app/"
    assert LogSeverity.Name(entry.severity) == "ERROR"
    assert entry.timestamp == T0 + timedelta(milliseconds=250)
    assert entry.receive_timestamp == T0 + timedelta(hours=1)  # received "now"
    assert re.fullmatch(r"[0-9a-f]{24}", entry.insert_id)


def test_severity_is_info_below_400_warning_for_a_4xx_and_error_for_a_5xx(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    for i, status in enumerate((200, 302, 404, 500)):
        state.record(PROJECT, REGION, SERVICE, NEW, status, 1.0, T0 + timedelta(seconds=i))

    entries = listed(client)

    assert [LogSeverity.Name(e.severity) for e in entries] == ["INFO", "INFO", "WARNING", "ERROR"]
    assert len({e.insert_id for e in entries}) == 4


def test_an_entry_without_latency_has_no_latency_field(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    state.record(PROJECT, REGION, SERVICE, NEW, 504, None, T0)

    [entry] = listed(client)

    assert "latency" not in LogEntry.to_dict(entry)["http_request"]
    assert "latency" not in json_format.MessageToDict(LogEntry.pb(entry))["httpRequest"]


# ---------------------------------------------------------------------------- filters


def test_the_filter_selects_by_resource_labels_log_name_status_and_time(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, OLD, 10, failed=2)  # T0 .. T0+9s
    served(state, NEW, 5, failed=1, at=T0 + timedelta(seconds=3))  # T0+3 .. T0+7
    served(state, NEW, 3, service="other-api")
    state.record(PROJECT, "us-central1", SERVICE, NEW, 200, 1.0, T0)
    state.record("another-project", REGION, SERVICE, NEW, 200, 1.0, T0)

    def count(filter_: str) -> int:
        return len(listed(client, filter_))

    assert count("") == 19  # the other project's entry is not in projects/sight-local
    assert count(f'logName="{LOG_NAME}" AND resource.type="cloud_run_revision"') == 19
    assert count(f'resource.labels.service_name="{SERVICE}"') == 16
    assert (
        count(f'resource.labels.revision_name="{NEW}" AND resource.labels.location="{REGION}"') == 8
    )
    assert count("httpRequest.status>=500") == 3
    assert count("httpRequest.status=503 AND resource.labels.revision_name!=" + f'"{OLD}"') == 1
    assert count('timestamp>"2026-03-02T10:00:03Z" AND timestamp<="2026-03-02T10:00:05Z"') == 4
    assert (
        count(
            'timestamp>="2026-03-02T10:00:03.000000001Z" AND timestamp<"2026-03-02T10:00:04+00:00"'
        )
        == 0
    )
    assert count("severity>=WARNING") == 3
    assert count("resource.labels.no_such_label=x") == 0


def test_or_binds_tighter_than_and_as_in_the_logging_query_language(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, OLD, 4, failed=1)
    served(state, NEW, 4, failed=3)
    new, old = f'resource.labels.revision_name="{NEW}"', f'resource.labels.revision_name="{OLD}"'

    # (new OR old) AND 5xx: 4 errors; the other reading, new OR (old AND 5xx), would be 5
    assert len(listed(client, f"{new} OR {old} AND httpRequest.status=503")) == 4
    assert len(listed(client, f"{new} OR ({old} AND httpRequest.status=503)")) == 5
    assert len(listed(client, f"NOT {new} httpRequest.status=200")) == 3  # side by side: AND
    assert len(listed(client, f"NOT ({new} OR httpRequest.status=503)")) == 3


def test_string_comparisons_ignore_case_and_colon_means_has(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, NEW, 2)
    served(state, OLD, 1)

    assert len(listed(client, f'resource.labels.revision_name="{NEW.upper()}"')) == 2
    assert len(listed(client, 'resource.labels.revision_name:"00002"')) == 2
    assert len(listed(client, "resource.type=CLOUD_RUN_REVISION")) == 3  # unquoted value


@pytest.mark.parametrize(
    ("filter_", "problem"),
    [
        ('jsonPayload.message="x"', "does not serve the field 'jsonPayload.message'"),
        ("httpRequest.status=", "expected a value"),
        ("(httpRequest.status=200", "expected )"),
        ('timestamp>"yesterday"', "not an RFC 3339 time"),
        ('timestamp>"2026-03-02T10:00:00"', "no time zone"),
        ("httpRequest.status=ok", "whole number"),
        ("httpRequest.status:200", "cannot take ':'"),
        ("severity>=LOUD", "not a severity"),
        ("sample(insertId, 1.5)", "fraction in [0, 1]"),
        ("sample(jsonPayload, 0.5)", "unknown field"),
        ("httpRequest.status=200 OR", "expected word"),
        ("httpRequest.status=200 ]", "unexpected character"),
    ],
)
def test_a_filter_the_stand_in_cannot_read_is_invalid_argument_naming_the_problem(
    client: LoggingServiceV2Client, filter_: str, problem: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument) as caught:
        listed(client, filter_)

    assert problem in caught.value.message
    assert filter_ in caught.value.message


# ---------------------------------------------------------------------------- sample()


def test_sample_keeps_about_the_fraction_and_the_same_entries_every_time(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, OLD, 10_000, every=timedelta(milliseconds=10))

    third = {e.insert_id for e in listed(client, "sample(insertId, 0.3)", page_size=1000)}
    again = {e.insert_id for e in listed(client, "sample(insertId, 0.3)", page_size=1000)}
    half = {e.insert_id for e in listed(client, "sample(insertId, 0.5)", page_size=1000)}

    assert 2700 <= len(third) <= 3300
    assert again == third  # deterministic per insertId
    assert third < half  # a smaller fraction keeps a subset
    assert all(sample_hash(i) < 0.3 for i in third)
    assert len(listed(client, "sample(insertId, 0)")) == 0


# ---------------------------------------------------------------------------- paging, order


def test_entries_come_oldest_first_unless_ordered_timestamp_desc(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    for second, status in ((5, 201), (1, 202), (3, 203)):  # recorded out of order
        state.record(PROJECT, REGION, SERVICE, NEW, status, 1.0, T0 + timedelta(seconds=second))

    assert statuses(listed(client)) == [202, 203, 201]
    assert statuses(listed(client, order_by="timestamp asc")) == [202, 203, 201]
    assert statuses(listed(client, order_by="timestamp desc")) == [201, 203, 202]


def test_pages_hold_page_size_entries_and_the_tokens_lead_to_the_last(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, NEW, 60)
    served(state, OLD, 7, at=T0 + timedelta(minutes=5))

    default = client.list_log_entries(request={"resource_names": [f"projects/{PROJECT}"]})
    sizes = [len(page.entries) for page in default.pages]
    pager = client.list_log_entries(
        request={
            "resource_names": [f"projects/{PROJECT}"],
            "filter": f'resource.labels.revision_name="{OLD}"',
            "order_by": "timestamp desc",
            "page_size": 3,
        }
    )
    pages = list(pager.pages)

    assert sizes == [50, 17]  # 50 by default
    assert [len(p.entries) for p in pages] == [3, 3, 1]
    assert [bool(p.next_page_token) for p in pages] == [True, True, False]
    seen = [e.timestamp for p in pages for e in p.entries]
    assert seen == sorted(seen, reverse=True) and len(set(seen)) == 7


def test_a_page_token_is_good_only_for_its_own_query(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, NEW, 5)
    first = next(
        iter(
            client.list_log_entries(
                request={"resource_names": [f"projects/{PROJECT}"], "page_size": 2}
            ).pages
        )
    )

    with pytest.raises(exceptions.InvalidArgument, match="not a page token of this query"):
        client.list_log_entries(
            request={
                "resource_names": [f"projects/{PROJECT}"],
                "filter": "httpRequest.status=200",
                "page_size": 2,
                "page_token": first.next_page_token,
            },
            retry=None,
        )


@pytest.mark.parametrize(
    ("request_", "problem"),
    [
        ({"page_size": 1001}, "pageSize"),
        ({"page_size": -1}, "pageSize"),
        ({"order_by": "severity desc"}, "orderBy"),
        ({"resource_names": []}, "resourceNames"),
        ({"resource_names": ["organizations/123"]}, "resourceNames"),
        ({"page_token": "bm90LWEtdG9rZW4"}, "pageToken"),  # pragma: allowlist secret
    ],
)
def test_page_sizes_orders_names_and_tokens_the_api_refuses_are_invalid_argument(
    client: LoggingServiceV2Client, request_: dict[str, Any], problem: str
) -> None:
    with pytest.raises(exceptions.InvalidArgument, match=problem):
        listed(client, **request_)


def test_a_log_view_reads_its_projects_entries(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    served(state, NEW, 2)
    view = f"projects/{PROJECT}/locations/global/buckets/_Default/views/canary-requests"

    assert len(listed(client, resource_names=[view])) == 2


# ---------------------------------------------------------------------------- faults, limits


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (503, exceptions.ServiceUnavailable),
        (429, exceptions.ResourceExhausted),
        (403, exceptions.PermissionDenied),
    ],
)
def test_injected_faults_answer_their_grpc_code_for_the_next_calls_only(
    client: LoggingServiceV2Client, state: LoggingState, status: int, error: type[Exception]
) -> None:
    served(state, NEW, 1)
    state.inject_fault(status, count=2, path_regex="ListLogEntries$", message="Injected fault")

    for _ in range(2):
        with pytest.raises(error, match="Injected fault"):
            listed(client)
    assert len(listed(client)) == 1
    assert [r["status"] for r in state.requests()] == [status, status, 200]
    assert state.requests()[0]["path"] == "/google.logging.v2.LoggingServiceV2/ListLogEntries"


def test_faults_are_injected_through_the_admin_api_too(
    client: LoggingServiceV2Client, admin: RunningServer, web: Any
) -> None:
    status, _ = web.json("POST", f"{admin.url}/_admin/faults", {"status": 503, "count": 1})
    assert status == 201

    with pytest.raises(exceptions.ServiceUnavailable):
        listed(client)
    assert listed(client) == []


def test_past_the_read_quota_a_call_is_resource_exhausted_until_the_minute_has_passed(
    client: LoggingServiceV2Client, state: LoggingState, clock: Clock
) -> None:
    state.configure(list_quota_per_minute=3)

    for _ in range(3):
        listed(client)
    with pytest.raises(exceptions.ResourceExhausted, match="Read requests per minute"):
        listed(client)
    clock.now += timedelta(seconds=61)

    assert listed(client) == []


def test_memory_is_bounded_by_dropping_the_oldest_entries(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    state.configure(max_entries=100)

    served(state, NEW, 150)
    state.record(PROJECT, REGION, SERVICE, OLD, 200, 1.0, T0 - timedelta(days=1))  # older yet

    kept = listed(client, page_size=1000)
    assert len(kept) == 100 and state.dropped == 51
    assert kept[0].timestamp == T0 + timedelta(seconds=50)  # 0 .. 49 and the old one dropped


def test_entries_received_within_the_visibility_delay_are_not_listed_yet(
    client: LoggingServiceV2Client, state: LoggingState, clock: Clock
) -> None:
    state.configure(visibility_delay_s=5)
    served(state, NEW, 2)
    clock.now += timedelta(seconds=4)

    assert listed(client) == []
    clock.now += timedelta(seconds=1)
    assert len(listed(client)) == 2


def test_other_methods_are_unimplemented(client: LoggingServiceV2Client) -> None:
    with pytest.raises(exceptions.MethodNotImplemented):
        client.list_logs(request={"parent": f"projects/{PROJECT}"}, retry=None)


# ---------------------------------------------------------------------------- golden shape


def shape(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: shape(item) for key, item in sorted(value.items())}
    return type(value).__name__


def without(entry: dict[str, Any], paths: set[str]) -> dict[str, Any]:
    out = {k: v for k, v in entry.items() if k not in paths}
    for key, value in out.items():
        if isinstance(value, dict):
            inner = {p.split(".", 1)[1] for p in paths if p.startswith(f"{key}.")}
            out[key] = {k: v for k, v in value.items() if k not in inner}
    return out


def test_the_golden_entry_is_a_real_log_entry_and_the_stand_ins_has_its_shape(
    client: LoggingServiceV2Client, state: LoggingState
) -> None:
    saved = json.loads(GOLDEN.read_text())
    strict = LogEntry.pb()()
    json_format.Parse(GOLDEN.read_text(), strict, ignore_unknown_fields=False)
    state.record(PROJECT, REGION, SERVICE, NEW, 503, 12.4, T0)

    [entry] = listed(client)
    got = json_format.MessageToDict(LogEntry.pb(entry))

    assert strict.http_request.status == 503
    assert shape(got) == shape(without(saved, NOT_RECORDED))
    assert json.loads(LogEntry.to_json(entry))["httpRequest"]["latency"] == "0.012400s"


# ---------------------------------------------------------------------------- admin


def test_the_admin_api_records_lists_configures_and_resets(
    client: LoggingServiceV2Client, admin: RunningServer, web: Any, state: LoggingState
) -> None:
    status, body = web.json(
        "POST",
        f"{admin.url}/_admin/record",
        {"requests": [
            {"service": SERVICE, "revision": NEW, "status_code": 500, "latency_ms": 3,
             "at": "2026-03-02T10:00:01Z"},
            {"service": SERVICE, "revision": OLD, "status_code": 200},
        ]},
    )  # fmt: skip
    assert (status, body) == (201, {"recorded": 2})
    _, found = web.json("GET", f"{admin.url}/_admin/entries?revision={NEW}")
    [entry] = found["entries"]
    assert (entry["httpRequest"]["status"], entry["timestamp"]) == (500, "2026-03-02T10:00:01Z")

    status, config = web.json("POST", f"{admin.url}/_admin/config", {"max_entries": 1})
    assert status == 200 and (config["entries"], config["dropped"]) == (1, 1)
    assert web.json("POST", f"{admin.url}/_admin/config", {"max_entries": 0})[0] == 400
    assert web.json("POST", f"{admin.url}/_admin/record", {"service": SERVICE})[0] == 400
    web.json("POST", f"{admin.url}/_admin/reset")
    assert listed(client) == [] and state.dropped == 0
