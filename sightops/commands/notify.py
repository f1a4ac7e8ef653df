"""`sightops notify`: check the configuration, preview a message, flush alert groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.table import Table

notify_app = typer.Typer(help="Slack notifications (docs/notify.md).", no_args_is_help=True)
console = Console()


def register(app: typer.Typer) -> None:
    """Add this area's commands and groups to the root app."""
    app.add_typer(notify_app, name="notify")


@notify_app.command("check-config")
def check_config(
    file: Annotated[Path, typer.Argument(help="notify YAML, e.g. config/notify.yaml")],
) -> None:
    """Validate a notify configuration file; exit 1 with the first problem."""
    from shared.errors import ConfigError
    from shared.notify import load_config

    try:
        config = load_config(file)
    except ConfigError as exc:
        console.print(f"[red]invalid[/]: {exc}")
        raise typer.Exit(1) from None
    table = Table("route", "matches", "webhook", "grouping", title=f"{file}: valid")
    for route in config.routes:
        match = route.match.model_dump(exclude_defaults=True)
        g = route.grouping.merged(config.grouping)
        grouping = " ".join(
            f"{name} {value:g}s"
            for name, value in (
                ("wait", g.group_wait),
                ("interval", g.group_interval),
                ("repeat", g.repeat_interval),
            )
            if value is not None
        )
        if g.group_by:
            grouping += f" by {','.join(g.group_by)}"
        table.add_row(
            route.name + (" (continue)" if route.continue_ else ""),
            json.dumps(match) if match else "anything",
            route.webhook,
            grouping or "defaults",
        )
    table.add_row("(default)", "anything else", config.default_webhook, "")
    console.print(table)


def _load_event(path: Path) -> tuple[bytes, dict[str, str]]:
    body: Any = json.loads(path.read_text())
    if isinstance(body, dict) and "data" in body and "attributes" in body:
        data = body["data"]
        raw = data.encode() if isinstance(data, str) else json.dumps(data).encode()
        return raw, {str(k): str(v) for k, v in body["attributes"].items()}
    return json.dumps(body).encode(), {}


def _show(block: dict[str, Any]) -> str:
    kind = block.get("type")
    if kind == "header":
        return f"[bold]{block['text']['text']}[/]"
    if kind == "section":
        parts = [block["text"]["text"]] if block.get("text") else []
        parts += [f["text"].replace("\n", ": ", 1) for f in block.get("fields", [])]
        return "\n".join(parts)
    if kind == "actions":
        return "  ".join(
            f"[link={e.get('url')}][{e['text']['text']}][/link]" for e in block["elements"]
        )
    if kind == "context":
        return "[dim]" + "  ".join(e.get("text", "") for e in block["elements"]) + "[/]"
    return f"({kind})"


@notify_app.command("preview")
def preview(
    event: Annotated[
        Path,
        typer.Argument(
            exists=True,
            readable=True,
            help="a Pub/Sub message {data, attributes} or an incident body",
        ),
    ],
    config: Annotated[Path | None, typer.Option(help="notify YAML (default: none)")] = None,
    raw: Annotated[bool, typer.Option("--json", help="print the Slack payload as JSON")] = False,
) -> None:
    """Render the message an event would produce, here in the terminal (nothing is sent)."""
    from rich.markup import escape

    from shared.errors import SightOpsError
    from shared.notify import load_config, parse, render, to_notice

    try:
        cfg = load_config(config)
        data, attributes = _load_event(event)
        parsed = parse(data, attributes)
    except (SightOpsError, ValueError) as exc:
        console.print(f"[red]cannot preview[/]: {exc}")
        raise typer.Exit(1) from None
    notice = to_notice(parsed, "preview")
    if notice is None:
        console.print("notify sends nothing for this event (not terminal, or not reported)")
        return
    message = render(notice, cfg)  # a single message, as notify sends it (alerts ungrouped)
    payload = message.to_dict()
    if raw:
        print(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    console.print(f"[dim]fallback text:[/] {escape(payload['text'])}")
    body = "\n\n".join(
        _show(b) if b.get("type") in {"header", "actions", "context"} else escape(_show(b))
        for b in payload["blocks"]
    )
    console.print(Panel(body, title=f"{notice.kind} · {notice.type} · {notice.severity}"))


@notify_app.command("flush")
def flush() -> None:
    """Flush every alert group that is due (what the scheduled notify_flush does)."""
    from shared.notify import notifier_for
    from shared.runtime import process_deps

    flushed = notifier_for(process_deps()).flush_due(limit=1000)
    console.print(f"flushed {flushed} group(s)")
