"""`sightops canary status|tick|promote|rollback`: watch and steer canaries by hand
(docs/canary.md, "The function"; docs/runbooks/canary.md). The decisions go through the
function's own code (``shared.canary.Canaries``): same lock, same checks, same records.

No active canary for the service is a :class:`shared.canary.CanaryError` (one line, exit
1); an unreachable store or Cloud Run is one line naming it (sightops/_errors.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightops.commands._common import manual_actor as _actor
from sightops.commands._common import open_deps as _deps

if TYPE_CHECKING:
    from shared.canary import Report

canary_app = typer.Typer(
    help="Canaries: status, tick, promote, rollback (docs/runbooks/canary.md).",
    no_args_is_help=True,
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(canary_app, name="canary")


_COLOURS = {
    "started": "green",
    "step": "green",
    "promote": "green",
    "wait": "dim",
    "skip": "dim",
    "rollback": "yellow",
    "hold": "yellow",
    "frozen": "red",
    "stop": "red",
}


def _print(report: Report) -> None:
    if not report.decisions:
        console.print("no running canary")
    for decision in report.decisions:
        colour = _COLOURS.get(decision.kind, "white")
        console.print(f"[{colour}]{escape(decision.line())}[/]")
        if not decision.published:
            console.print(
                f"[yellow]event {decision.event_id} recorded but not published yet (Pub/Sub "
                "unreachable); the next tick publishes it[/]"
            )


@canary_app.command("status")
def status(
    service: Annotated[str | None, typer.Argument(help="Cloud Run service (default: all)")] = None,
) -> None:
    """The newest canaries, active ones first: split, step, latest evidence."""
    from shared.canary import canary_status

    with _deps() as deps:
        rows = canary_status(deps, service)
    table = Table(
        "service", "release", "revision", "stable", "status", "canary %", "step since", "why"
    )
    for row in rows:
        table.add_row(
            escape(row.service),
            escape(row.release_id),
            escape(row.revision),
            escape(row.stable_revision or ""),
            row.status + (" (dry run)" if row.dry_run else ""),
            f"{row.percent}%",
            row.step_started_at.strftime("%Y-%m-%d %H:%M:%S"),
            escape((row.reason or "")[:80]),
        )
    console.print(table)


@canary_app.command("tick")
def tick(
    service: Annotated[str | None, typer.Argument(help="Cloud Run service (default: all)")] = None,
    region: Annotated[str | None, typer.Option(help="only canaries in this region")] = None,
) -> None:
    """Analyse the running canaries now, as Cloud Scheduler's tick does."""
    from shared.canary import manual_tick

    with _deps() as deps:
        _print(manual_tick(deps, service, region))


@canary_app.command("promote")
def promote(
    service: Annotated[str, typer.Argument(help="Cloud Run service with an active canary")],
) -> None:
    """Give the active canary of SERVICE 100 % now (marked known-good), as you."""
    from shared.canary import manual_promote

    with _deps() as deps:
        report = manual_promote(deps, service, actor=_actor())
    _print(report)
    if any(d.kind != "promote" for d in report.decisions):
        raise typer.Exit(1)


@canary_app.command("rollback")
def rollback(
    service: Annotated[str, typer.Argument(help="Cloud Run service with an active canary")],
    force: Annotated[
        bool, typer.Option("--force", help="roll back even after a breaking migration")
    ] = False,
) -> None:
    """Move SERVICE back to its stable revision now (the canary marked bad), as you."""
    from shared.canary import manual_rollback

    with _deps() as deps:
        report = manual_rollback(deps, service, actor=_actor(), force=force)
    _print(report)
    if any(d.kind != "rollback" for d in report.decisions):
        raise typer.Exit(1)
