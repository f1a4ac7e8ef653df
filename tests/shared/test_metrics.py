"""The metrics seam; the Cloud Monitoring backend is checked against a local gRPC
MetricService so the official client runs unmodified over the real wire protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from google.api import metric_pb2
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)
from google.protobuf import empty_pb2

from shared.metrics import METRIC_PREFIX, CloudMonitoringMetrics, LogMetrics


class FakeMetricService:
    def __init__(self) -> None:
        self.requests: list[monitoring_v3.CreateTimeSeriesRequest] = []
        self.lock = threading.Lock()

    def create_time_series(self, request: Any, _context: Any) -> empty_pb2.Empty:
        with self.lock:
            self.requests.append(request)
        return empty_pb2.Empty()


@pytest.fixture
def metric_service() -> Iterator[tuple[FakeMetricService, str]]:
    fake = FakeMetricService()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler(
        "google.monitoring.v3.MetricService",
        {
            "CreateTimeSeries": grpc.unary_unary_rpc_method_handler(
                fake.create_time_series,
                request_deserializer=monitoring_v3.CreateTimeSeriesRequest.deserialize,
                response_serializer=empty_pb2.Empty.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(None)


def client_for(address: str) -> monitoring_v3.MetricServiceClient:
    transport = MetricServiceGrpcTransport(channel=grpc.insecure_channel(address))
    return monitoring_v3.MetricServiceClient(transport=transport)


def test_counters_and_timings_aggregate_by_tags() -> None:
    m = LogMetrics()
    m.incr("events", consumer="a", outcome="handled")
    m.incr("events", consumer="a", outcome="handled")
    m.incr("events", consumer="a", outcome="retry")
    m.timing("handler_ms", 10, consumer="a")
    m.timing("handler_ms", 30, consumer="a")
    assert m.counter("events", consumer="a", outcome="handled") == 2
    assert m.counter("events", outcome="retry", consumer="a") == 1
    timings = m.snapshot()["timings"]
    assert timings[("handler_ms", (("consumer", "a"),))] == (2, 40)


def test_cloud_monitoring_backend_writes_cumulative_custom_metrics_in_one_batch(
    metric_service: tuple[FakeMetricService, str],
) -> None:
    fake, address = metric_service
    m = CloudMonitoringMetrics(
        "sight-prod", flush_interval_s=3600, client_factory=lambda: client_for(address)
    )
    m.incr("events", consumer="notify", outcome="handled")
    m.incr("events", consumer="notify", outcome="handled")
    m.timing("handler_ms", 12.5, consumer="notify")
    assert m.flush() == 3
    m.close()
    request = fake.requests[0]
    assert request.name == "projects/sight-prod"
    by_type = {ts.metric.type: ts for ts in request.time_series}
    events = by_type[METRIC_PREFIX + "events"]
    assert dict(events.metric.labels) == {"consumer": "notify", "outcome": "handled"}
    assert events.points[0].value.double_value == 2
    assert events.metric_kind == metric_pb2.MetricDescriptor.MetricKind.CUMULATIVE
    assert by_type[METRIC_PREFIX + "handler_ms_sum_ms"].points[0].value.double_value == 12.5


def test_unreachable_monitoring_never_breaks_the_caller() -> None:
    m = CloudMonitoringMetrics(
        "p", flush_interval_s=3600, client_factory=lambda: client_for("127.0.0.1:1")
    )
    m.incr("events", consumer="x")
    assert m.flush() == 0
