"""A simulation: an isolated stack, scenarios run on it one after the other, a verdict
for each (docs/simulate.md)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from sightops.simulate._harness import Harness, Recorder, ScenarioTimeout
from sightops.simulate._run import Facts, Row, Run
from sightops.simulate._scenarios import CANARY_PLAN, SCENARIOS
from sightops.stack import DEV_CI_TRIGGER_ID, ROOT, Stack, TimelineEntry, isolated_config

#: Grouping of the simulation's notify config: an alert group's first message after 1 s
#: (config/notify.yaml says 10 s, 5 s for critical), so a storm needs no long wait.
SIM_GROUP_WAIT = "1s"


class Check(BaseModel):
    name: str
    ok: bool
    detail: str = ""


class Verdict(BaseModel):
    """A scenario's outcome: its checks, the facts they judged and the timeline."""

    scenario: str
    summary: str
    passed: bool
    checks: list[Check]
    facts: Facts
    timeline: list[Row]
    error: str | None = None
    notes: list[str] = []


class Simulation:
    """Start an isolated stack (scratch database, own Pub/Sub project, free ports), run
    scenarios on it, stop it and drop the database. Reuse one for several scenarios:
    each gets a service of its own."""

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        admin_url: str | None = None,
        follow: Callable[[TimelineEntry], None] | None = None,
        keep_state: bool = False,
    ) -> None:
        self._own_state = state_dir is None
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="sightops-sim-"))
        self.admin_url = admin_url or _admin_url()
        self.recorder = Recorder(follow)
        self.keep_state = keep_state
        self.database_url: str | None = None
        self.stack: Stack | None = None
        self.harness: Harness | None = None
        # The canary scenarios' services are opted in when the stack starts (sightops
        # deploy and the canary function read CANARY__SERVICES once): one name each.
        run = uuid.uuid4().hex[:6]
        self.canary_services = {name: f"{name}-{run}" for name, s in SCENARIOS.items() if s.canary}
        self._ran: set[str] = set()

    def start(self) -> Simulation:
        from sightops.stack import scratch_database

        self.database_url = scratch_database(self.admin_url, "sightops_sim")
        migrations = self.state_dir / "migrations"
        migrations.mkdir(parents=True, exist_ok=True)
        extra = {
            # migrate acts on the CI trigger's builds, of any (scenario) service
            "MIGRATE__SELECTOR": json.dumps({"trigger_ids": [DEV_CI_TRIGGER_ID]}),
            "MIGRATE__VERSION_LOCATIONS": json.dumps(
                [str(ROOT / "alembic" / "versions"), str(migrations)]
            ),
            "SIGHTOPS_SIM_MIGRATIONS": str(migrations),
            "NOTIFY__CONFIG_FILE": str(self._notify_config()),
            "TRACE__EXPORTER": "local",
            "CANARY__SERVICES": json.dumps(
                {service: CANARY_PLAN for service in self.canary_services.values()}
            ),
            # no latency baseline before the step: the service is seconds old
            "CANARY__BASELINE_S": "0",
        }
        config = isolated_config(self.state_dir, self.database_url, extra_env=extra)
        self.stack = Stack(config, sink=self.recorder)
        try:
            self.stack.start()
        except BaseException:
            self.stop()
            raise
        self.harness = Harness(self.stack, self.recorder)
        return self

    def _notify_config(self) -> Path:
        import yaml

        config = yaml.safe_load((ROOT / "config" / "notify.yaml").read_text())
        config.setdefault("grouping", {})["group_wait"] = SIM_GROUP_WAIT
        for route in config.get("routes", []):
            if "group_wait" in (route.get("grouping") or {}):
                route["grouping"]["group_wait"] = SIM_GROUP_WAIT
        path = self.state_dir / "notify.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        return path

    def stop(self) -> None:
        from sightops.stack import drop_scratch_database

        if self.harness is not None:
            self.harness.close()
        if self.stack is not None:
            self.stack.stop()
        if self.database_url is not None:
            drop_scratch_database(self.admin_url, self.database_url)
            self.database_url = None
        if self._own_state and not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)

    def __enter__(self) -> Simulation:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def run(self, name: str, *, timeout_s: float = 60.0) -> Verdict:
        scenario = SCENARIOS[name]
        assert self.harness is not None, "start() the simulation first"
        service = self.canary_services.get(name)
        if service is not None and name in self._ran:
            raise ValueError(f"{name} runs once per simulation: its service is opted in by name")
        self._ran.add(name)
        run = Run(self.harness, name, timeout_s=timeout_s, service=service)
        error = None
        try:
            scenario.drive(run)
        except ScenarioTimeout as exc:
            error = str(exc)
        except Exception as exc:
            error = f"{type(exc).__name__}: {exc}"
            run.notes.append("".join(traceback.format_exception(exc))[-2000:])
        finally:
            run.close()
        facts, timeline = run.facts()
        checks = [Check(name=n, ok=ok, detail=d) for n, ok, d in scenario.expect(facts)]
        if error:
            checks.insert(0, Check(name="the scenario ran to its end", ok=False, detail=error))
        return Verdict(
            scenario=name,
            summary=scenario.summary,
            passed=all(c.ok for c in checks),
            checks=checks,
            facts=facts,
            timeline=timeline,
            error=error,
            notes=run.notes,
        )


def _admin_url() -> str:
    """The database next to which scratch databases are made: DATABASE_URL's server."""
    from shared.settings import Settings

    explicit = os.environ.get("DATABASE_URL")
    if explicit:
        return explicit
    return Settings().database_url.get_secret_value()


def render(verdict: Verdict, console: Any) -> None:
    """The verdict as a human reads it: the timeline, then each check."""
    from rich.markup import escape

    f = verdict.facts
    console.rule(f"[bold]{verdict.scenario}[/]: {escape(verdict.summary)}")
    console.print(f"service {f.service}  release {f.release_id or '-'}")
    colours = {
        "topic": "cyan",
        "function": "white",
        "deploy": "magenta",
        "traffic": "bold green",
        "slack": "yellow",
        "action": "blue",
        "note": "dim",
    }
    for row in verdict.timeline:
        colour = colours.get(row.source, "white")
        console.print(
            f"[dim]{row.t_s:+8.3f}s[/] [{colour}]{row.source:<8}[/] {escape(row.text[:160])}"
        )
    for c in verdict.checks:
        mark = "[green]✓[/]" if c.ok else "[red]✗[/]"
        detail = "" if c.ok else f"  [dim]{escape(c.detail[:300])}[/]"
        console.print(f"  {mark} {escape(c.name)}{detail}")
    word = "[bold green]PASS[/]" if verdict.passed else "[bold red]FAIL[/]"
    console.print(f"verdict: {word}")
