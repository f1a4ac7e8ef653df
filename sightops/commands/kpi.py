"""`sightops kpi`: read a project's KPIs, inspect their cache entry, request a refresh."""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from shared.runtime import Deps

kpi_app = typer.Typer(help="Dashboard KPIs and their cache (docs/kpi.md).", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(kpi_app, name="kpi")


def _project_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise typer.BadParameter(f"{raw!r} is not a project id (a UUID)") from None


@kpi_app.command("get")
def get(
    project_id: Annotated[str, typer.Argument(help="the project's UUID")],
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
) -> None:
    """A project's KPIs through the cache, exactly as the kpi function serves them."""
    from shared.kpi import ProjectNotFoundError, kpi_service
    from shared.runtime import process_deps

    pid = _project_id(project_id)
    deps = process_deps()
    try:  # a store that is down: the root group names it and the fix (docs/cli.md)
        kpis, result = kpi_service(deps).get_model(pid)
    except ProjectNotFoundError:
        console.print(f"[red]no project {pid}[/]")
        raise typer.Exit(1) from None
    finally:
        deps.close()
    if as_json:
        typer.echo(json.dumps(json.loads(result.value), indent=2))
        return
    table = Table("KPI", "value", title=f"{kpis.project_name} ({pid})")
    for name, value in kpis.model_dump(mode="json", exclude={"graph"}).items():
        table.add_row(name, str(value))
    for name, value in kpis.graph.model_dump().items():
        table.add_row(f"graph.{name}", str(value))
    console.print(table)
    console.print(
        f"cache: [bold]{result.status}[/] ({result.reason}); computed in {result.compute_ms:.1f}"
        f" ms, {time.time() - result.stored_at:.0f}s ago"
    )


@kpi_app.command("inspect")
def inspect(project_id: Annotated[str, typer.Argument(help="the project's UUID")]) -> None:
    """The project's cache entry: fresh, stale or missing; age; the lock, if held."""
    from shared.kpi import kpi_service
    from shared.runtime import process_deps

    pid = _project_id(project_id)
    deps = process_deps()
    try:
        cache = kpi_service(deps).cache
        entry, lock_ms = cache.peek(str(pid))
        key = cache.value_key(str(pid))
    finally:
        deps.close()
    if entry is None:
        console.print(f"{key}: [yellow]missing[/] (the next request computes it)")
    else:
        now = time.time()
        state = "[green]fresh[/]" if now < entry.fresh_until else "[yellow]stale[/]"
        console.print(
            f"{key}: {state}; stored {now - entry.stored_at:.0f}s ago, fresh for"
            f" {entry.fresh_until - now:.0f}s more, computed in {entry.delta_s * 1000:.1f} ms"
        )
    console.print(f"lock: held, expires in {lock_ms} ms" if lock_ms > 0 else "lock: not held")


@kpi_app.command("refresh")
def refresh(
    project_id: Annotated[str | None, typer.Argument(help="the project's UUID")] = None,
    all_active: Annotated[bool, typer.Option("--all", help="every active project")] = False,
    local: Annotated[
        bool,
        typer.Option("--local", help="compute in this process instead of publishing"),
    ] = False,
) -> None:
    """Precompute one project's KPIs (or all active ones): publish a refresh event to
    ``kpi-refresh`` for kpi_refresh to handle, or with ``--local`` do it here."""
    if project_id is None and not all_active:
        raise typer.BadParameter("give a PROJECT_ID or --all")
    if project_id is not None and all_active:
        raise typer.BadParameter("give a PROJECT_ID or --all, not both")
    pid = _project_id(project_id) if project_id else None
    if not local:
        _publish(pid)
        return
    from shared.runtime import process_deps

    deps = process_deps()
    try:
        _refresh_here(deps, pid)
    finally:
        deps.close()


def _refresh_here(deps: Deps, pid: uuid.UUID | None) -> None:
    """``kpi refresh --local``: one project, or every active one, in this process."""
    from shared.kpi import ProjectNotFoundError, kpi_service

    service = kpi_service(deps)
    if pid is None:
        report = service.refresh_all_active(deps.settings.kpi.refresh_budget_s)
        console.print(
            f"refreshed {len(report.refreshed)}, being computed elsewhere"
            f" {len(report.locked)}, failed {len(report.failed)}, not reached"
            f" {report.not_reached}"
        )
        for key, reason in report.failed.items():
            console.print(f"  [red]{key}[/]: {reason}")
        if report.failed:
            raise typer.Exit(1)
        return
    try:
        result = service.refresh(pid)
    except ProjectNotFoundError:
        console.print(f"[red]no project {pid}[/]")
        raise typer.Exit(1) from None
    if result is None:
        console.print(f"{pid}: being computed by another caller right now")
    else:
        console.print(f"{pid}: refreshed in {result.compute_ms:.1f} ms")


def _publish(project_id: uuid.UUID | None) -> None:
    from shared.events import EventType, KpiRefreshRequested, OpsEvent
    from shared.pubsub import Publisher
    from shared.settings import get_settings

    settings = get_settings()
    payload = (
        KpiRefreshRequested(project_id=str(project_id))
        if project_id
        else KpiRefreshRequested(all_active=True)
    )
    data, attributes = OpsEvent.new(
        EventType.KPI_REFRESH_REQUESTED, payload, source="sightops-cli"
    ).to_pubsub()
    publisher = Publisher(settings)
    try:
        message_id = publisher.publish(settings.topics.kpi_refresh, data, attributes)
    finally:
        publisher.close()
    console.print(f"published a refresh request to {settings.topics.kpi_refresh}: {message_id}")
