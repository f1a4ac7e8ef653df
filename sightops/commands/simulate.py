"""`sightops simulate SCENARIO`: a release through the real local stack, with a verdict
and its timeline (docs/simulate.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:
    from sightops.stack import TimelineEntry


def register(app: typer.Typer) -> None:
    """Add this area's command to the root app."""
    app.command("simulate")(simulate)


def simulate(
    scenario: Annotated[
        str,
        typer.Argument(
            help="green, failed-migration, bad-release, breaking-then-bad, late-alert, "
            "alert-storm, duplicates, canary-good, canary-bad, canary-slow, canary-human, or all"
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="the verdicts as JSON")] = False,
    follow: Annotated[
        bool, typer.Option("--follow", help="print the stack's timeline as it happens")
    ] = False,
    keep_state: Annotated[
        bool, typer.Option("--keep-state", help="keep the stack's logs and spans (printed)")
    ] = False,
    timeout: Annotated[
        float, typer.Option(help="seconds to wait for each step of a scenario", min=1)
    ] = 60.0,
) -> None:
    """Start an isolated local stack (scratch database, own Pub/Sub project, free ports;
    the services must run: `make services-up`, or next to `make dev`), drive SCENARIO
    through it, print the timeline and the verdict. Exit 1 when a check fails."""
    from sightops.simulate import SCENARIOS, Simulation, render

    names = list(SCENARIOS) if scenario == "all" else [scenario]
    if any(n not in SCENARIOS for n in names):
        known = ", ".join([*SCENARIOS, "all"])
        raise typer.BadParameter(f"unknown scenario {scenario!r}; known: {known}")
    console = Console(stderr=as_json)
    printer = _printer(console) if follow else None
    with console.status("starting an isolated stack…"):
        sim = Simulation(follow=printer, keep_state=keep_state).start()
    verdicts = []
    try:
        for name in names:
            with console.status(f"{name}: {SCENARIOS[name].summary}"):
                verdicts.append(sim.run(name, timeout_s=timeout))
            if not as_json:
                render(verdicts[-1], console)
    finally:
        sim.stop()
    if as_json:
        print(json.dumps([v.model_dump(mode="json") for v in verdicts], indent=2))
    if keep_state:
        console.print(f"logs and spans: {sim.state_dir}")
    if not all(v.passed for v in verdicts):
        raise typer.Exit(1)


def _printer(console: Console) -> Callable[[TimelineEntry], None]:
    from rich.markup import escape

    def show(entry: TimelineEntry) -> None:
        console.print(f"[dim]{entry.at.strftime('%H:%M:%S.%f')[:-3]}[/] {escape(entry.text)}")

    return show
