"""Fixtures for the canary function: the Cloud Run stand-in in-process, the Cloud
Monitoring stand-in over real gRPC (its series recorded at chosen times), a private
ops-events topic on the emulator to read what the function publishes, real PostgreSQL,
and a clock the test moves. Every test uses its own service name, so rows in ops.* and
Monitoring series never leak between tests."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from statistics import NormalDist
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.events import CanaryRequest, CanaryTick, EventType, OpsEvent
from shared.pubsub import Publisher
from shared.release import release_id
from shared.runtime import Deps, set_process_deps
from shared.settings import CanaryConfig, CanaryPlan, Settings, Topics
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from standins.logging import LoggingState
from standins.logging import serve_grpc as serve_logging
from standins.monitoring import GrpcServer, MonitoringState, serve_grpc
from tests.functions.rollback.conftest import (
    Published,
    breaking_migration,
    published,
    pubsub_clients,
    shared_publisher,
)
from tests.helpers import PROJECT, ROOT, envelope, push

# rollback's fixtures, used here too
__all__ = ["breaking_migration", "published", "pubsub_clients", "shared_publisher"]

SOURCE = ROOT / "functions" / "canary" / "main.py"
REGION = "europe-west1"
ALIGNMENT = timedelta(seconds=60)


class Clock:
    """The function's clock (``Deps.clock``): real time until a test sets ``now``."""

    def __init__(self) -> None:
        self.now: datetime | None = None

    def __call__(self) -> datetime:
        return self.now or datetime.now(UTC)


@pytest.fixture(scope="session")
def monitoring() -> Iterator[tuple[MonitoringState, GrpcServer]]:
    """One Monitoring stand-in for the session: series are per service, tests never share."""
    state = MonitoringState()
    with serve_grpc(state) as server:
        yield state, server


@pytest.fixture(scope="session")
def request_logs() -> Iterator[tuple[LoggingState, GrpcServer]]:
    """One Cloud Logging stand-in for the session: entries are per service."""
    state = LoggingState()
    with serve_logging(state) as server:
        yield state, server


@pytest.fixture
def cloudrun() -> Iterator[tuple[cloudrun_standin.CloudRunState, RunningServer]]:
    state = cloudrun_standin.CloudRunState(seed=14)
    with serve(cloudrun_standin.create_app(state)) as running:
        yield state, running


def latencies(n: int, median_ms: float = 80.0) -> list[float]:
    """``n`` latencies spread like a lognormal (sigma 0.5), deterministic."""
    normal = NormalDist()
    return [median_ms * math.exp(0.5 * normal.inv_cdf((i + 0.5) / n)) for i in range(n)]


@dataclass
class Env:
    """One test's world: the function app, its deps, the stand-ins and what was published."""

    client: Any
    deps: Deps
    cloudrun: cloudrun_standin.CloudRunState
    monitoring: MonitoringState
    logs: LoggingState
    published: Published
    service: str
    clock: Clock
    stable: str = ""
    canary: str = ""
    commit: str = ""
    #: the time the canary was requested: on the Monitoring grid, ten minutes ago
    t0: datetime = datetime(2000, 1, 1, tzinfo=UTC)
    #: ``configure(dry_run=, lock_wait_s=, publisher=, **plan)``: this test's settings
    configure: Any = None

    @property
    def release(self) -> str:
        return release_id(self.service, self.commit)

    # ---------------------------------------------------------------- Cloud Run

    def deploy(self) -> None:
        """A stable revision serving 100 % and a tagged candidate with no traffic."""
        self.stable, self.canary = f"{self.service}-00001-sta", f"{self.service}-00002-can"
        created = self.t0 - timedelta(days=1)
        self.cloudrun.create_service(
            PROJECT, REGION, self.service, "img:v1", revision=self.stable, create_time=created
        )
        self.cloudrun.create_revision(
            PROJECT,
            REGION,
            self.service,
            image="img:v2",
            revision=self.canary,
            create_time=self.t0 - timedelta(minutes=1),
            no_traffic=True,
            tag="candidate",
        )

    def serving(self) -> dict[str, int]:
        svc = self.cloudrun.get_service(PROJECT, REGION, self.service)
        out: dict[str, int] = {}
        for item in svc.get("trafficStatuses", []):
            if item.get("percent"):
                name = item.get("revision", "")
                out[name] = out.get(name, 0) + int(item["percent"])
        return out

    def pin(self, revision: str) -> None:
        """A human's traffic change, straight into Cloud Run."""
        self.cloudrun.set_traffic(
            PROJECT,
            REGION,
            self.service,
            [{"type": "REVISION", "revision": revision, "percent": 100}],
        )

    def patches(self) -> int:
        return self.cloudrun.patch_count(PROJECT, REGION, self.service)

    # ---------------------------------------------------------------- Monitoring

    def traffic(
        self,
        minutes: range,
        *,
        stable: tuple[int, int] = (400, 4),
        canary: tuple[int, int] = (400, 4),
        canary_latency_ms: float = 80.0,
    ) -> None:
        """Requests per minute after ``t0`` (``(requests, 5xx)`` per revision), recorded
        in the middle of each aligned minute, as Cloud Run's router would."""
        for minute in minutes:
            at = self.t0 + ALIGNMENT * minute + timedelta(seconds=30)
            for revision, (count, errors), median in (
                (self.stable, stable, 80.0),
                (self.canary, canary, canary_latency_ms),
            ):
                for i, latency in enumerate(latencies(count, median)):
                    status = 503 if i < errors else 200
                    self.monitoring.record(
                        PROJECT, REGION, self.service, revision, status, latency, at=at
                    )

    # ---------------------------------------------------------------- request logs

    def log_requests(
        self,
        periods: range,
        *,
        stable: tuple[int, int] = (80, 1),
        canary: tuple[int, int] = (20, 0),
        period_s: int = 10,
    ) -> None:
        """Cloud Run's request log entries per ``period_s`` after ``t0`` (``(requests,
        5xx)`` per revision), stamped in the middle of each period."""
        for k in periods:
            at = self.t0 + timedelta(seconds=period_s * k + period_s / 2)
            for revision, (count, errors) in ((self.stable, stable), (self.canary, canary)):
                for i, latency in enumerate(latencies(count)):
                    status = 503 if i < errors else 200
                    self.logs.record(
                        PROJECT, REGION, self.service, revision, status, latency, at=at
                    )

    # ---------------------------------------------------------------- events

    def request(self) -> Any:
        """``sight.ops.canary.requested`` pushed to the function, as of ``t0``."""
        self.clock.now = self.t0
        payload = CanaryRequest(
            service=self.service,
            region=REGION,
            project=PROJECT,
            release_id=self.release,
            revision=self.canary,
            stable_revision=self.stable,
            tag_url=f"https://candidate---{self.service}-x.a.run.app",
            commit_sha=self.commit,
            build_id=str(uuid.uuid4()),
            requested_at=self.t0,
        )
        event = OpsEvent.new(
            EventType.CANARY_REQUESTED, payload, source="sightops-deploy", clock=self.clock
        )
        return self.deliver(event.to_pubsub())

    def tick_message(self, after: timedelta, service: str | None = None) -> tuple[bytes, Any]:
        """A tick as of ``t0 + after`` (the clock moves there), for this test's service
        (the session's database holds other tests' canaries)."""
        self.clock.now = self.t0 + after
        event = OpsEvent.new(
            EventType.CANARY_TICK,
            CanaryTick(service=service or self.service),
            source="cloud-scheduler",
            clock=self.clock,
        )
        return event.to_pubsub()

    def tick(self, after: timedelta, service: str | None = None) -> Any:
        return self.deliver(self.tick_message(after, service))

    def deliver(self, message: tuple[bytes, Any]) -> Any:
        return self.deliver_raw(envelope(*message))

    def deliver_raw(self, body: dict[str, Any]) -> Any:
        """A raw push body (one that is not our own event's shape)."""
        response = push(self.client, "ops-events", body)
        assert response.status_code == 200, response.get_data(as_text=True)
        return response

    # ---------------------------------------------------------------- database

    def row(self) -> dict[str, Any]:
        with self.deps.engine.connect() as conn:
            row = conn.execute(
                text("SELECT * FROM ops.canaries WHERE release_id = :r"), {"r": self.release}
            ).one()
        return dict(row._mapping)

    def actions(self, *kinds: str) -> list[dict[str, Any]]:
        with self.deps.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT kind, status, actor, release_id, trace_id, detail FROM ops.actions"
                    " WHERE service = :s AND kind = ANY(CAST(:k AS text[])) ORDER BY id"
                ),
                {"s": self.service, "k": list(kinds) or ["canary"]},
            ).all()
        return [dict(row._mapping) for row in rows]

    def health(self) -> dict[str, str]:
        with self.deps.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT revision, health FROM ops.revisions WHERE service = :s"),
                {"s": self.service},
            ).all()
        return {row.revision: row.health for row in rows}

    def events(self, count: int) -> list[tuple[EventType, Any]]:
        return [(e.type, e.data) for e in self.published.wait(count)]


@pytest.fixture
def env(
    settings: Settings,
    deps: Deps,
    cloudrun: tuple[cloudrun_standin.CloudRunState, RunningServer],
    monitoring: tuple[MonitoringState, GrpcServer],
    request_logs: tuple[LoggingState, GrpcServer],
    published: Published,
    shared_publisher: Publisher,
) -> Iterator[Env]:
    """The canary function, its service on the default plan (5 -> 25 -> 50 -> 100) until
    the test calls :meth:`Env.configure`."""
    run_state, run_server = cloudrun
    mon_state, mon_server = monitoring
    log_state, log_server = request_logs
    service = f"svc-{uuid.uuid4().hex[:8]}"
    clock = Clock()

    def configure(
        *,
        dry_run: bool = False,
        lock_wait_s: float = 30.0,
        publisher: Publisher | None = None,
        logs_steps: int = 0,
        logs_alignment_s: int = 10,
        **plan: Any,
    ) -> Deps:
        """This test's canary settings (``plan``: the service's steps, max_step_s) and,
        optionally, another publisher (one that cannot reach Pub/Sub). Every step is read
        from Monitoring unless ``logs_steps`` says otherwise (tests/functions/canary/
        test_canary_logs.py reads the first from the request logs)."""
        configured = settings.model_copy(
            update={
                "cloud_run_endpoint": run_server.url,
                "topics": Topics(ops_events=published.topic),  # type: ignore[attr-defined]
                "canary": CanaryConfig(
                    services={service: CanaryPlan(**plan)},
                    alignment_s=60,
                    visibility_delay_s=0,
                    baseline_s=0,
                    monitoring_endpoint=mon_server.target,
                    operation_timeout_s=10.0,
                    dry_run=dry_run,
                    lock_wait_s=lock_wait_s,
                    logs_steps=logs_steps,
                    logs_alignment_s=logs_alignment_s,
                    logs_visibility_delay_s=0,
                    logging_endpoint=log_server.target,
                ),
            }
        )
        d = Deps(
            configured,
            clock=clock,
            metrics=deps.metrics,
            engine=deps.engine,
            publisher=publisher or shared_publisher,
        )
        set_process_deps(d)
        world.deps = d
        return d

    app = functions_framework.create_app(
        target="canary", source=str(SOURCE), signature_type="cloudevent"
    )
    grid = int(ALIGNMENT.total_seconds())
    now = int(datetime.now(UTC).timestamp()) // grid * grid
    world = Env(
        app.test_client(),
        deps,
        run_state,
        mon_state,
        log_state,
        published,
        service,
        clock,
        commit=uuid.uuid4().hex + uuid.uuid4().hex[:8],
        t0=datetime.fromtimestamp(now, UTC) - timedelta(minutes=10),
    )
    world.configure = configure
    configure()
    world.deploy()
    yield world
    set_process_deps(deps)
