"""The local stack: stand-ins, every function under functions-framework, Pub/Sub wiring,
a deploy trigger, and a timeline of what happens (docs/simulate.md, docs/local-stack.md).

One implementation serves three callers: `make dev` (fixed ports, the dev database,
project ``sight-local``, the timeline printed live), `sightops simulate` and the tests of
tests/simulate (free ports, a scratch database, a Pub/Sub project of their own, the
timeline recorded). The services themselves (PostgreSQL, Redis, Neo4j, the emulator) are
shared: a stack isolates itself by database, project, Redis key prefixes and Neo4j labels.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO

from sightops.topology import FUNCTIONS, TOPICS, FunctionSpec, dead_letter_topic

ROOT = Path(__file__).resolve().parents[1]

#: ``monitoring`` is the Cloud Monitoring stand-in's admin API, ``monitoring-grpc`` its
#: MetricService; ``logging`` and ``logging-grpc`` the Cloud Logging stand-in's admin API
#: and LoggingServiceV2 (the canary reads both; the Cloud Run stand-in records into both).
#: ``storage`` is the Cloud Storage JSON API (backups).
STANDINS = (
    "cloudrun",
    "slack",
    "secretmanager",
    "sightapi",
    "monitoring",
    "monitoring-grpc",
    "storage",
    "logging",
    "logging-grpc",
)
DEV_STANDIN_PORTS = {
    "cloudrun": 8701,
    "slack": 8702,
    "secretmanager": 8703,
    "sightapi": 8704,
    "monitoring": 8705,
    "monitoring-grpc": 8706,
    "storage": 8707,
    "logging": 8708,
    "logging-grpc": 8709,
}
SLACK_WEBHOOK_PATH = "/services/T0LOCAL/B0LOCAL/devwebhooksecret"
SLACK_SECRET = "slack-webhook-url"  # noqa: S105 - the secret's name, not its value
#: The local Slack app's signing secret and the user allowed to press its buttons.
SLACK_SIGNING_SECRET = "dev-slack-signing-secret"  # noqa: S105 - local development only
SLACK_DEV_USER = "U0LOCALDEV"
# alert_intake's Basic-auth password lives in the Secret Manager stand-in (by reference).
INTAKE_SECRET = "alert-intake-password"  # noqa: S105 - the secret's name, not its value
INTAKE_USER = "monitoring"
INTAKE_PASSWORD = "dev-intake-password"  # noqa: S105 - local development only
#: buildTriggerId of tests/fixtures/golden/cloudbuild/success_triggered.json: the local
#: stand-in for the CI trigger whose SUCCESS builds migrate acts on.
DEV_CI_TRIGGER_ID = "5d2f8a61-93c4-4b7e-a0d2-1c6e9f3b7a48"
#: Where the local deploy finds images (`<repo>/<service>:<commit>`, docs/deploy.md).
LOCAL_IMAGE_REPO = "europe-west1-docker.pkg.dev/sight-local/sight"
REGION = "europe-west1"
#: The deploy trigger stand-in's pull subscription on ops-events.
DEPLOY_TRIGGER_SUBSCRIPTION = "deploy-trigger--ops-events"
MIGRATION_SUCCEEDED = "sight.ops.migration.succeeded"


def free_port() -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if port_open(port):
            return
        time.sleep(0.05)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


@dataclass(frozen=True)
class StackPorts:
    """Where each stand-in and function listens."""

    standins: Mapping[str, int]
    functions: Mapping[str, int]

    @classmethod
    def dev(cls) -> StackPorts:
        """`make dev`'s fixed ports (README, "What runs where")."""
        return cls(dict(DEV_STANDIN_PORTS), {fn.name: fn.port for fn in FUNCTIONS})

    @classmethod
    def free(cls) -> StackPorts:
        """Ports nobody uses now: a stack next to `make dev` and other stacks."""
        return cls({n: free_port() for n in STANDINS}, {fn.name: free_port() for fn in FUNCTIONS})

    def url(self, standin: str) -> str:
        return f"http://127.0.0.1:{self.standins[standin]}"

    @property
    def monitoring_target(self) -> str:
        """``host:port`` of the Cloud Monitoring stand-in's gRPC MetricService."""
        return f"127.0.0.1:{self.standins['monitoring-grpc']}"

    @property
    def logging_target(self) -> str:
        """``host:port`` of the Cloud Logging stand-in's gRPC LoggingServiceV2."""
        return f"127.0.0.1:{self.standins['logging-grpc']}"

    def function_url(self, function: str) -> str:
        return f"http://127.0.0.1:{self.functions[function]}"

    def all(self) -> list[int]:
        return [*self.standins.values(), *self.functions.values()]


def stack_env(
    *,
    ports: StackPorts,
    project: str,
    state_dir: Path,
    database_url: str | None = None,
    isolate: str | None = None,
    extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
    explicit_wins: bool = True,
) -> dict[str, str]:
    """Environment for every process of a stack (all local, no cloud).

    ``explicit_wins``: a variable already set in ``base`` is kept (`make dev`, where
    ``PG_PORT`` & co. may point elsewhere); False: the stack's values win (a simulation
    must not inherit a test session's ``DATABASE_URL``). ``isolate`` names the Redis key
    prefixes and Neo4j labels of a stack that shares the services with others.
    """
    env = dict(os.environ if base is None else base)
    slack = f"{ports.url('slack')}{SLACK_WEBHOOK_PATH}"
    values: dict[str, str] = {
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{env.get('PUBSUB_PORT', '8681')}",
        "GCP_PROJECT": project,
        "GCP_REGION": REGION,
        "CLOUD_RUN_ENDPOINT": ports.url("cloudrun"),
        "SECRET_MANAGER_ENDPOINT": ports.url("secretmanager"),
        # google-cloud-storage itself honours it: endpoint, anonymous credentials
        "STORAGE_EMULATOR_HOST": ports.url("storage"),
        "SLACK_WEBHOOK_URL": slack,
        "ROLLBACK__SMOKE_URL": ports.url("sightapi"),
        # the canary reads the Monitoring stand-in, fed by the Cloud Run stand-in's router
        # in 1 s samples, all visible at once (docs/canary.md, "Reading Cloud Monitoring")
        "CANARY__MONITORING_ENDPOINT": ports.monitoring_target,
        "CANARY__ALIGNMENT_S": "1",
        "CANARY__VISIBILITY_DELAY_S": "0",
        # and the Logging stand-in's request entries, fed by the same router, visible at
        # once (docs/canary.md, "Reading the request logs")
        "CANARY__LOGGING_ENDPOINT": ports.logging_target,
        "CANARY__LOGS_VISIBILITY_DELAY_S": "0",
        "CANARY__LOGS_ALIGNMENT_S": "1",
        # every Slack message links to its release's page on this stack's console, which
        # shows the dead letters of every subscription (docs/console.md)
        "CONSOLE__BASE_URL": ports.function_url("console"),
        "CONSOLE__DEAD_LETTER_HOLDS": json.dumps(
            [dead_letter_topic(fn.name, t) for fn in FUNCTIONS for t in fn.topics]
        ),
        # Slack's buttons: the stand-in signs its clicks with this secret and answers
        # usergroups.users.list; the dev user may act (docs/console.md)
        "CONSOLE__SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
        "CONSOLE__SLACK_ALLOWED": json.dumps([SLACK_DEV_USER]),
        "CONSOLE__SLACK_API_URL": ports.url("slack"),
        "NOTIFY__CONFIG_FILE": str(ROOT / "config" / "notify.yaml"),
        "NOTIFY__INTAKE_USERNAME": INTAKE_USER,
        "NOTIFY__INTAKE_PASSWORD": f"projects/{project}/secrets/{INTAKE_SECRET}/versions/latest",
        # migrate acts on builds of its CI triggers only (docs/migrate.md): locally, the
        # trigger of the golden build `make dev` suggests publishing.
        "MIGRATE__SELECTOR": json.dumps(
            {"trigger_ids": [DEV_CI_TRIGGER_ID], "services": ["sight-api"]}
        ),
        "SIGHTOPS_STATE": str(state_dir),
        "SIGHTOPS_IMAGE_REPO": LOCAL_IMAGE_REPO,
        "LOG_LEVEL": "INFO",
        # Each log line reaches the timeline when it is written, not when a pipe's
        # buffer fills.
        "PYTHONUNBUFFERED": "1",
    }
    if database_url is not None:
        values["DATABASE_URL"] = database_url
    if isolate is not None:
        label = "".join(c for c in isolate.title() if c.isalnum())
        values |= {
            "NOTIFY__REDIS_PREFIX": f"sightops:notify:{isolate}:",
            "KPI__KEY_PREFIX": f"sightops:kpi:{isolate}",
            "MIGRATE__GRAPH_RECORD_LABEL": f"SchemaMigration{label}",
            "MIGRATE__GRAPH_LOCK_LABEL": f"SchemaMigrationLock{label}",
        }
    values |= dict(extra or {})
    for key, value in values.items():
        if explicit_wins:
            env.setdefault(key, value)
        else:
            env[key] = value
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ---- the timeline --------------------------------------------------------------------

Source = Literal["topic", "function", "deploy", "traffic", "slack", "action", "note"]


@dataclass(frozen=True)
class TimelineEntry:
    """One thing that happened in the stack, when it happened (UTC)."""

    at: datetime
    source: Source
    text: str
    topic: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)
    data: bytes = b""
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def event_type(self) -> str | None:
        if self.source == "topic":
            return self.attributes.get("type")
        labels = self.fields.get("logging.googleapis.com/labels") or {}
        return labels.get("event_type") if isinstance(labels, dict) else None

    def json_data(self) -> Any:
        try:
            return json.loads(self.data)
        except ValueError:
            return None


Sink = Callable[[TimelineEntry], None]


def describe(data: bytes, attributes: Mapping[str, str]) -> str:
    """One human line for a message on any topic."""
    attrs = dict(attributes)
    if "buildId" in attrs:
        return f"build {attrs['buildId'][:8]} {attrs.get('status', '?')}"
    if "type" in attrs:
        service = f" service={attrs['service']}" if attrs.get("service") else ""
        return f"{attrs['type']}{service} id={attrs.get('id', '?')[:8]}"
    try:
        body = json.loads(data)
        incident = body.get("incident", {})
        return f"incident {incident.get('policy_name', '?')} {incident.get('state', '?')}"
    except (ValueError, AttributeError):
        return f"{len(data)} bytes"


def function_entry(line: str) -> TimelineEntry | None:
    """A function's JSON log line as a timeline entry: delivery outcomes and errors."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict):
        return None
    labels = entry.get("logging.googleapis.com/labels") or {}
    if "outcome" not in labels and entry.get("severity") not in {"ERROR", "CRITICAL"}:
        return None
    try:
        at = datetime.fromisoformat(str(entry.get("time")))
    except ValueError:
        at = datetime.now(UTC)
    return TimelineEntry(at, "function", str(entry.get("message", "")), fields=entry)


# ---- the stack -----------------------------------------------------------------------


@dataclass
class StackConfig:
    """What a stack is: where it listens, which project and database, its state dir."""

    state_dir: Path
    project: str
    ports: StackPorts
    database_url: str | None = None  # None: whatever DATABASE_URL / the default says
    isolate: str | None = None  # Redis prefixes and Neo4j labels of their own
    run_services: bool = False  # start scripts/services (make dev) first
    migrate_database: bool = True
    cloudrun_seed: Path | None = None
    extra_env: Mapping[str, str] = field(default_factory=dict)
    explicit_env_wins: bool = True
    deploy_trigger: bool = True
    own_project: bool = False  # delete the project's topics at stop (nobody else uses it)
    # publish sight.ops.canary.tick every CANARY__TICK_S, as Cloud Scheduler does in
    # production (`make dev`; simulations and tests publish their own ticks)
    canary_ticker: bool = False


class Stack:
    """Start and stop the local stack; every timeline entry goes to ``sink``."""

    def __init__(self, config: StackConfig, sink: Sink | None = None) -> None:
        self.config = config
        self.sink: Sink = sink or (lambda _e: None)
        self.ports = config.ports
        self.project = config.project
        self.state_dir = config.state_dir
        self.env = stack_env(
            ports=config.ports,
            project=config.project,
            state_dir=config.state_dir,
            database_url=config.database_url,
            isolate=config.isolate,
            extra=config.extra_env,
            explicit_wins=config.explicit_env_wins,
        )
        self.children: list[tuple[str, subprocess.Popen[str]]] = []
        self.subscriptions: list[str] = []
        self.stopping = threading.Event()
        self._pulls: list[Any] = []
        self._subscriber: Any = None
        self._deploys = ThreadPoolExecutor(max_workers=2, thread_name_prefix="deploy-trigger")
        self.record = self.state_dir / "run" / "stack-started"

    # ---- lifecycle -------------------------------------------------------------
    def steps(self) -> list[tuple[str, Callable[[], None]]]:
        """The start-up, in order, so `make dev` can show each with its time."""
        (self.state_dir / "run").mkdir(parents=True, exist_ok=True)
        (self.state_dir / "log").mkdir(parents=True, exist_ok=True)
        steps: list[tuple[str, Callable[[], None]]] = []
        if self.config.run_services:
            steps.append(("services", self._services))
        if self.config.migrate_database:
            steps.append(("database migrations", self._migrate))
        steps.append(("stand-ins and functions", self._processes))
        steps.append(("topics and subscriptions", self._pubsub))
        if self.config.canary_ticker:
            steps.append(("canary ticker", self._start_ticker))
        return steps

    def start(self) -> None:
        try:
            for _name, action in self.steps():
                action()
        except BaseException:
            self.stop()
            raise

    def _services(self) -> None:
        subprocess.run(
            [str(ROOT / "scripts/services/up.sh"), "--record", str(self.record)],
            check=True,
            env=self.env,
            stdout=subprocess.DEVNULL,
        )

    def _migrate(self) -> None:
        subprocess.run(
            [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
            check=True,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def _spawn(
        self, name: str, argv: list[str], on_line: Callable[[str], None]
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            argv,
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self.children.append((name, proc))
        log = (self.state_dir / "log" / f"{name}.log").open("a")
        threading.Thread(target=_pump, args=(proc.stdout, log, on_line), daemon=True).start()
        return proc

    def _processes(self) -> None:
        """Stand-ins and functions start together; then every port must open."""
        waits = [(self._standins(), self.ports.standins["secretmanager"])]
        for fn in FUNCTIONS:
            waits.append((self._function(fn), self.ports.functions[fn.name]))
        waits += [(waits[0][0], port) for port in self.ports.standins.values()]
        for proc, port in waits:
            wait_for_port(port, 60, proc)

    def _standins(self) -> subprocess.Popen[str]:
        seed = self.state_dir / "run" / "secrets-seed.json"
        seed.write_text(
            json.dumps(
                {
                    SLACK_SECRET: f"{self.ports.url('slack')}{SLACK_WEBHOOK_PATH}",
                    INTAKE_SECRET: INTAKE_PASSWORD,
                }
            )
        )
        seed.chmod(0o600)
        argv = [sys.executable, "-m", "standins", "all", "--seed", str(seed)]
        if self.config.cloudrun_seed is not None:
            argv += ["--cloudrun-seed", str(self.config.cloudrun_seed)]
        for name, port in self.ports.standins.items():
            argv += [f"--{name}-port", str(port)]
        # the bucket the backup function writes to (BACKUP__BUCKET's default, docs/backups.md)
        from shared.settings import Settings

        argv += ["--storage-bucket", Settings().backup.bucket]
        return self._spawn("standins", argv, lambda _l: None)

    def _function(self, fn: FunctionSpec) -> subprocess.Popen[str]:
        argv = [
            sys.executable,
            "-m",
            "functions_framework",
            "--target",
            fn.name,
            "--source",
            str(ROOT / "functions" / fn.source_dir / "main.py"),
            "--signature-type",
            fn.signature,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.ports.functions[fn.name]),
        ]
        return self._spawn(fn.name, argv, self._function_line)

    def functions(self) -> list[FunctionSpec]:
        """The topology's functions at this stack's ports."""
        return [replace(fn, port=self.ports.functions[fn.name]) for fn in FUNCTIONS]

    def _pubsub(self) -> None:
        from sightops.pubsub_admin import ensure_subscription, setup

        host = self.env["PUBSUB_EMULATOR_HOST"]
        self.subscriptions = setup(host, self.project, self.functions())
        if self.config.deploy_trigger:
            from google.cloud.pubsub_v1 import SubscriberClient

            self.subscriptions.append(
                ensure_subscription(
                    SubscriberClient(),
                    self.project,
                    DEPLOY_TRIGGER_SUBSCRIPTION,
                    "ops-events",
                    retry_policy=False,
                )
            )
        self._tail()

    def _start_ticker(self) -> None:
        threading.Thread(target=self._tick, name="canary-ticker", daemon=True).start()

    def _tick(self) -> None:
        """Cloud Scheduler's canary job, locally (docs/canary.md, "Why Cloud Scheduler
        wakes it"): a tick for every running canary on ``ops-events``. A tick that cannot
        be published is skipped; the next one analyses just as well."""
        from shared.events import CanaryTick, EventType, OpsEvent
        from shared.pubsub import Publisher
        from shared.settings import CanaryConfig, Settings

        interval = float(self.env.get("CANARY__TICK_S") or CanaryConfig().tick_s)
        publisher = Publisher(
            Settings(
                gcp_project=self.project, pubsub_emulator_host=self.env["PUBSUB_EMULATOR_HOST"]
            )
        )
        try:
            while not self.stopping.wait(interval):
                tick = OpsEvent.new(EventType.CANARY_TICK, CanaryTick(), source="sightops-dev")
                with contextlib.suppress(Exception):
                    publisher.publish_event("ops-events", tick)
        finally:
            publisher.close()

    def stop(self) -> None:
        """Stop what this stack started; safe to call twice and after a failed start."""
        if self.stopping.is_set():
            return
        self.stopping.set()
        for pull in self._pulls:
            with contextlib.suppress(Exception):
                pull.cancel()
        self._deploys.shutdown(wait=True, cancel_futures=True)
        host = self.env["PUBSUB_EMULATOR_HOST"]
        if self.subscriptions:
            from sightops.pubsub_admin import teardown

            with contextlib.suppress(Exception):  # the emulator may be gone: nothing to clean
                teardown(host, self.subscriptions)
        if self.config.own_project:
            with contextlib.suppress(Exception):
                delete_project(host, self.project)
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        if self.config.isolate is not None:
            with contextlib.suppress(Exception):
                self._forget_graph_labels()
        if self.config.run_services:
            subprocess.run(
                [str(ROOT / "scripts/services/down.sh"), "--record", str(self.record)],
                check=False,
                env=self.env,
            )

    def _forget_graph_labels(self) -> None:
        """The migrate bookkeeping nodes of this stack's own labels (Neo4j is shared)."""
        from shared.graph import create_driver
        from shared.settings import Settings

        settings = Settings()
        driver = create_driver(settings)
        try:
            with driver.session() as session:
                for key in ("MIGRATE__GRAPH_RECORD_LABEL", "MIGRATE__GRAPH_LOCK_LABEL"):
                    label = self.env[key]
                    if label.isalnum():  # labels cannot be parameters
                        session.run(f"MATCH (n:`{label}`) DETACH DELETE n").consume()
        finally:
            driver.close()

    def exited_child(self) -> str | None:
        """The name of a child process that has died, if any."""
        for name, proc in self.children:
            if proc.poll() is not None:
                return f"{name} exited with {proc.returncode}"
        return None

    def __enter__(self) -> Stack:
        self.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- what happens ----------------------------------------------------------
    def _function_line(self, line: str) -> None:
        entry = function_entry(line)
        if entry is not None:
            self.sink(entry)

    def _tail(self) -> None:
        """Every message on every topic (and dead-letter topic) to the sink, with its
        publish time; the deploy trigger's subscription to :meth:`_deploy_trigger`."""
        from google.cloud.pubsub_v1 import SubscriberClient

        self._subscriber = SubscriberClient()
        topics = list(TOPICS) + [
            dead_letter_topic(fn.name, t) for fn in FUNCTIONS for t in fn.topics
        ]
        for topic in topics:

            def on_message(message: Any, topic: str = topic) -> None:
                attrs = dict(message.attributes)
                at = message.publish_time
                if at.tzinfo is None:
                    at = at.replace(tzinfo=UTC)
                self.sink(
                    TimelineEntry(
                        at,
                        "topic",
                        f"→ {topic} {describe(message.data, attrs)}",
                        topic=topic,
                        attributes=attrs,
                        data=bytes(message.data),
                        fields={"message_id": message.message_id},
                    )
                )
                message.ack()

            self._pulls.append(
                self._subscriber.subscribe(
                    f"projects/{self.project}/subscriptions/timeline--{topic}", on_message
                )
            )
        if self.config.deploy_trigger:
            self._pulls.append(
                self._subscriber.subscribe(
                    f"projects/{self.project}/subscriptions/{DEPLOY_TRIGGER_SUBSCRIPTION}",
                    self._on_ops_event,
                )
            )

    # ---- the deploy trigger stand-in --------------------------------------------
    def _on_ops_event(self, message: Any) -> None:
        """Cloud Build's Pub/Sub trigger on ``migration.succeeded`` (docs/deploy.md): one
        deploy build per message delivered, acknowledged once the build is queued. Like
        Cloud Build it does not deduplicate: a duplicated event starts a second deploy
        (docs/simulate.md, "duplicates")."""
        attrs = dict(message.attributes)
        message.ack()
        if attrs.get("type") != MIGRATION_SUCCEEDED or self.stopping.is_set():
            return
        try:
            payload = json.loads(message.data)
        except ValueError:
            return
        with contextlib.suppress(RuntimeError):  # shutting down
            self._deploys.submit(self._deploy, payload, attrs)

    def _deploy(self, payload: Mapping[str, Any], attributes: Mapping[str, str]) -> None:
        service = str(payload.get("service") or "")
        build_id = str(payload.get("build_id") or "")
        self.sink(
            TimelineEntry(
                datetime.now(UTC),
                "deploy",
                f"deploy trigger: sightops deploy {service} started",
                fields={"service": service},
            )
        )
        # one log per delivered message: duplicates of one build run side by side
        log = self.state_dir / "log" / f"deploy-{build_id or 'unknown'}-{uuid.uuid4().hex[:8]}.log"
        with log.open("w") as out:
            done = subprocess.run(
                deploy_argv(),
                env=deploy_env(self.env, payload, attributes),
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
                timeout=300,
            )
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or [""]
        self.sink(
            TimelineEntry(
                datetime.now(UTC),
                "deploy",
                f"deploy trigger: {service} exited {done.returncode} {tail[0][:160]}",
                fields={"returncode": done.returncode, "service": service, "log": str(log)},
            )
        )


def deploy_argv() -> list[str]:
    """The deploy as Cloud Build runs it (cloudbuild-deploy.yaml): `sightops deploy`."""
    return [sys.executable, "-m", "sightops.cli", "deploy"]


def deploy_env(
    env: Mapping[str, str], payload: Mapping[str, Any], attributes: Mapping[str, str]
) -> dict[str, str]:
    """The deploy build's substitutions, from the ``migration.succeeded`` event, travel
    in its environment (``DEPLOY_*``, sightops/commands/deploy.py), never in a shell
    string; the deploy checks each value's shape itself."""
    values = {
        "DEPLOY_SERVICE": str(payload.get("service") or ""),
        "DEPLOY_COMMIT_SHA": str(payload.get("commit_sha") or ""),
        "DEPLOY_BUILD_ID": str(payload.get("build_id") or ""),
        "DEPLOY_EVENT_ID": attributes.get("id", ""),
        "DEPLOY_EVENT_TYPE": attributes.get("type", ""),
        "DEPLOY_PROJECT": env.get("GCP_PROJECT", ""),
        "DEPLOY_REGION": env.get("GCP_REGION", REGION),
        "DEPLOY_IMAGE_REPO": env.get("SIGHTOPS_IMAGE_REPO", LOCAL_IMAGE_REPO),
        # The trace goes on in the deploy (docs/release.md): Cloud Build's trigger maps
        # the message's attributes to substitutions the same way.
        "DEPLOY_TRACEPARENT": attributes.get("traceparent", ""),
        "DEPLOY_RELEASE_ID": attributes.get("release_id", ""),
    }
    return {**env, **values}


def _pump(stream: TextIO | None, log: TextIO, on_line: Callable[[str], None]) -> None:
    if stream is None:
        return
    with log:
        for line in stream:
            log.write(line)
            log.flush()
            on_line(line)


def delete_project(emulator_host: str, project: str) -> None:
    """Every subscription and topic of a project only one stack used."""
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    from google.api_core.exceptions import NotFound
    from google.cloud.pubsub_v1 import PublisherClient, SubscriberClient

    publisher, subscriber = PublisherClient(), SubscriberClient()
    for sub in subscriber.list_subscriptions(project=f"projects/{project}"):
        with contextlib.suppress(NotFound):
            subscriber.delete_subscription(subscription=sub.name)
    for topic in publisher.list_topics(project=f"projects/{project}"):
        with contextlib.suppress(NotFound):
            publisher.delete_topic(topic=topic.name)


def scratch_database(admin_url: str, prefix: str) -> str:
    """A new empty database next to ``admin_url``'s; its URL in the async form
    DATABASE_URL takes. Drop it with :func:`drop_scratch_database`."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    _admin_sql(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_scratch_database(admin_url: str, url: str) -> None:
    from sqlalchemy.engine import make_url

    _admin_sql(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _admin_sql(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (CREATE/DROP DATABASE), on its own engine."""
    from sqlalchemy import create_engine, text

    from shared.settings import sync_database_url

    admin = create_engine(sync_database_url(admin_url), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(statement))
    finally:
        admin.dispose()


def isolated_config(state_dir: Path, database_url: str, **overrides: Any) -> StackConfig:
    """A stack next to anything else on this machine: free ports, a Pub/Sub project and
    Redis/Neo4j names of its own, the given (scratch) database."""
    run = uuid.uuid4().hex[:8]
    return StackConfig(
        state_dir=state_dir,
        project=f"sim-{run}",
        ports=StackPorts.free(),
        database_url=database_url,
        isolate=f"sim{run}",
        explicit_env_wins=False,
        own_project=True,
        **overrides,
    )


def entries_of(entries: Iterable[TimelineEntry], source: Source) -> list[TimelineEntry]:
    return [e for e in entries if e.source == source]
