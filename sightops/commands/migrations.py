"""`sightops migrations lint|status|resolve-partial`: the migrate function's checks and
its one operator action, from a terminal.

``lint`` needs no database: it renders migrations offline, exactly as the function does,
and exits 1 on findings that would block a deploy (CI runs it as ``make lint-migrations``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

console = Console()
migrations_app = typer.Typer(help="Schema migrations (docs/migrate.md).", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(migrations_app, name="migrations")


@migrations_app.command("lint")
def lint(
    since: Annotated[
        str | None,
        typer.Option(help="lint only the migrations after this revision (default: all)"),
    ] = None,
    versions: Annotated[
        list[Path] | None,
        typer.Option(help="revision directories (default: alembic.ini's); repeatable"),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="machine-readable report")] = False,
) -> None:
    """Lint migrations; exit 1 if any finding would block a deploy.

    From base (CI), each migration is judged alone: only tables it creates itself are new.
    With --since REV, the migrations after REV are judged as one pending set, exactly as
    migrate would on a database at REV.
    """
    from shared.migrate import AlembicRunner, RenderError, blocking, lint_migrations
    from shared.migrate._lint import destructive_migrations

    runner = AlembicRunner(version_locations=versions)
    try:
        rendered = runner.render(runner.script(), since)
    except RenderError as exc:
        where = f"migration {exc.migration}" if exc.migration else "the migrations"
        typer.echo(
            f"error: could not render {where} offline ({type(exc.error).__name__}: "
            f"{exc.error}); migrate renders before it applies, so it would fail the same way",
            err=True,
        )
        raise typer.Exit(2) from exc
    findings = lint_migrations(rendered, scope="pending" if since else "migration")
    blocked = blocking(findings)
    breaking = bool(destructive_migrations(findings))
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "migrations": [m.label for m in rendered],
                    "findings": [f.model_dump() for f in findings],
                    "blocking": len(blocked),
                    "breaking": breaking,
                },
                indent=2,
            )
        )
    else:
        if findings:
            table = Table("migration", "rule", "severity", "allowed", "statement", "why")
            for f in findings:
                colour = "green" if f.allowed else ("yellow" if f.severity == "info" else "red")
                table.add_row(
                    f.migration,
                    f"[{colour}]{f.rule}[/]",
                    f.severity,
                    "yes" if f.allowed else "no",
                    f.statement[:80],
                    f.message,
                )
            console.print(table)
        console.print(
            f"{len(rendered)} migration(s) linted, {len(findings)} finding(s), "
            f"{len(blocked)} blocking" + (", breaking (allowed destructive)" if breaking else "")
        )
        for f in blocked:  # one plain line each: readable in any CI log, greppable
            typer.echo(f"BLOCKING {f.migration}: {f.rule}: {f.message}")
        if blocked:
            console.print(
                "Fix them, or allow a rule in the migration with a visible comment:\n"
                '  # sightops: allow=<rule> reason="why it is safe here"\n'
                "See docs/runbooks/migration-blocked-by-lint.md"
            )
    if blocked:
        raise typer.Exit(1)


@migrations_app.command("status")
def status(
    limit: Annotated[int, typer.Option(help="how many recent runs to show")] = 10,
) -> None:
    """PostgreSQL current vs head, graph version vs latest file, the last migrate runs.

    A store that cannot be read is shown beside the other, then its failure is raised for
    the root group to name the cause and the fix (docs/cli.md, "Errors")."""
    from shared.graph import create_driver
    from shared.migrate import migration_status
    from shared.settings import get_settings

    settings = get_settings()
    driver = create_driver(settings) if settings.migrate.graph_enabled else None
    try:
        st = migration_status(settings, driver, limit=limit)
    finally:
        if driver is not None:
            driver.close()

    if st.postgres_error:
        console.print(f"PostgreSQL: [red]unavailable[/] ({st.postgres_error})")
    else:
        state = "[green]at head[/]" if not st.postgres_pending else "[yellow]behind[/]"
        console.print(
            f"PostgreSQL: current [bold]{st.postgres_current}[/], head [bold]{st.postgres_head}[/]"
            f" {state}"
            + (f", pending {', '.join(st.postgres_pending)}" if st.postgres_pending else "")
        )
        if st.lock_holder:
            console.print(f"  migration lock held by {st.lock_holder}")
    if st.graph_error:
        console.print(f"Neo4j: [red]unavailable[/] ({st.graph_error})")
    elif st.graph is not None:
        g = st.graph
        state = "[green]at latest[/]" if not g.pending else "[yellow]behind[/]"
        console.print(
            f"Neo4j: version [bold]{g.current}[/], latest file [bold]{g.latest}[/] {state}"
            + (f", pending {', '.join(f'V{v:04d}' for v in g.pending)}" if g.pending else "")
        )
        for problem in g.problems:
            console.print(f"  [red]{problem}[/]")
    if st.runs:
        table = Table(
            "started",
            "status",
            "service",
            "build",
            "postgres",
            "graph",
            "breaking",
            "error",
            title="last migrate runs",
        )
        for run in st.runs:
            table.add_row(*_run_row(run))
        console.print(table)
    if st.failures:
        raise st.failures[0]
    if st.graph and st.graph.problems:
        raise typer.Exit(1)


def _run_row(run: dict[str, Any]) -> list[str]:
    detail = run["detail"] or {}
    pg = detail.get("postgres") or {}
    graph = detail.get("graph") or {}
    colour = {"succeeded": "green", "failed": "red"}.get(run["status"], "yellow")
    return [
        str(run["started_at"])[:19],
        f"[{colour}]{run['status']}[/]",
        run["service"] or "",
        str(detail.get("build_id") or "")[:12],
        f"{pg.get('from')} -> {pg.get('to')}",
        f"{graph.get('from')} -> {graph.get('to')}",
        "yes" if detail.get("breaking") else "",
        # A skipped build (one migrate does not select) has a reason instead of an error.
        (detail.get("error") or detail.get("reason") or "")[:60],
    ]


@migrations_app.command("resolve-partial")
def resolve_partial_cmd(
    revision: Annotated[str, typer.Argument(help="the partly applied revision, e.g. 0007")],
    note: Annotated[str, typer.Option(help="what was done by hand (kept in the run's record)")],
    actor: Annotated[str, typer.Option(help="who did it")] = "operator",
) -> None:
    """Let migrate run REVISION again after its partly applied parts were undone by hand.

    migrate refuses to repeat a migration whose first parts committed (a failure after an
    autocommit_block() step). Undo those parts first (docs/runbooks/migration-failed.md);
    if you finished the migration by hand instead, `alembic stamp REVISION` is enough.
    """
    from datetime import UTC, datetime

    from sqlalchemy.exc import SQLAlchemyError

    from shared.db import create_db_engine, transaction
    from shared.migrate import resolve_partial
    from shared.settings import get_settings

    if not note.strip():
        raise typer.BadParameter("say what was done by hand", param_hint="--note")
    engine = create_db_engine(get_settings())
    try:
        with transaction(engine) as conn:
            builds = resolve_partial(
                conn, revision, note=note.strip(), actor=actor, now=datetime.now(UTC)
            )
    except SQLAlchemyError as exc:
        console.print(f"[red]database unavailable or refused the update[/]: {type(exc).__name__}")
        raise typer.Exit(1) from exc
    finally:
        engine.dispose()
    if not builds:
        console.print(f"no unresolved partial application of {revision} is recorded; nothing to do")
        raise typer.Exit(1)
    console.print(
        f"resolved the partial application of {revision} recorded by build(s) "
        f"{', '.join(builds)}; the next selected build runs {revision} from its start"
    )
