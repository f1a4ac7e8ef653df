"""`sightops prune`: the scheduled pruning of receipts and rejected events, from a terminal.

The same code kpi_refresh runs on Cloud Scheduler's request (docs/schema.md, "Pruning").
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.command("prune")(prune)


def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="count what would be deleted; delete nothing")
    ] = False,
) -> None:
    """Delete receipts and rejected events past their retention, in bounded batches."""
    from shared.housekeeping import prune as run_prune
    from shared.housekeeping import receipts_floor
    from shared.runtime import process_deps

    deps = process_deps()
    settings = deps.settings
    try:  # a database that is down or not migrated: the root group says so (docs/cli.md)
        report = run_prune(deps.engine, settings, deps.clock(), dry_run=dry_run)
    finally:
        deps.close()
    table = Table(
        "table",
        "retention",
        "older than (UTC)",
        "would delete" if dry_run else "deleted",
        "batches",
        "complete",
        title="prune (dry run)" if dry_run else "prune",
    )
    for item in (report.receipts, report.rejected):
        table.add_row(
            item.table,
            _duration(item.retention_s),
            item.older_than.strftime("%Y-%m-%d %H:%M:%S"),
            str(item.rows),
            str(item.batches),
            "yes" if item.complete else "no: the next run continues",
        )
    console.print(table)
    floor = receipts_floor(settings).total_seconds()
    if settings.housekeeping.receipts_retention_s < floor:
        console.print(
            f"receipts retention {_duration(settings.housekeeping.receipts_retention_s)} is"
            f" below the floor {_duration(floor)} (largest maximum event age + margin):"
            " the floor applies"
        )


def _duration(seconds: float) -> str:
    days, rest = divmod(round(seconds), 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    parts = [
        f"{days}d" if days else "",
        f"{hours}h" if hours else "",
        f"{minutes}m" if minutes else "",
    ]
    return " ".join(p for p in parts if p) or f"{seconds:.0f}s"
