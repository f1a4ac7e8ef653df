"""Each function served through functions-framework on a Deps whose clients reach the
real local services only through :class:`FaultProxy` ports, with short client timeouts,
so a fault hits only the clients under test and costs seconds, not minutes.

A :class:`World` makes the messages of a stream (``message(i)``), and says what each
message's effect is (``effects(message)``: how many times it happened) once the stream
is over. Seeding and inspection use the session's own (unproxied) clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import functions_framework
import yaml
from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url

from shared.db import pool_usage
from shared.kpi.model import SCHEMA_VERSION
from shared.metrics import Metrics
from shared.pubsub import Publisher
from shared.runtime import Deps, set_process_deps
from shared.settings import IntakeConfig, KpiConfig, NotifyConfig, RollbackConfig, Settings, Topics
from tests.helpers import GOLDEN, PROJECT, ROOT, envelope, push
from tests.reliability.driver import Message
from tests.reliability.faultproxy import FaultProxy

FUNCTIONS = ROOT / "functions"
INTAKE_USER = "monitoring"
INTAKE_PASSWORD = "reliability-intake-password-2b9e"  # pragma: allowlist secret
WEBHOOK_PATH = "/services/T0REL/B0REL/reliabilitysecret"
PORTS = {"postgres": 54329, "redis": 63799, "neo4j": 7688, "pubsub": 8681}
_PORT_ENV = {"postgres": "PG_PORT", "redis": "REDIS_PORT", "neo4j": "NEO4J_BOLT_PORT"}
_PORT_ENV["pubsub"] = "PUBSUB_PORT"


def service_port(name: str) -> int:
    return int(os.environ.get(_PORT_ENV[name], PORTS[name]))


# ------------------------------------------------------------------------ clients


def short_timeouts(
    settings: Settings, proxies: dict[str, FaultProxy], database_url: str
) -> Settings:
    """``settings`` with every store reached through its proxy and short timeouts."""
    db = make_url(database_url).set(port=proxies["postgres"].port)
    return settings.model_copy(
        update={
            "database_url": SecretStr(db.render_as_string(hide_password=False)),
            "db_connect_timeout_s": 1.0,
            "db_pool_timeout_s": 2.0,
            "db_statement_timeout_ms": 5_000,
            "db_lock_timeout_ms": 2_000,
            "redis_url": SecretStr(f"redis://127.0.0.1:{proxies['redis'].port}/0"),
            "redis_timeout_s": 0.3,
            "neo4j_uri": f"bolt://127.0.0.1:{proxies['neo4j'].port}",
            "pubsub_emulator_host": f"127.0.0.1:{proxies['pubsub'].port}",
            "slack_timeout_s": 1.0,
            "slack_max_retry_wait_s": 1.0,
        }
    )


def short_neo4j(settings: Settings) -> Any:
    """The production driver's settings, with timeouts a test can afford (``create_driver``
    hard-codes 5 s connect, 10 s acquisition and 10 s of transaction retries)."""
    import neo4j

    return neo4j.GraphDatabase.driver(
        settings.neo4j_uri,
        auth=(settings.neo4j_user, settings.neo4j_password.get_secret_value()),
        connection_timeout=1.0,
        connection_acquisition_timeout=2.0,
        max_transaction_retry_time=0.5,
    )


def proxied_publisher(settings: Settings) -> Publisher:
    """A Publisher on the emulator through the proxy. The client reads
    PUBSUB_EMULATOR_HOST once, when built: build it now, then put the variable back so
    every other client of the process keeps talking to the emulator directly."""
    previous = os.environ.get("PUBSUB_EMULATOR_HOST")
    publisher = Publisher(settings, timeout_s=2.0)
    try:
        _ = publisher.client
    finally:
        if previous is None:
            os.environ.pop("PUBSUB_EMULATOR_HOST", None)
        else:
            os.environ["PUBSUB_EMULATOR_HOST"] = previous
    return publisher


def make_deps(settings: Settings) -> Deps:
    return Deps(
        settings,
        metrics=Metrics(),
        neo4j_driver=short_neo4j(settings),
        publisher=proxied_publisher(settings),
    )


def app(function: str, target: str, signature: str) -> Any:
    return functions_framework.create_app(
        target=target, source=str(FUNCTIONS / function / "main.py"), signature_type=signature
    ).test_client()


def pubsub_message(
    client: Any, topic: str, key: str, data: bytes, attributes: dict[str, str]
) -> Message:
    """A Pub/Sub message: the same messageId on every attempt, ``deliveryAttempt`` set."""
    body = envelope(data, attributes)
    message_id = body["message"]["messageId"]

    def send(attempt: int) -> Any:
        return push(client, topic, {**body, "deliveryAttempt": attempt})

    return Message(key=key, send=send, message_id=message_id)


class Pull:
    """A pull subscription on a topic of the real emulator (not through any proxy)."""

    def __init__(self, topic: str) -> None:
        os.environ.setdefault("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{service_port('pubsub')}")
        from google.cloud import pubsub_v1

        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()
        self.topic = topic
        self.topic_path = f"projects/{PROJECT}/topics/{topic}"
        self.subscription = f"projects/{PROJECT}/subscriptions/{topic}-rel"
        self.publisher.create_topic(name=self.topic_path)
        self.subscriber.create_subscription(name=self.subscription, topic=self.topic_path)
        self.received: list[tuple[bytes, dict[str, str]]] = []
        self._drained = False

    def all(self) -> list[tuple[bytes, dict[str, str]]]:
        """Everything published by the end of the stream (drained once)."""
        if not self._drained:
            self.drain()
            self._drained = True
        return list(self.received)

    def drain(self, quiet_s: float = 1.5) -> list[tuple[bytes, dict[str, str]]]:
        """Everything published so far: pull until nothing came for ``quiet_s``."""
        from google.api_core.exceptions import DeadlineExceeded

        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            try:
                response = self.subscriber.pull(
                    subscription=self.subscription, max_messages=100, timeout=1.0
                )
            except DeadlineExceeded:
                continue
            if response.received_messages:
                last = time.monotonic()
                self.subscriber.acknowledge(
                    subscription=self.subscription,
                    ack_ids=[m.ack_id for m in response.received_messages],
                )
                for m in response.received_messages:
                    self.received.append((m.message.data, dict(m.message.attributes)))
            else:
                time.sleep(0.1)
        return list(self.received)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.subscriber.delete_subscription(subscription=self.subscription)
            self.publisher.delete_topic(topic=self.topic_path)
        self.subscriber.close()
        self.publisher.stop()


# ------------------------------------------------------------------------ worlds


@dataclass
class World:
    """One function on proxied Deps: its client, messages, effects and faults."""

    function: str
    deps: Deps
    client: Any
    message: Callable[[int], Message]
    effects: Callable[[Message], int]
    #: per-message detail for the report (e.g. which event was published)
    detail: Callable[[Message], str] = lambda _m: ""
    closers: list[Callable[[], None]] = field(default_factory=list)

    def checked_out(self) -> int:
        return pool_usage(self.deps.engine)["checked_out"] if "engine" in self.deps.__dict__ else 0

    def close(self) -> None:
        set_process_deps(None)
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                close()
        self.deps.close()


def golden_build(**substitutions: str) -> tuple[bytes, dict[str, str], str]:
    message = json.loads((GOLDEN / "cloudbuild" / "success_triggered.json").read_text())
    data, attributes = message["data"], dict(message["attributes"])
    build_id = str(uuid.uuid4())
    data["id"] = attributes["buildId"] = build_id
    if substitutions:
        data.setdefault("substitutions", {}).update(substitutions)
    return json.dumps(data).encode(), attributes, build_id


def failed_build() -> tuple[bytes, dict[str, str], str]:
    message = json.loads((GOLDEN / "cloudbuild" / "failure.json").read_text())
    data, attributes = dict(message["data"]), dict(message["attributes"])
    build_id = str(uuid.uuid4())
    data["id"] = attributes["buildId"] = build_id
    return json.dumps(data).encode(), attributes, build_id


def incident_body(incident_id: str, policy: str, name: str = "incident_1_2_open") -> bytes:
    body = json.loads((GOLDEN / "monitoring" / f"{name}.json").read_text())
    body["incident"].update(incident_id=incident_id, policy_name=policy)
    return json.dumps(body).encode()


# ---- migrate --------------------------------------------------------------------------


def migrate_world(
    base: Settings,
    proxies: dict[str, FaultProxy],
    migration_db: str,
    graph: Any | None,
    graph_dir: Path | None,
) -> World:
    from tests.shared.migrate.helpers import migrate_settings, rows

    topic = Pull(f"ops-events-rel-{uuid.uuid4().hex[:8]}")
    proxied = short_timeouts(base, proxies, migration_db)
    configured = migrate_settings(
        proxied,
        proxied.database_url.get_secret_value(),
        versions=None,
        graph_dir=graph_dir,
        ns=graph,
        topic=topic.topic,
        lock_wait_s=2.0,
        graph_lock_wait_s=2.0,
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    client = app("migrate", "migrate", "cloudevent")

    def message(_i: int) -> Message:
        data, attributes, build_id = golden_build()
        return pubsub_message(client, "cloud-builds", build_id, data, attributes)

    def events(build_id: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for data, attributes in topic.all():
            if json.loads(data).get("build_id") == build_id:
                out.setdefault(attributes["type"], set()).add(attributes["id"])
        return out

    def effects(m: Message) -> int:
        found = events(m.key)
        succeeded = len(found.get("sight.ops.migration.succeeded", set()))
        failed = len(found.get("sight.ops.migration.failed", set()))
        return succeeded + failed

    def detail(m: Message) -> str:
        found = events(m.key)
        recorded = rows(
            migration_db,
            "SELECT status FROM ops.actions WHERE kind = 'migration' AND detail->>'build_id' = :b",
            b=m.key,
        )
        kinds = ",".join(sorted(t.rsplit(".", 1)[-1] for t in found))
        return f"{kinds or 'no event'}; recorded {[r['status'] for r in recorded]}"

    world = World("migrate", deps, client, message, effects, detail)
    world.closers.append(topic.close)
    return world


# ---- rollback -------------------------------------------------------------------------


def rollback_world(
    base: Settings,
    proxies: dict[str, FaultProxy],
    database_url: str,
    base_deps: Deps,
    cloudrun: Any,
    cloudrun_clock: Any,
    cloudrun_proxy: FaultProxy | None,
) -> World:
    from tests.functions.rollback.conftest import Env, Published

    state, server = cloudrun
    topic = Pull(f"ops-events-rb-{uuid.uuid4().hex[:8]}")
    endpoint = f"http://127.0.0.1:{cloudrun_proxy.port}" if cloudrun_proxy else server.url
    configured = short_timeouts(base, proxies, database_url).model_copy(
        update={
            "cloud_run_endpoint": endpoint,
            "topics": Topics(ops_events=topic.topic),
            "rollback": RollbackConfig(api_timeout_s=1.0, operation_timeout_s=5.0, lock_wait_s=2.0),
        }
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    client = app("rollback", "rollback", "cloudevent")
    published = Published.__new__(Published)  # unused: events are read from ``topic``
    seeding = Env(client, base_deps, state, server, published, "", lambda **_: deps, cloudrun_clock)

    def message(_i: int) -> Message:
        env = replace(seeding, service=f"svc-rel-{uuid.uuid4().hex[:8]}")
        v1, _, v3 = env.deploy()
        env.seed_health(**{v1: "good"})
        data, attributes = env.smoke(False, v3)
        return pubsub_message(client, "smoke-tests", env.service, data, attributes)

    def events(service: str) -> dict[str, set[str]]:
        out: dict[str, set[str]] = {}
        for data, attributes in topic.all():
            payload = json.loads(data)
            if payload.get("data", payload).get("service") == service:
                out.setdefault(attributes["type"], set()).add(attributes["id"])
        return out

    def effects(m: Message) -> int:
        env = replace(seeding, service=m.key)
        decisions = [d for d in env.decisions() if d["status"] == "done"]
        applied = state.applied_update_counts().get(f"{PROJECT}/europe-west1/{m.key}", 0)
        found = events(m.key)
        published_ids = set().union(*found.values()) if found else set()
        if len(decisions) > 1 or applied > 1 or len(published_ids) > 1:
            return 2  # acted twice
        # A decision is an effect with its event: notify reports a rollback from it.
        return min(len(decisions), len(published_ids))

    def detail(m: Message) -> str:
        env = replace(seeding, service=m.key)
        found = events(m.key)
        kinds = ",".join(sorted(t.rsplit(".", 1)[-1] for t in found))
        verdicts = [d["verdict"] for d in env.decisions()]
        return f"{kinds or 'no event'}; decisions {verdicts}; serving {env.serving()}"

    world = World("rollback", deps, client, message, effects, detail)
    world.closers.append(topic.close)
    return world


# ---- notify ---------------------------------------------------------------------------


def notify_world(
    base: Settings,
    proxies: dict[str, FaultProxy],
    database_url: str,
    sink: Any,
    tmp_path: Path,
    *,
    alerts: bool,
    slack_proxy: FaultProxy | None = None,
) -> World:
    state, running = sink
    config = tmp_path / f"notify-{uuid.uuid4().hex[:6]}.yaml"
    config.write_text(yaml.safe_dump({}))
    slack = f"http://127.0.0.1:{slack_proxy.port}" if slack_proxy else running.url
    configured = short_timeouts(base, proxies, database_url).model_copy(
        update={
            "slack_webhook_url": SecretStr(slack + WEBHOOK_PATH),
            "notify": NotifyConfig(
                config_file=str(config),
                redis_prefix=f"sightops:rel:{uuid.uuid4().hex[:10]}:",
                group_wait_s=0.0,
                inline_wait_max_s=0.0,
            ),
        }
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    client = app("notify", "notify", "cloudevent")

    def message(i: int) -> Message:
        if alerts:
            incident = f"0.rel{i}-{uuid.uuid4().hex[:8]}"
            data = incident_body(incident, f"reliability {incident}")
            return pubsub_message(client, "monitoring-alerts", incident, data, {})
        data, attributes, build_id = failed_build()
        return pubsub_message(client, "cloud-builds", build_id, data, attributes)

    def effects(m: Message) -> int:
        return sum(m.key in json.dumps(msg.body) for msg in state.messages(WEBHOOK_PATH))

    return World("notify", deps, client, message, effects)


# ---- kpi and kpi_refresh ----------------------------------------------------------------


def kpi_world(
    base: Settings,
    proxies: dict[str, FaultProxy],
    database_url: str,
    base_deps: Deps,
    projects: list[uuid.UUID],
    *,
    refresh: bool,
) -> World:
    prefix = f"sightops:rel:{uuid.uuid4().hex[:8]}"
    configured = short_timeouts(base, proxies, database_url).model_copy(
        update={"kpi": KpiConfig(key_prefix=prefix, redis_retry_s=0.3, wait_s=1.0)}
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    client = app("kpi", "kpi_refresh", "cloudevent") if refresh else app("kpi", "kpi", "http")
    answers: dict[str, Any] = {}

    def message(i: int) -> Message:
        project = str(projects[i % len(projects)])
        if refresh:
            data = json.dumps({"project_id": project}).encode()
            return pubsub_message(client, "kpi-refresh", project, data, {})

        def send(_attempt: int) -> Any:
            response = client.get(f"/v1/projects/{project}/kpis")
            if response.status_code == 200:
                answers[project] = response
            return response

        return Message(key=project, send=send)

    def cached(project: str) -> bool:
        return bool(base_deps.redis.exists(f"{prefix}:s{SCHEMA_VERSION}:{{{project}}}"))

    def effects(m: Message) -> int:
        if refresh:
            return int(cached(m.key))
        response = answers.get(m.key)
        if response is None:
            return 0
        body = response.get_json()
        assert body["personas_total"] == 3, body
        assert body["graph"]["personas"] == 2, body
        return 1

    def detail(m: Message) -> str:
        if refresh:
            return "cached" if cached(m.key) else "not cached"
        response = answers.get(m.key)
        x_cache = response.headers.get("X-Cache") if response is not None else None
        return f"X-Cache {x_cache}; {'cached' if cached(m.key) else 'not cached'}"

    return World("kpi_refresh" if refresh else "kpi", deps, client, message, effects, detail)


# ---- alert_intake ---------------------------------------------------------------------


def intake_world(base: Settings, proxies: dict[str, FaultProxy], database_url: str) -> World:
    import base64

    topic = Pull(f"monitoring-alerts-rel-{uuid.uuid4().hex[:8]}")
    configured = short_timeouts(base, proxies, database_url).model_copy(
        update={
            "intake": IntakeConfig(
                username=SecretStr(INTAKE_USER), password=SecretStr(INTAKE_PASSWORD)
            ),
            "topics": Topics(monitoring_alerts=topic.topic),
        }
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    client = app("alert_intake", "alert_intake", "http")
    token = base64.b64encode(f"{INTAKE_USER}:{INTAKE_PASSWORD}".encode()).decode()

    def message(i: int) -> Message:
        incident = f"0.intake{i}-{uuid.uuid4().hex[:8]}"
        body = incident_body(incident, "reliability intake")

        def send(_attempt: int) -> Any:
            return client.post(
                "/",
                data=body,
                headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"},
            )

        return Message(key=incident, send=send)

    def effects(m: Message) -> int:
        return sum(json.loads(data)["incident"]["incident_id"] == m.key for data, _ in topic.all())

    world = World("alert_intake", deps, client, message, effects)
    world.closers.append(topic.close)
    return world


def rows_of(deps: Deps, sql: str, **params: Any) -> list[dict[str, Any]]:
    with deps.engine.connect() as conn:
        return [dict(r) for r in conn.execute(text(sql), params).mappings()]


@contextlib.contextmanager
def proxy_in_front_of(port: int, **kwargs: Any) -> Iterator[FaultProxy]:
    with FaultProxy(port, **kwargs) as proxy:
        yield proxy
