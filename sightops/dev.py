"""`make dev`: the whole system on this machine, with a live timeline.

Starts the services (scripts/services/up.sh), migrates the dev database, starts the
cloud stand-ins and every function under functions-framework, wires topics and push
subscriptions, then prints each message on every topic and each function outcome as it
happens. Ctrl-C stops everything it started (services that were already running are
left running).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from rich.console import Console

from sightops.topology import FUNCTIONS, TOPICS, dead_letter_topic

ROOT = Path(__file__).resolve().parents[1]
STATE = Path(os.environ.get("SIGHTOPS_STATE", ROOT / ".local"))

STANDIN_PORTS = {"cloudrun": 8701, "slack": 8702, "secretmanager": 8703, "sightapi": 8704}
SLACK_WEBHOOK_PATH = "/services/T0LOCAL/B0LOCAL/devwebhooksecret"
SLACK_SECRET = "slack-webhook-url"  # noqa: S105 - the secret's name, not its value
# alert_intake's Basic-auth password lives in the Secret Manager stand-in (by reference).
INTAKE_SECRET = "alert-intake-password"  # noqa: S105 - the secret's name, not its value
INTAKE_USER = "monitoring"
INTAKE_PASSWORD = "dev-intake-password"  # noqa: S105 - local development only
#: buildTriggerId of tests/fixtures/golden/cloudbuild/success_triggered.json: the local
#: stand-in for the CI trigger whose SUCCESS builds migrate acts on.
DEV_CI_TRIGGER_ID = "5d2f8a61-93c4-4b7e-a0d2-1c6e9f3b7a48"


def dev_env() -> dict[str, str]:
    """Environment for every process `make dev` starts (all local, no cloud)."""
    env = dict(os.environ)
    env.setdefault("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}")
    env.setdefault("GCP_PROJECT", "sight-local")
    env.setdefault("CLOUD_RUN_ENDPOINT", f"http://127.0.0.1:{STANDIN_PORTS['cloudrun']}")
    env.setdefault("SECRET_MANAGER_ENDPOINT", f"http://127.0.0.1:{STANDIN_PORTS['secretmanager']}")
    env.setdefault(
        "SLACK_WEBHOOK_URL", f"http://127.0.0.1:{STANDIN_PORTS['slack']}{SLACK_WEBHOOK_PATH}"
    )
    env.setdefault("ROLLBACK__SMOKE_URL", f"http://127.0.0.1:{STANDIN_PORTS['sightapi']}")
    env.setdefault("NOTIFY__CONFIG_FILE", str(ROOT / "config" / "notify.yaml"))
    env.setdefault("NOTIFY__INTAKE_USERNAME", INTAKE_USER)
    env.setdefault(
        "NOTIFY__INTAKE_PASSWORD",
        f"projects/{env['GCP_PROJECT']}/secrets/{INTAKE_SECRET}/versions/latest",
    )
    # migrate acts on builds of its CI triggers only (docs/migrate.md): locally, the trigger
    # of the golden build `make dev` suggests publishing, for the service the stand-ins run.
    env.setdefault(
        "MIGRATE__SELECTOR",
        json.dumps({"trigger_ids": [DEV_CI_TRIGGER_ID], "services": ["sight-api"]}),
    )
    env.setdefault("LOG_LEVEL", "INFO")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Dev:
    def __init__(self, console: Console, ready_file: Path | None = None) -> None:
        self.console = console
        self.ready_file = ready_file
        self.children: list[tuple[str, subprocess.Popen[str]]] = []
        self.record = STATE / "run" / "dev-started"
        self.stopping = threading.Event()
        self.subscriptions: list[str] = []
        self.env = dev_env()

    # ---- lifecycle -------------------------------------------------------------
    def up(self) -> None:
        started = time.monotonic()
        (STATE / "run").mkdir(parents=True, exist_ok=True)
        (STATE / "log").mkdir(parents=True, exist_ok=True)
        self.step("services", self._services)
        self.step("database migrations", self._migrate)
        self.step("cloud stand-ins", self._standins)
        self.step("functions", self._functions)
        self.step("topics and subscriptions", self._pubsub)
        elapsed = time.monotonic() - started
        self._print_where(elapsed)
        if self.ready_file:
            self.ready_file.write_text(json.dumps({"ready_s": elapsed}))

    def step(self, name: str, action: Callable[[], None]) -> None:
        t0 = time.monotonic()
        with self.console.status(f"starting {name}…"):
            action()
        self.console.print(f"[green]✓[/] {name} ({time.monotonic() - t0:.1f}s)")

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

    def _spawn(self, name: str, argv: list[str], port: int, on_line: Callable[[str], None]) -> None:
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
        log = (STATE / "log" / f"{name}.log").open("a")
        threading.Thread(target=self._pump, args=(proc.stdout, log, on_line), daemon=True).start()
        wait_for_port(port, 30, proc)

    def _standins(self) -> None:
        seed = STATE / "run" / "secrets-seed.json"
        seed.write_text(
            json.dumps(
                {
                    SLACK_SECRET: f"http://127.0.0.1:{STANDIN_PORTS['slack']}{SLACK_WEBHOOK_PATH}",
                    INTAKE_SECRET: INTAKE_PASSWORD,
                }
            )
        )
        seed.chmod(0o600)
        argv = [
            sys.executable,
            "-m",
            "standins",
            "all",
            "--seed",
            str(seed),
            "--cloudrun-seed",
            str(ROOT / "dev" / "cloudrun-seed.json"),
        ]
        for name, port in STANDIN_PORTS.items():
            argv += [f"--{name}-port", str(port)]
        self._spawn("standins", argv, STANDIN_PORTS["secretmanager"], lambda _l: None)

    def _functions(self) -> None:
        for fn in FUNCTIONS:
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
                str(fn.port),
            ]
            self._spawn(fn.name, argv, fn.port, self._function_line)

    def _pubsub(self) -> None:
        from sightops.pubsub_admin import setup

        self.subscriptions = setup(self.env["PUBSUB_EMULATOR_HOST"], self.env["GCP_PROJECT"])
        threading.Thread(target=self._tail_topics, daemon=True).start()

    def down(self) -> None:
        self.stopping.set()
        if self.subscriptions:
            from sightops.pubsub_admin import teardown

            try:
                teardown(self.env["PUBSUB_EMULATOR_HOST"], self.subscriptions)
            except Exception as exc:  # the emulator may already be gone: nothing to clean
                self.console.print(f"[yellow]subscriptions not removed: {type(exc).__name__}[/]")
        for _name, proc in reversed(self.children):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for _name, proc in self.children:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(
            [str(ROOT / "scripts/services/down.sh"), "--record", str(self.record)],
            check=False,
            env=self.env,
        )
        self.console.print("[bold]stopped[/] everything `make dev` started")

    def exited_child(self) -> bool:
        """True (and says which) when a child process has died."""
        for name, proc in self.children:
            if proc.poll() is not None:
                self.console.print(
                    f"[red]{name} exited with {proc.returncode}; see .local/log/{name}.log[/]"
                )
                return True
        return False

    # ---- output --------------------------------------------------------------
    def _print_where(self, elapsed: float) -> None:
        e = self.env
        self.console.rule(f"[bold green]sight-ops is up[/] in {elapsed:.1f}s")
        rows = [
            ("PostgreSQL", f"127.0.0.1:{e.get('PG_PORT', '54329')} (db sight)"),
            ("Redis", f"127.0.0.1:{e.get('REDIS_PORT', '63799')}"),
            ("Neo4j (Bolt)", f"bolt://127.0.0.1:{e.get('NEO4J_BOLT_PORT', '7688')}"),
            ("Pub/Sub emulator", e["PUBSUB_EMULATOR_HOST"]),
            ("Cloud Run stand-in", e["CLOUD_RUN_ENDPOINT"]),
            ("Secret Manager stand-in", e["SECRET_MANAGER_ENDPOINT"]),
            ("Slack sink", f"http://127.0.0.1:{STANDIN_PORTS['slack']}/_admin/messages"),
        ]
        rows += [(f"function {fn.name}", f"http://127.0.0.1:{fn.port}") for fn in FUNCTIONS]
        for name, where in rows:
            self.console.print(f"  {name:<26} {where}")
        self.console.print(
            "  try: [bold]sightops events publish --file "
            "tests/fixtures/golden/cloudbuild/success_triggered.json[/]"
        )
        self.console.rule("timeline (Ctrl-C stops everything)")

    def _pump(self, stream: TextIO | None, log: TextIO, on_line: Callable[[str], None]) -> None:
        if stream is None:
            return
        for line in stream:
            log.write(line)
            log.flush()
            on_line(line)

    def _function_line(self, line: str) -> None:
        try:
            entry = json.loads(line)
        except ValueError:
            return
        labels = entry.get("logging.googleapis.com/labels") or {}
        if "outcome" not in labels and entry.get("severity") not in {"ERROR", "CRITICAL"}:
            return
        colour = {"handled": "green", "retry": "yellow", "rejected": "red", "failed": "red"}.get(
            labels.get("outcome", ""), "white"
        )
        self.timeline(f"[{colour}]{entry.get('message', '')}[/]")

    def timeline(self, text: str) -> None:
        self.console.print(f"[dim]{datetime.now().strftime('%H:%M:%S.%f')[:-3]}[/] {text}")

    def _tail_topics(self) -> None:
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        project = self.env["GCP_PROJECT"]
        topics = list(TOPICS) + [
            dead_letter_topic(fn.name, t) for fn in FUNCTIONS for t in fn.topics
        ]
        for topic in topics:

            def callback(message: Any, topic: str = topic) -> None:
                self.timeline(f"[cyan]→ {topic}[/] {describe(message.data, message.attributes)}")
                message.ack()

            subscriber.subscribe(f"projects/{project}/subscriptions/timeline--{topic}", callback)
        self.stopping.wait()


def describe(data: bytes, attributes: Any) -> str:
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
        return base64.b64encode(data[:30]).decode()


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[str] | None = None) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        with socket.socket() as sock:
            sock.settimeout(0.3)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"port {port} not open after {timeout_s}s")


def run(ready_file: Path | None = None) -> None:
    console = Console()
    dev = Dev(console, ready_file)

    def _stop(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # also when started where SIGINT was ignored (`&`)
    try:
        dev.up()
        while not dev.exited_child():
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        # A second Ctrl-C (or a signal forwarded twice) must not cut the clean-up short.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        dev.down()
