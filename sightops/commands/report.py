"""`sightops report`: release metrics of a window, from the ledger (docs/metrics.md).

The same computation ``GET /v1/ops/metrics`` serves and the weekly digest posts, run here
against PostgreSQL directly (no cache: a terminal wants the numbers as of now).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

if TYPE_CHECKING:
    from shared.events import ReleaseReport, ServiceReleaseMetrics
    from shared.events._ops import AlertNoise


def register(app: typer.Typer) -> None:
    """Add this area's command to the root app."""
    app.command("report")(report)


def _when(raw: str, option: str) -> datetime:
    """An ISO date or date-time; naive values are UTC."""
    try:
        value = datetime.fromisoformat(raw)
    except ValueError:
        raise typer.BadParameter(
            f"{raw!r} is not an ISO date or date-time (e.g. 2025-06-02 or 2025-06-02T09:00Z)",
            param_hint=option,
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def window(
    days: int | None, since: str | None, until: str | None, now: datetime
) -> tuple[datetime, datetime]:
    """``[since, until)``: the last ``days`` days (28 by default) up to ``until`` (now)."""
    if days is not None and since is not None:
        raise typer.BadParameter("give --days or --since, not both", param_hint="--days")
    end = _when(until, "--until") if until else now
    start = _when(since, "--since") if since else end - timedelta(days=days or 28)
    if start >= end:
        raise typer.BadParameter("the window must end after it starts", param_hint="--since")
    return start, end


def report(
    service: Annotated[
        str | None, typer.Option("--service", "-s", help="one Cloud Run service (default: all)")
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", min=1, max=366, help="the last N days (default 28)"),
    ] = None,
    since: Annotated[str | None, typer.Option(help="window start, ISO (instead of --days)")] = None,
    until: Annotated[str | None, typer.Option(help="window end, ISO (default: now)")] = None,
    failure_window: Annotated[
        float,
        typer.Option(
            "--failure-window",
            min=0.01,
            max=720,
            help="hours after a promotion an auto_rollback incident counts against it",
        ),
    ] = 24.0,
    as_json: Annotated[bool, typer.Option("--json", help="print the JSON document")] = False,
) -> None:
    """Release metrics per service: DORA's four keys, the seed's targets, alert noise."""
    from shared.events import is_service_name
    from shared.kpi.release_report import compute_release_report, noise_rule
    from shared.runtime import process_deps

    if service is not None and not is_service_name(service):
        raise typer.BadParameter(
            f"{service!r} is not a Cloud Run service name", param_hint="--service"
        )
    console = Console()  # per call: the terminal's width now (COLUMNS)
    deps = process_deps()
    try:
        now = deps.clock()
        start, end = window(days, since, until, now)
        # An outage is the root group's one line with the fix (sightops/_errors.py).
        result = compute_release_report(
            deps.engine,
            since=start,
            until=end,
            now=now,
            service=service,
            failure_window=timedelta(hours=failure_window),
            noise=noise_rule(deps.settings),
        )
    finally:
        deps.close()
    if as_json:
        typer.echo(result.model_dump_json(indent=2))
        return
    _print(console, result)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _row(m: ServiceReleaseMetrics, name: str) -> list[str]:
    frequency = m.deployment_frequency
    return [
        name,
        str(m.promoted),
        str(m.failed),
        str(m.rollbacks),
        f"{frequency.per_week:g} ({frequency.bucket or '-'})",
        _span(m.lead_time.median_s),
        _pct(m.change_failure_rate.value),
        _span(m.time_to_restore.median_s),
        _span(m.incident_duration.median_s),
    ]


def _print(console: Console, result: ReleaseReport) -> None:
    stamp = "%Y-%m-%d %H:%M"
    table = Table(
        "service",
        "promoted",
        "failed",
        "rolled back",
        "per week",
        "lead time",
        "change failure",
        "restore",
        "incident open",
        title=(
            f"release metrics {result.since.strftime(stamp)} -> {result.until.strftime(stamp)}"
            f" UTC ({result.days:g} days)"
        ),
        caption="medians; lead time: build created -> promoted; restore: failure detected ->"
        " traffic on a good revision (docs/metrics.md)",
    )
    for metrics in result.services:
        table.add_row(*_row(metrics, escape(metrics.service or "")))
    if result.service is None:
        table.add_row(*_row(result.overall, "[bold]all services[/]"))
    console.print(table)
    targets = Table("target", "goal", "value", "result", title="the seed's targets")
    shown = {
        "deployment_success_rate": ("deployment success rate", _pct),
        "rollback_rate": ("rollback rate", _pct),
        "mttr_s": ("MTTR", _span),
    }
    for check in result.overall.targets:
        label, fmt = shown[check.name]
        goal = f"{check.op} {fmt(check.threshold)}"
        verdict = {True: "[green]pass[/]", False: "[red]fail[/]", None: "no data"}[check.ok]
        targets.add_row(label, goal, fmt(check.value), verdict)
    console.print(targets)
    for failure in result.overall.failures:
        console.print(
            escape(
                f"failed change {failure.release_id or failure.revision}: {failure.cause}"
                f" ({failure.evidence or 'no evidence id'})"
            ),
            highlight=False,
        )
    if result.alert_noise is not None:
        _print_noise(console, result.alert_noise)


def _print_noise(console: Console, noise: AlertNoise) -> None:
    """Likely false positives per alert policy and month; over the target in red."""
    window = _span(noise.close_within_s)
    if not noise.policies:
        console.print(
            f"alert noise: no incidents since {noise.counted_from:%Y-%m-%d}", highlight=False
        )
        return
    table = Table(
        "policy",
        "month",
        "incidents",
        "likely false",
        "result",
        title="alert noise",
        caption=f"likely false positive: closed by itself within {window}, nothing done on its"
        f" service meanwhile; target: at most {noise.max_per_month} a month per policy"
        " (docs/metrics.md)",
    )
    for row in noise.policies:
        month = row.month if row.month_complete else f"{row.month} (so far)"
        verdict = "[red]over target[/]" if row.over_target else "[green]ok[/]"
        table.add_row(
            escape(row.policy), month, str(row.incidents), str(row.likely_false_positives), verdict
        )
    console.print(table)
