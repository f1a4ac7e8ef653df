"""Fixtures for rollback: the Cloud Run stand-in in-process, a private ops-events topic on
the emulator to read what the function publishes, and the function app configured per
test. Every test uses its own service name, so rows in ops.* never leak between tests."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.events import (
    EventType,
    OpsEvent,
    OpsPayload,
    RollbackResult,
    SmokeCheck,
    SmokeResult,
    parse_ops_message,
)
from shared.pubsub import Publisher
from shared.runtime import Deps, set_process_deps
from shared.settings import RollbackConfig, Settings, Topics
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from tests.helpers import GOLDEN, PROJECT, ROOT

SOURCE = ROOT / "functions" / "rollback" / "main.py"
REGION = "europe-west1"


@pytest.fixture(scope="session")
def pubsub_clients() -> tuple[Any, Any]:
    os.environ["PUBSUB_EMULATOR_HOST"] = f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


class Published:
    """What the function published to its (private) ops-events topic."""

    def __init__(self, subscriber: Any, subscription: str) -> None:
        self._subscriber = subscriber
        self._subscription = subscription
        self.seen: list[OpsEvent[OpsPayload]] = []

    def _pull(self) -> None:
        response = self._subscriber.pull(
            request={"subscription": self._subscription, "max_messages": 100}, timeout=5
        )
        if response.received_messages:
            self._subscriber.acknowledge(
                request={
                    "subscription": self._subscription,
                    "ack_ids": [m.ack_id for m in response.received_messages],
                }
            )
        for received in response.received_messages:
            msg = received.message
            self.seen.append(parse_ops_message(msg.data, dict(msg.attributes)))

    def wait(self, count: int, timeout_s: float = 15.0) -> list[OpsEvent[OpsPayload]]:
        """At least ``count`` events (all seen so far), or an AssertionError."""
        deadline = time.monotonic() + timeout_s
        while len(self.seen) < count and time.monotonic() < deadline:
            self._pull()
        assert len(self.seen) >= count, f"expected {count} events, got {self.seen}"
        return list(self.seen)

    def one(self) -> tuple[EventType, RollbackResult]:
        [event] = self.wait(1)
        return event.type, event.data_as(RollbackResult)


@pytest.fixture
def published(pubsub_clients: tuple[Any, Any]) -> Published:
    publisher, subscriber = pubsub_clients
    topic = f"ops-events-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    subscription = ensure_subscription(subscriber, PROJECT, f"{topic}-pull", topic)
    published = Published(subscriber, subscription)
    published.topic = topic  # type: ignore[attr-defined]
    return published


class ShiftedClock:
    """The stand-in's clock, shiftable into the past: a deploy that happened ten minutes
    ago also changed the service (its ``updateTime``) ten minutes ago."""

    def __init__(self) -> None:
        self.shift = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.shift


@pytest.fixture
def cloudrun_clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def cloudrun(
    cloudrun_clock: ShiftedClock,
) -> Iterator[tuple[cloudrun_standin.CloudRunState, RunningServer]]:
    state = cloudrun_standin.CloudRunState(seed=11, clock=cloudrun_clock)
    with serve(cloudrun_standin.create_app(state)) as running:
        yield state, running


@pytest.fixture(scope="session")
def shared_publisher(settings: Settings) -> Iterator[Publisher]:
    publisher = Publisher(settings)
    yield publisher
    publisher.close()


@dataclass
class Env:
    """One test's world: the function app, its deps, the stand-in and what was published."""

    client: Any
    deps: Deps
    cloudrun: cloudrun_standin.CloudRunState
    server: RunningServer
    published: Published
    service: str
    configure: Callable[..., Deps]
    clock: ShiftedClock

    # ---------------------------------------------------------------- Cloud Run

    def deploy(self, count: int = 3, *, newest_age: timedelta = timedelta(minutes=10)) -> list[str]:
        """``count`` Ready revisions a day apart (newest ``newest_age`` ago), each promoted
        to 100 % LATEST in turn, plus a ``stable`` tag on the first. Oldest first. The
        service was last changed by that deploy, ``newest_age`` ago."""
        self.clock.shift = -newest_age
        try:
            return self._deploy(count, newest_age)
        finally:
            self.clock.shift = timedelta(0)

    def _deploy(self, count: int, newest_age: timedelta) -> list[str]:
        now = datetime.now(UTC)
        first_at = now - newest_age - timedelta(days=count - 1)
        names = [f"{self.service}-{i:05d}-r{i}" for i in range(1, count + 1)]
        self.cloudrun.create_service(
            PROJECT, REGION, self.service, "img:v1", revision=names[0], create_time=first_at
        )
        for i, name in enumerate(names[1:], start=2):
            self.cloudrun.create_revision(
                PROJECT,
                REGION,
                self.service,
                image=f"img:v{i}",
                revision=name,
                create_time=first_at + timedelta(days=i - 1),
                promote=True,
                tag="stable" if i == 2 else None,
            )
        return names

    def serving(self) -> dict[str, int]:
        svc = self.cloudrun.get_service(PROJECT, REGION, self.service)
        latest = svc.get("latestReadyRevision", "").rsplit("/", 1)[-1]
        out: dict[str, int] = {}
        for item in svc.get("trafficStatuses", []):
            name = item.get("revision") or latest
            if item.get("percent"):
                out[name] = out.get(name, 0) + int(item["percent"])
        return out

    def pin(self, revision: str) -> None:
        self.cloudrun.set_traffic(
            PROJECT,
            REGION,
            self.service,
            [{"type": "REVISION", "revision": revision, "percent": 100}],
        )

    def patches(self) -> int:
        return self.cloudrun.patch_count(PROJECT, REGION, self.service)

    # ---------------------------------------------------------------- database

    def seed_health(self, **health: str) -> None:
        """Set ops.revisions rows directly (``name=good|bad``), as if learned earlier."""
        with self.deps.engine.begin() as conn:
            for revision, value in health.items():
                conn.execute(
                    text(
                        "INSERT INTO ops.revisions (service, revision, health, health_reason)"
                        " VALUES (:s, :r, :h, 'seeded by the test')"
                        " ON CONFLICT (service, revision) DO UPDATE SET health = EXCLUDED.health"
                    ),
                    {"s": self.service, "r": revision, "h": value},
                )

    def health(self) -> dict[str, str]:
        with self.deps.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT revision, health FROM ops.revisions WHERE service = :s"),
                {"s": self.service},
            ).all()
        return {row.revision: row.health for row in rows}

    def actions(self, *kinds: str) -> list[dict[str, Any]]:
        with self.deps.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT kind, status, actor, trigger_event_id, detail FROM ops.actions"
                    " WHERE service = :s AND (cardinality(CAST(:k AS text[])) = 0"
                    " OR kind = ANY(CAST(:k AS text[]))) ORDER BY id"
                ),
                {"s": self.service, "k": list(kinds)},
            ).all()
        return [dict(row._mapping) for row in rows]

    def insert_action(self, kind: str, status: str, *, ago: timedelta, **detail: Any) -> None:
        at = datetime.now(UTC) - ago
        with self.deps.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ops.actions (kind, service, status, actor, detail, started_at,"
                    " finished_at) VALUES (:k, :s, :st, 'automation', CAST(:d AS jsonb), :t, :t)"
                ),
                {"k": kind, "s": self.service, "st": status, "d": json.dumps(detail), "t": at},
            )

    def insert_decision(
        self, to: str, *, ago: timedelta, verdict: str = "succeeded", actor: str = "automation"
    ) -> None:
        """An earlier traffic move of this service, as rollback's journal records it."""
        at = datetime.now(UTC) - ago
        with self.deps.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO ops.rollback_decisions (decision_id, trigger_key, service,"
                    " trigger_kind, actor, to_revision, status, verdict, reason, event_id,"
                    " event_published, created_at, finished_at) VALUES (gen_random_uuid(),"
                    " :key, :s, 'smoke', :actor, :to, 'done', :v, 'seeded by the test', :key,"
                    " true, :t, :t)"
                ),
                {
                    "key": f"test:{uuid.uuid4()}",
                    "s": self.service,
                    "actor": actor,
                    "to": to,
                    "v": verdict,
                    "t": at,
                },
            )

    def decisions(self) -> list[dict[str, Any]]:
        """rollback's journal for this service, oldest first."""
        with self.deps.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT trigger_key, from_revision, to_revision, status, verdict, event_id,"
                    " event_published FROM ops.rollback_decisions WHERE service = :s"
                    " ORDER BY created_at"
                ),
                {"s": self.service},
            ).all()
        return [dict(row._mapping) for row in rows]

    # ---------------------------------------------------------------- events

    def smoke(
        self,
        passed: bool,
        revision: str,
        *,
        at: datetime | None = None,
        service: str | None = None,
    ) -> tuple[bytes, dict[str, str]]:
        moment = at or datetime.now(UTC)
        result = SmokeResult(
            service=service or self.service,
            region=REGION,
            revision=revision,
            url=f"https://{revision}---{self.service}-x.a.run.app",
            checks=[
                SmokeCheck(name="GET /health", ok=True, status_code=200, latency_ms=12.0),
                SmokeCheck(
                    name="GET /api/health/db",
                    ok=passed,
                    status_code=200 if passed else 503,
                    latency_ms=40.0,
                    error=None if passed else "HTTP 503: Database unavailable",
                ),
            ],
            started_at=moment - timedelta(seconds=2),
            finished_at=moment,
        )
        kind = EventType.SMOKE_PASSED if passed else EventType.SMOKE_FAILED
        return OpsEvent.new(kind, result, source="smoke-runner", clock=lambda: moment).to_pubsub()

    def incident(
        self, revision: str | None, *, started: datetime | None = None, **changes: Any
    ) -> bytes:
        body = json.loads((GOLDEN / "monitoring" / "incident_auto_rollback.json").read_text())
        incident = body["incident"]
        incident["incident_id"] = f"0.{uuid.uuid4().hex[:12]}"
        incident["started_at"] = int((started or datetime.now(UTC)).timestamp())
        labels = incident["resource"]["labels"]
        labels["service_name"] = self.service
        labels["location"] = REGION
        if revision is None:
            del labels["revision_name"]
        else:
            labels["revision_name"] = revision
        incident.update(changes)
        return json.dumps(body).encode()


@pytest.fixture
def env(
    settings: Settings,
    deps: Deps,
    cloudrun: tuple[cloudrun_standin.CloudRunState, RunningServer],
    cloudrun_clock: ShiftedClock,
    published: Published,
    shared_publisher: Publisher,
) -> Iterator[Env]:
    state, server = cloudrun

    def configure(publisher: Any = None, **rollback: Any) -> Deps:
        """Rollback settings for this test; ``publisher`` replaces the emulator's."""
        rollback.setdefault("operation_timeout_s", 10.0)
        configured = settings.model_copy(
            update={
                "cloud_run_endpoint": server.url,
                "topics": Topics(ops_events=published.topic),  # type: ignore[attr-defined]
                "rollback": RollbackConfig(**rollback),
            }
        )
        d = Deps(
            configured,
            metrics=deps.metrics,
            engine=deps.engine,
            publisher=publisher or shared_publisher,
        )
        set_process_deps(d)
        return d

    d = configure()
    app = functions_framework.create_app(
        target="rollback", source=str(SOURCE), signature_type="cloudevent"
    )
    yield Env(
        app.test_client(),
        d,
        state,
        server,
        published,
        f"svc-{uuid.uuid4().hex[:8]}",
        configure,
        cloudrun_clock,
    )
    set_process_deps(deps)


@pytest.fixture
def breaking_migration(deps: Deps) -> Iterator[Callable[..., None]]:
    """Insert migrate's record of a breaking migration (the contract: the ``breaking``
    column, the label in the detail); removed afterwards, since breaking migrations apply
    to every service."""
    ids: list[int] = []

    def insert(
        finished_at: datetime,
        label: str = "a7f3e9b2c410",
        breaking: bool = True,
        status: str = "succeeded",
        detail_breaking: bool | None = None,
    ) -> None:
        """``status='started'`` leaves finished_at empty, as a run that never finished.
        ``detail_breaking`` (default: ``breaking``) is what the audit detail says."""
        with deps.engine.begin() as conn:
            ids.append(
                conn.execute(
                    text(
                        "INSERT INTO ops.actions (kind, service, status, breaking, detail,"
                        " started_at, finished_at) VALUES ('migration', 'sight-api', :status,"
                        " :breaking, CAST(:d AS jsonb), :t,"
                        " CASE WHEN :status = 'started' THEN NULL"
                        " ELSE CAST(:t AS timestamptz) END) RETURNING id"
                    ),
                    {
                        "d": json.dumps(
                            {
                                "breaking": breaking
                                if detail_breaking is None
                                else detail_breaking,
                                "postgres": {"from": "0001", "to": label},
                            }
                        ),
                        "t": finished_at,
                        "status": status,
                        "breaking": breaking,
                    },
                ).scalar_one()
            )

    yield insert
    with deps.engine.begin() as conn:
        conn.execute(text("DELETE FROM ops.actions WHERE id = ANY(:ids)"), {"ids": ids})


class CommitFaults:
    """Makes the COMMIT of chosen receipt transactions fail, after everything in them ran.

    A deferred constraint trigger on ``ops.event_receipts`` (checked at COMMIT) raises for
    the (consumer, receipt key) pairs listed in a table of this test database; ``arm``
    lists one, ``disarm`` removes it. Only the receipt transaction is affected: rollback's
    journal commits its own transactions and never touches ``ops.event_receipts``.
    """

    def __init__(self, deps: Deps) -> None:
        self.deps = deps

    def arm(self, consumer: str, key: str) -> None:
        with self.deps.engine.begin() as conn:
            conn.execute(
                text("INSERT INTO public.test_commit_faults (consumer, event_id) VALUES (:c, :k)"),
                {"c": consumer, "k": key},
            )

    def disarm(self, consumer: str, key: str) -> None:
        with self.deps.engine.begin() as conn:
            conn.execute(
                text("DELETE FROM public.test_commit_faults WHERE consumer = :c AND event_id = :k"),
                {"c": consumer, "k": key},
            )


@pytest.fixture
def commit_faults(deps: Deps) -> Iterator[CommitFaults]:
    statements = [
        "CREATE TABLE IF NOT EXISTS public.test_commit_faults (consumer text, event_id text)",
        "CREATE OR REPLACE FUNCTION public.test_fail_commit() RETURNS trigger"
        " LANGUAGE plpgsql AS $$ BEGIN"
        " IF EXISTS (SELECT 1 FROM public.test_commit_faults f"
        "   WHERE f.consumer = NEW.consumer AND f.event_id = NEW.event_id) THEN"
        "   RAISE EXCEPTION 'injected failure at COMMIT of receipt %', NEW.event_id;"
        " END IF; RETURN NULL; END $$",
        "DROP TRIGGER IF EXISTS test_fail_commit ON ops.event_receipts",
        "CREATE CONSTRAINT TRIGGER test_fail_commit AFTER INSERT ON ops.event_receipts"
        " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION public.test_fail_commit()",
    ]
    with deps.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    yield CommitFaults(deps)
    with deps.engine.begin() as conn:
        conn.execute(text("DROP TRIGGER IF EXISTS test_fail_commit ON ops.event_receipts"))
        conn.execute(text("DELETE FROM public.test_commit_faults"))
