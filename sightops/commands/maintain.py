"""`sightops maintain run`: the routine database care, from a terminal (docs/maintain.md).

The same code the maintain function runs on Cloud Scheduler's request: under migrate's
advisory lock, one ``ops.actions`` row (recorded as manual), ``sight.ops.maintain.completed``.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightops.commands._common import manual_actor as _actor

maintain_app = typer.Typer(
    help="Routine database care: ANALYZE, index bloat, REINDEX CONCURRENTLY, Neo4j index "
    "states (docs/maintain.md).",
    no_args_is_help=True,
)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(maintain_app, name="maintain")


def _size(size: int | None) -> str:
    if size is None:
        return ""
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return ""  # pragma: no cover (the loop returns)


@maintain_app.command("run")
def run(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="estimate and record; rebuild nothing")
    ] = False,
) -> None:
    """Run the maintenance now: waits for a running migration (MAINTAIN__LOCK_WAIT_S),
    then ANALYZE, rebuild what is bloated, check Neo4j. Exit 1 when it was skipped or
    something needs attention."""
    from shared.maintain import run_by_hand
    from shared.runtime import Deps
    from shared.settings import get_settings

    deps = Deps(get_settings())
    try:  # a database that is down or not migrated: the root group says so (docs/cli.md)
        report, published = run_by_hand(deps, dry_run=dry_run, actor=_actor())
    finally:
        deps.close()
    result = report.result
    if result.status == "skipped":
        console.print(f"[yellow]skipped[/]: {escape(result.reason or '')}")
        raise typer.Exit(1)
    table = Table(
        "index",
        "method",
        "size",
        "fresh build",
        "bloat",
        "action",
        "why",
        title="maintain (dry run)" if result.dry_run else "maintain",
    )
    for care in report.detail["indexes"]:
        bloat = care["bloat_ratio"]
        table.add_row(
            escape(f"{care['schema_name']}.{care['index']}"),
            escape(care["method"]),
            _size(care["size_bytes"])
            + (f" → {_size(care['size_after_bytes'])}" if care["size_after_bytes"] else ""),
            _size(care["expected_bytes"]),
            "" if bloat is None else f"{bloat * 100:.0f} %",
            care["action"],
            escape(care["reason"]),
        )
    console.print(table)
    for graph in result.graph:
        colour = "red" if graph.problem else "yellow"
        said = graph.problem or f"{graph.population_percent or 0:.0f} % populated"
        console.print(f"[{colour}]Neo4j {graph.kind} {escape(graph.name)}[/]: {escape(said)}")
    for problem in result.problems:
        console.print(f"[red]problem[/]: {escape(problem)}")
    console.print(escape(report.summary()))
    if not published:
        console.print(
            "[yellow]recorded in ops.actions but not published (Pub/Sub unreachable);"
            " notify has not reported it[/]"
        )
    if result.wrong:
        raise typer.Exit(1)
