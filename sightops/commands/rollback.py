"""`sightops` commands for the rollback area: rollback, revisions, smoke (docs/rollback.md)."""

from __future__ import annotations

import getpass
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    from shared.runtime import Deps

console = Console()


def _deps() -> Deps:
    from shared.log import configure_logging
    from shared.runtime import Deps
    from shared.settings import get_settings

    settings = get_settings()
    configure_logging("WARNING")
    return Deps(settings)


def _actor() -> str:
    try:
        return f"manual:{getpass.getuser()}"
    except (KeyError, OSError):  # no user name in a bare container
        return "manual:unknown"


def rollback(
    service: Annotated[str, typer.Argument(help="Cloud Run service, e.g. sight-api")],
    to: Annotated[
        str | None, typer.Option("--to", help="revision to move 100% of traffic to")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="decide and report only")] = False,
    force: Annotated[
        bool,
        typer.Option("--force", help="skip the health and breaking-migration checks"),
    ] = False,
    region: Annotated[
        str | None, typer.Option(help="default: ROLLBACK__REGION / GCP_REGION")
    ] = None,
) -> None:
    """Move SERVICE's traffic back to the newest known-good revision (or --to).

    Same safety checks as the rollback function (--force skips them); recorded as manual.
    """
    from shared.rollback import Verdict, manual_rollback

    deps = _deps()
    try:
        report = manual_rollback(
            deps, service, to=to, dry_run=dry_run, force=force, actor=_actor(), region=region
        )
    finally:
        deps.close()
    colour = {
        Verdict.ROLLBACK: "green",
        Verdict.SKIP: "yellow",
    }.get(report.verdict, "red")
    console.print(f"[{colour}]{report.event.type.value}[/]: {report.reason}")
    if report.serving_after is not None:
        console.print(f"traffic now: {report.serving_after}")
    if not report.published:
        console.print(
            f"[yellow]{report.event.type.value} {report.event.id} was recorded but not "
            "published (Pub/Sub unreachable); notify has not reported it[/]"
        )
    if report.verdict not in (Verdict.ROLLBACK, Verdict.SKIP):
        raise typer.Exit(1)


def revisions(
    service: Annotated[str, typer.Argument(help="Cloud Run service, e.g. sight-api")],
    region: Annotated[
        str | None, typer.Option(help="default: ROLLBACK__REGION / GCP_REGION")
    ] = None,
    mark_good: Annotated[
        str | None, typer.Option("--mark-good", help="record this revision as known-good")
    ] = None,
    mark_bad: Annotated[
        str | None, typer.Option("--mark-bad", help="record this revision as bad")
    ] = None,
    reason: Annotated[str, typer.Option(help="why (with --mark-good/--mark-bad)")] = "",
) -> None:
    """SERVICE's revisions, newest first: created, Ready, traffic, tags, health."""
    from shared.db import transaction
    from shared.rollback import cloud_run_for, load_health, manual_mark

    deps = _deps()
    try:
        actor = _actor()
        for revision, health in ((mark_good, "good"), (mark_bad, "bad")):
            if revision:
                manual_mark(
                    deps,
                    service,
                    revision,
                    "good" if health == "good" else "bad",
                    reason or f"marked {health} by {actor}",
                    actor,
                )
                console.print(f"{revision} marked [bold]{health}[/]")
        config = deps.settings.rollback
        state = cloud_run_for(deps).read(
            config.project or deps.settings.gcp_project,
            region or config.region or deps.settings.gcp_region,
            service,
        )
        with transaction(deps.engine) as conn:
            health_by_revision = load_health(conn, service)
    finally:
        deps.close()
    serving = state.serving()
    tags: dict[str, list[str]] = {}
    for item in state.traffic:
        name = item.revision or (state.latest_ready_revision if item.type == "LATEST" else "")
        if item.tag and name:
            tags.setdefault(name, []).append(item.tag)
    table = Table("revision", "created", "ready", "traffic", "tags", "health", "why", title=service)
    for rev in reversed(state.revisions):
        known = health_by_revision.get(rev.name)
        health_text = known.health if known else "unknown"
        colour = {"good": "green", "bad": "red"}.get(health_text, "dim")
        table.add_row(
            rev.name,
            rev.create_time.strftime("%Y-%m-%d %H:%M:%S"),
            "yes" if rev.ready else "[red]no[/]",
            f"{serving[rev.name]}%" if rev.name in serving else "",
            ", ".join(tags.get(rev.name, [])),
            f"[{colour}]{health_text}[/]",
            (known.reason or "")[:60] if known else "",
        )
    console.print(table)


def smoke(
    service: Annotated[str, typer.Option(help="Cloud Run service")],
    revision: Annotated[str, typer.Option(help="revision under test")],
    url: Annotated[
        str | None, typer.Argument(help="base URL of the revision (default: ROLLBACK__SMOKE_URL)")
    ] = None,
    region: Annotated[str | None, typer.Option(help="default: GCP_REGION")] = None,
    build_id: Annotated[str | None, typer.Option(help="Cloud Build id, for the record")] = None,
    commit_sha: Annotated[str | None, typer.Option(help="commit, for the record")] = None,
    publish: Annotated[
        bool, typer.Option("--publish", help="publish sight.ops.smoke.* to smoke-tests")
    ] = False,
) -> None:
    """Run the smoke checks against URL; exit 1 if any fails (for CI)."""
    from shared.pubsub import Publisher
    from shared.secrets import Secrets
    from shared.settings import get_settings
    from shared.smoke import SmokeOptions
    from shared.smoke import smoke as run_smoke

    settings = get_settings()
    target = url or settings.rollback.smoke_url
    if not target:
        raise typer.BadParameter("give URL (or set ROLLBACK__SMOKE_URL)")
    options = SmokeOptions.from_settings(settings, Secrets(settings).resolve)
    event = run_smoke(
        target,
        service=service,
        region=region or settings.rollback.region or settings.gcp_region,
        revision=revision,
        options=options,
        build_id=build_id,
        commit_sha=commit_sha,
    )
    table = Table("check", "ok", "status", "ms", "error", title=f"{service} {revision} at {target}")
    for check in event.data.checks:
        table.add_row(
            check.name,
            "[green]yes[/]" if check.ok else "[red]no[/]",
            str(check.status_code or ""),
            f"{check.latency_ms:.0f}" if check.latency_ms is not None else "",
            check.error or "",
        )
    console.print(table)
    passed = all(check.ok for check in event.data.checks)
    console.print(f"[{'green' if passed else 'red'}]{event.type.value}[/] id={event.id}")
    if publish:
        publisher = Publisher(settings)
        try:
            message_id = publisher.publish_event(settings.topics.smoke_tests, event)
        finally:
            publisher.close()
        console.print(f"published to {settings.topics.smoke_tests} message {message_id}")
    if not passed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.command("rollback")(rollback)
    app.command("revisions")(revisions)
    app.command("smoke")(smoke)
