"""`make dev`: the whole system on this machine, with a live timeline.

A :class:`sightops.stack.Stack` with the fixed dev ports, the dev database and project
``sight-local``: starts the services (scripts/services/up.sh), migrates the dev database,
starts the cloud stand-ins, every function under functions-framework and the deploy
trigger, wires topics and push subscriptions, writes the endpoints file the CLI reads in
a second terminal (docs/cli.md), then prints each message on every topic and each
function outcome as it happens. Ctrl-C stops everything it started (services that were
already running are left running).
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from sightops.stack import (
    DEV_CI_TRIGGER_ID,
    INTAKE_PASSWORD,
    INTAKE_SECRET,
    INTAKE_USER,
    ROOT,
    SLACK_SECRET,
    SLACK_WEBHOOK_PATH,
    Stack,
    StackConfig,
    StackPorts,
    TimelineEntry,
    describe,
    stack_env,
    wait_for_port,
)
from sightops.topology import FUNCTIONS

__all__ = [
    "DEV_CI_TRIGGER_ID",
    "INTAKE_PASSWORD",
    "INTAKE_SECRET",
    "INTAKE_USER",
    "SLACK_SECRET",
    "SLACK_WEBHOOK_PATH",
    "STANDIN_PORTS",
    "STATE",
    "Dev",
    "describe",
    "dev_config",
    "dev_env",
    "run",
    "wait_for_port",
]

STATE = Path(os.environ.get("SIGHTOPS_STATE", ROOT / ".local"))
STANDIN_PORTS = dict(StackPorts.dev().standins)


def dev_config() -> StackConfig:
    """`make dev`'s stack: fixed ports (README, "What runs where"), project sight-local,
    the dev database (DATABASE_URL or the default), the seeded ``sight-api`` service."""
    return StackConfig(
        state_dir=STATE,
        project=os.environ.get("GCP_PROJECT", "sight-local"),
        ports=StackPorts.dev(),
        run_services=True,
        cloudrun_seed=ROOT / "dev" / "cloudrun-seed.json",
        canary_ticker=True,
    )


def dev_env() -> dict[str, str]:
    """Environment for every process `make dev` starts (all local, no cloud)."""
    config = dev_config()
    return stack_env(ports=config.ports, project=config.project, state_dir=config.state_dir)


class Dev:
    def __init__(self, console: Console, ready_file: Path | None = None) -> None:
        self.console = console
        self.ready_file = ready_file
        self.stack = Stack(dev_config(), sink=self.show)
        self.env = self.stack.env

    def up(self) -> None:
        started = time.monotonic()
        for name, action in self.stack.steps():
            t0 = time.monotonic()
            with self.console.status(f"starting {name}…"):
                action()
            self.console.print(f"[green]✓[/] {name} ({time.monotonic() - t0:.1f}s)")
        self._write_endpoints()
        elapsed = time.monotonic() - started
        self._print_where(elapsed)
        if self.ready_file:
            self.ready_file.write_text(json.dumps({"ready_s": elapsed}))

    def _write_endpoints(self) -> None:
        """So the CLI in a second terminal finds this stack (docs/cli.md)."""
        from sightops.endpoints import write_endpoints

        write_endpoints(self.env, self.stack.state_dir)

    def down(self) -> None:
        from sightops.endpoints import remove_endpoints

        remove_endpoints(self.stack.state_dir)
        self.stack.stop()
        self.console.print("[bold]stopped[/] everything `make dev` started")

    def exited_child(self) -> bool:
        """True (and says which) when a child process has died."""
        dead = self.stack.exited_child()
        if dead:
            name = dead.split(" ", 1)[0]
            self.console.print(f"[red]{dead}; see .local/log/{name}.log[/]")
        return dead is not None

    # ---- output --------------------------------------------------------------
    def _print_where(self, elapsed: float) -> None:
        e = self.env
        ports = self.stack.ports
        self.console.rule(f"[bold green]sight-ops is up[/] in {elapsed:.1f}s")
        rows = [
            ("PostgreSQL", f"127.0.0.1:{e.get('PG_PORT', '54329')} (db sight)"),
            ("Redis", f"127.0.0.1:{e.get('REDIS_PORT', '63799')}"),
            ("Neo4j (Bolt)", f"bolt://127.0.0.1:{e.get('NEO4J_BOLT_PORT', '7688')}"),
            ("Pub/Sub emulator", e["PUBSUB_EMULATOR_HOST"]),
            ("Cloud Run stand-in", e["CLOUD_RUN_ENDPOINT"]),
            ("Secret Manager stand-in", e["SECRET_MANAGER_ENDPOINT"]),
            ("Slack sink", f"{ports.url('slack')}/_admin/messages"),
            ("Cloud Monitoring stand-in", f"gRPC {ports.monitoring_target}"),
            ("Cloud Logging stand-in", f"gRPC {ports.logging_target}"),
        ]
        rows += [(f"function {fn.name}", ports.function_url(fn.name)) for fn in FUNCTIONS]
        for name, where in rows:
            self.console.print(f"  {name:<26} {where}")
        self.console.print("  try: [bold]sightops simulate green[/] (docs/simulate.md)")
        self.console.rule("timeline (Ctrl-C stops everything)")

    def show(self, entry: TimelineEntry) -> None:
        if entry.source == "topic":
            text = f"[cyan]{entry.text}[/]"
        elif entry.source == "function":
            labels = entry.fields.get("logging.googleapis.com/labels") or {}
            colour = {
                "handled": "green",
                "retry": "yellow",
                "rejected": "red",
                "failed": "red",
            }.get(labels.get("outcome", ""), "white")
            text = f"[{colour}]{entry.text}[/]"
        else:
            text = entry.text
        self.timeline(text)

    def timeline(self, text: str) -> None:
        from datetime import datetime

        self.console.print(f"[dim]{datetime.now().strftime('%H:%M:%S.%f')[:-3]}[/] {text}")


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
