"""The Cloud Run, Sight API and Cloud Monitoring stand-ins in this process, wired as
``python -m standins all`` wires them: the Cloud Run stand-in serves revisions by
forwarding to the Sight API stand-in and records every answer into the Monitoring
stand-in, read back over real gRPC with the official client (docs/standins.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.cloud import monitoring_v3
from google.cloud.monitoring_v3.services.metric_service.transports import (
    MetricServiceGrpcTransport,
)

from shared.canary import MonitoringReader
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from standins import monitoring as monitoring_standin
from standins import sightapi as sightapi_standin

PROJECT, REGION = "sight-local", "europe-west1"


@dataclass
class LocalCloud:
    cloudrun: cloudrun_standin.CloudRunState
    sight: sightapi_standin.SightApiState
    monitoring: monitoring_standin.MonitoringState
    cloudrun_server: RunningServer
    sight_server: RunningServer
    metric_service: monitoring_standin.GrpcServer
    _clients: list[monitoring_v3.MetricServiceClient] = field(default_factory=list)

    def service_uri(self, service: str, tag: str = "") -> str:
        svc = self.cloudrun.get_service(PROJECT, REGION, service)
        if not tag:
            return str(svc["uri"])
        [status] = [t for t in svc["trafficStatuses"] if t.get("tag") == tag]
        return str(status["uri"])

    def metric_client(self) -> monitoring_v3.MetricServiceClient:
        """The official client over an insecure channel to the Monitoring stand-in."""
        channel = grpc.insecure_channel(self.metric_service.target)
        client = monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=channel)
        )
        self._clients.append(client)
        return client

    def reader(self, **options: Any) -> MonitoringReader:
        """A canary MonitoringReader of this cloud (1 s periods unless told)."""
        options.setdefault("alignment_s", 1)
        return MonitoringReader(self.metric_client(), **options)


@contextmanager
def local_cloud(
    *, route_seed: int = 11, sight_seed: int = 5, min_alignment_period_s: float = 1.0
) -> Iterator[LocalCloud]:
    sight = sightapi_standin.SightApiState(seed=sight_seed)
    monitoring = monitoring_standin.MonitoringState(min_alignment_period_s=min_alignment_period_s)
    cloudrun = cloudrun_standin.CloudRunState(seed=7, route_seed=route_seed, monitoring=monitoring)
    with ExitStack() as stack:
        sight_server = stack.enter_context(serve(sightapi_standin.create_app(sight)))
        cloudrun_server = stack.enter_context(serve(cloudrun_standin.create_app(cloudrun)))
        metric_service = stack.enter_context(monitoring_standin.serve_grpc(monitoring))
        cloudrun.configure(serve_base=cloudrun_server.url, upstream=sight_server.url)
        cloud = LocalCloud(
            cloudrun, sight, monitoring, cloudrun_server, sight_server, metric_service
        )
        try:
            yield cloud
        finally:
            for client in cloud._clients:
                client.transport.close()
