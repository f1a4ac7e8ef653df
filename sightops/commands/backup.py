"""`sightops backup now|list|restore-test|restore`: the backup function's work from a
terminal, with the same code (shared/backup; docs/backups.md).

``restore`` writes into a database or graph the operator names: it says what it is about
to do and asks first (``--yes`` skips the question), and a target already holding data is
refused unless ``--force``. What cannot be done as asked is one line (docs/cli.md).
"""

from __future__ import annotations

from datetime import UTC, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from sightops.commands._common import manual_actor as _actor
from sightops.commands._common import open_deps as _deps

if TYPE_CHECKING:
    from shared.backup import Manifest, RestoreReport
    from shared.runtime import Deps

backup_app = typer.Typer(
    help="Backups of PostgreSQL and Neo4j, proven by restore (docs/backups.md).",
    no_args_is_help=True,
)
console = Console()


class StoreChoice(StrEnum):
    postgres = "postgres"
    neo4j = "neo4j"


class PeriodChoice(StrEnum):
    daily = "daily"
    weekly = "weekly"
    manual = "manual"


def register(app: typer.Typer) -> None:
    """Add this area's commands to the root app."""
    app.add_typer(backup_app, name="backup")


def _stores(chosen: list[StoreChoice] | None) -> list[Any]:
    return [s.value for s in chosen] if chosen else ["postgres", "neo4j"]


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def _age(delta: timedelta | None) -> str:
    if delta is None:
        return "-"
    hours = delta.total_seconds() / 3600
    return f"{hours:.1f} h" if hours < 48 else f"{hours / 24:.1f} d"


def _items(manifest: Manifest) -> int:
    if manifest.graph is not None:
        return manifest.graph.nodes.count + manifest.graph.relationships.count
    return sum(t.rows for t in manifest.tables)


def _record(deps: Deps, kind: str, status: str, detail: dict[str, Any]) -> None:
    from shared.db import transaction
    from shared.runtime import write_action

    with transaction(deps.engine) as conn:
        write_action(
            conn, kind=kind, status=status, now=deps.clock(), actor=_actor(), detail=detail
        )


@backup_app.command("now")
def now(
    store: Annotated[
        list[StoreChoice] | None, typer.Option("--store", "-s", help="default: both")
    ] = None,
    period: Annotated[
        PeriodChoice, typer.Option(help="retention prefix: daily (30 d), weekly (84 d), manual")
    ] = PeriodChoice.manual,
    verify: Annotated[
        bool, typer.Option("--verify/--no-verify", help="also restore it into scratch targets")
    ] = False,
) -> None:
    """Take a backup of each store now (as the backup function does)."""
    from shared.backup import create_store, drill, take_backup
    from shared.backup._function import _backup_detail

    with _deps() as deps:
        bucket = create_store(deps.settings)
        table = Table("store", "backup", "objects", "size", "rows / items", "verified")
        failed = False
        for name in _stores(store):
            manifest = take_backup(name, deps, bucket, period=period.value)
            _record(deps, "backup", "succeeded", _backup_detail(manifest))
            verdict = "-"
            if verify:
                report = drill(manifest, deps.settings, bucket)
                _record_drill(deps, manifest, report)
                verdict = "[green]yes[/]" if report.ok else "[red]NO[/]"
                failed = failed or not report.ok
                if not report.ok:
                    _print_findings(report)
            table.add_row(
                name,
                manifest.backup_id,
                str(len(manifest.objects)),
                _size(manifest.total_bytes),
                str(_items(manifest)),
                verdict,
            )
        console.print(table)
        console.print(f"[dim]in {escape(bucket.location)}[/]")
    if failed:
        raise typer.Exit(1)


@backup_app.command("list")
def list_backups(
    store: Annotated[
        list[StoreChoice] | None, typer.Option("--store", "-s", help="default: both")
    ] = None,
) -> None:
    """Complete backups, newest first, and whether a drill verified each."""
    from shared.backup import create_store, list_manifests, staleness

    with _deps() as deps:
        bucket = create_store(deps.settings)
        manifests = [m for name in _stores(store) for m in list_manifests(bucket, name)]
        verified = _verified(deps, [m.backup_id for m in manifests])
        now_ = deps.clock()
        table = Table(
            "store", "backup", "taken (UTC)", "age", "size", "rows / items", "schema", "verified"
        )
        for m in sorted(manifests, key=lambda m: m.finished_at, reverse=True):
            schema = m.alembic_revision if m.store == "postgres" else m.graph_schema_version
            table.add_row(
                m.store,
                m.backup_id,
                m.finished_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M"),
                _age(now_ - m.finished_at),
                _size(m.total_bytes),
                str(_items(m)),
                str(schema if schema is not None else "-"),
                verified.get(m.backup_id, "-"),
            )
        console.print(table)
        for state in staleness(bucket, deps.settings, now_):
            if state.store not in _stores(store):
                continue
            word = "[red]STALE[/]" if state.stale else "[green]fresh[/]"
            console.print(
                f"{state.store}: newest backup {_age(state.age)} old (limit"
                f" {_age(state.limit)}): {word}"
            )


def _verified(deps: Deps, ids: list[str]) -> dict[str, str]:
    """backup id -> when a drill last verified it (ops.actions, kind restore_drill)."""
    from sqlalchemy import text

    if not ids:
        return {}
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT detail->>'backup_id' AS id, max(started_at) AS at FROM ops.actions"
                " WHERE kind = 'restore_drill' AND status = 'verified'"
                " AND detail->>'backup_id' = ANY(:ids) GROUP BY 1"
            ),
            {"ids": ids},
        ).all()
    return {row.id: row.at.astimezone(UTC).strftime("%Y-%m-%d %H:%M") for row in rows}


def _record_drill(deps: Deps, manifest: Manifest, report: RestoreReport) -> None:
    from shared.backup import verdict_event

    event = verdict_event(
        store_name=manifest.store,
        phase="drill",
        now=deps.clock(),
        manifest=manifest,
        report=report,
    )
    status = "verified" if report.ok else "failed"
    _record(deps, "restore_drill", status, event.data.model_dump(mode="json"))


def _print_findings(report: RestoreReport) -> None:
    for finding in report.findings:
        console.print(f"  [red]✗[/] {escape(str(finding))}")


@backup_app.command("restore-test")
def restore_test(
    store: Annotated[
        list[StoreChoice] | None, typer.Option("--store", "-s", help="default: both")
    ] = None,
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="this backup instead of the newest")
    ] = None,
) -> None:
    """Restore the newest backup of each store into scratch targets and compare it with
    its manifest (the drill; recorded in ops.actions). Exit 1 when one differs."""
    from shared.backup import create_store, drill, find_backup

    with _deps() as deps:
        bucket = create_store(deps.settings)
        failed = False
        for name in _stores(store):
            wanted = backup_id if backup_id and backup_id.startswith(name) else None
            if backup_id and wanted is None:
                continue
            manifest = find_backup(bucket, name, wanted)
            report = drill(manifest, deps.settings, bucket)
            _record_drill(deps, manifest, report)
            if report.ok:
                console.print(
                    f"[green]✓[/] {escape(report.summary())} in {report.duration_s:.1f} s"
                )
            else:
                failed = True
                console.print(f"[red]✗ {name} backup {escape(manifest.backup_id)} FAILED[/]")
                _print_findings(report)
    if failed:
        raise typer.Exit(1)


@backup_app.command("restore")
def restore(
    to: Annotated[
        str,
        typer.Option(
            "--to", help="a database URL (postgresql://...) or a Neo4j URI (bolt://, neo4j://)"
        ),
    ],
    backup_id: Annotated[
        str | None, typer.Option("--backup-id", help="default: the newest of the target's store")
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="replace what the target holds (otherwise refused)")
    ] = False,
) -> None:
    """Restore a backup into the target named, then compare it with the manifest."""
    from shared.backup import create_store, find_backup, restore_to

    store_name = "neo4j" if to.split(":", 1)[0].startswith(("bolt", "neo4j")) else "postgres"
    if backup_id and not backup_id.startswith(store_name):
        raise typer.BadParameter(
            f"backup {backup_id} is not a {store_name} backup, and --to names a {store_name}"
            " target",
            param_hint="--backup-id",
        )
    with _deps() as deps:
        bucket = create_store(deps.settings)
        manifest = find_backup(bucket, store_name, backup_id)  # type: ignore[arg-type]
        where = _described(to, store_name)
        console.print(
            f"restore {store_name} backup [bold]{escape(manifest.backup_id)}[/] (taken"
            f" {manifest.finished_at:%Y-%m-%d %H:%M} UTC, {_items(manifest)} rows / items)"
            f" into [bold]{escape(where)}[/]"
            + (": [red]what it holds now is REPLACED[/]" if force else "")
        )
        if not yes and not typer.confirm("go ahead?", default=False):
            console.print("nothing restored")
            raise typer.Exit(1)
        report = restore_to(manifest, deps.settings, bucket, to=to, force=force)
        if report.ok:
            console.print(f"[green]✓[/] {escape(report.summary())} in {report.duration_s:.1f} s")
            return
        console.print(f"[red]✗ restore of {escape(manifest.backup_id)} differs[/]")
        _print_findings(report)
    raise typer.Exit(1)


def _described(to: str, store_name: str) -> str:
    """The target without credentials."""
    if store_name == "neo4j":
        from urllib.parse import urlsplit

        parts = urlsplit(to)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 7687}"
    from shared.backup._service import target_from_url
    from shared.settings import get_settings

    return target_from_url(to, get_settings()).described
