"""The ``sightops`` command line: operators' and developers' entry point."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="sight-ops: operations automation for Sight.", no_args_is_help=True)
events_app = typer.Typer(help="Publish and inspect events.", no_args_is_help=True)
pubsub_app = typer.Typer(help="Pub/Sub emulator wiring.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(pubsub_app, name="pubsub")

console = Console()


@app.callback()
def _main() -> None:
    """sight-ops: operations automation for Sight."""
    from shared.log import configure_logging
    from shared.settings import get_settings

    # Logs as JSON on stderr: stdout is the command's own output (tables, JSON reports).
    configure_logging(get_settings().log_level, to_stderr=True)


def _register_areas() -> None:
    from sightops.commands import dlq, housekeeping, kpi, migrations, notify, rollback

    for area in (migrations, rollback, notify, kpi, housekeeping, dlq):
        area.register(app)


_register_areas()

_TOPIC_BY_TYPE_PREFIX = {
    "sight.ops.smoke.": "smoke-tests",
    "sight.ops.kpi.": "kpi-refresh",
    "sight.ops.": "ops-events",
}


def topic_for(data: bytes, attributes: dict[str, str]) -> str:
    """Where a message belongs, from what it is (same rules as the design's topics)."""
    if "buildId" in attributes:
        return "cloud-builds"
    event_type = attributes.get("type", "")
    for prefix, topic in _TOPIC_BY_TYPE_PREFIX.items():
        if event_type.startswith(prefix):
            return topic
    try:
        if "incident" in json.loads(data):
            return "monitoring-alerts"
    except (ValueError, TypeError):
        pass
    raise typer.BadParameter("cannot tell the topic of this message; pass --topic")


def _parse_json(raw: str | bytes, what: str) -> Any:
    """Operator input as JSON, or a usage error (exit 2) saying where it is broken."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise typer.BadParameter(f"{what} is not valid JSON: {exc}") from None


def build_message(
    file: Path | None, event_type: str | None, data: str | None, service: str | None
) -> tuple[bytes, dict[str, str]]:
    from shared.events import PAYLOAD_TYPES, EventType, OpsEvent

    body: Any = _parse_json(file.read_bytes(), f"--file {file}") if file else None
    if isinstance(body, dict) and "attributes" in body and "data" in body:
        if event_type:  # a fresh event (new id and time) with that message's payload
            body = body["data"]
        else:  # exactly that message
            payload, attributes = body["data"], body["attributes"]
            if not isinstance(attributes, dict):
                raise typer.BadParameter(
                    "a Pub/Sub message's attributes must be an object of strings,"
                    f" not {type(attributes).__name__}"
                )
            raw = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
            return raw, {str(k): str(v) for k, v in attributes.items()}
    if isinstance(body, dict) and "incident" in body and not event_type:
        return json.dumps(body).encode(), {}
    if not event_type:
        raise typer.BadParameter("give --type (or a file in Pub/Sub message form)")
    try:
        kind = EventType(event_type)
    except ValueError:
        known = ", ".join(t.value for t in EventType)
        raise typer.BadParameter(f"unknown event type {event_type!r}; known: {known}") from None
    fields = body if body is not None else _parse_json(data or "{}", "--data")
    try:
        payload_model = PAYLOAD_TYPES[kind].model_validate(fields)
    except ValueError as exc:
        raise typer.BadParameter(f"invalid {event_type} payload: {exc}") from None
    event = OpsEvent.new(kind, payload_model, source="sightops-cli", service=service)
    return event.to_pubsub()


@events_app.command("publish")
def events_publish(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            exists=True,
            readable=True,
            help="JSON: a payload, or a Pub/Sub message {data, attributes}",
        ),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="payload as JSON")] = None,
    service: Annotated[str | None, typer.Option("--service")] = None,
    topic: Annotated[str | None, typer.Option("--topic")] = None,
) -> None:
    """Publish any event (ours, a Cloud Build message, an incident) to its topic."""
    from shared.pubsub import Publisher
    from shared.settings import get_settings

    raw, attributes = build_message(file, event_type, data, service)
    target = topic or topic_for(raw, attributes)
    publisher = Publisher(get_settings())
    message_id = publisher.publish(target, raw, attributes)
    publisher.close()
    console.print(f"published to [bold]{target}[/] message {message_id} {attributes}")


@pubsub_app.command("setup")
def pubsub_setup() -> None:
    """Create topics and push/dead-letter subscriptions on the emulator (idempotent)."""
    from shared.settings import get_settings
    from sightops.pubsub_admin import setup

    s = get_settings()
    if not s.pubsub_emulator_host:
        raise typer.BadParameter("PUBSUB_EMULATOR_HOST is not set")
    for path in setup(s.pubsub_emulator_host, s.gcp_project):
        console.print(path)


@app.command()
def dev(
    ready_file: Annotated[Path | None, typer.Option(help="write readiness JSON here")] = None,
) -> None:
    """Run everything locally with a live timeline (what `make dev` runs)."""
    from sightops.dev import run

    run(ready_file)


def _open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


@app.command()
def status() -> None:
    """Services, schema revision, and the most recent automated actions."""
    from sqlalchemy import text
    from sqlalchemy.engine import make_url

    from shared.db import create_db_engine
    from shared.settings import get_settings

    s = get_settings()
    pg = make_url(s.database_url_sync)
    checks: list[tuple[str, str, int]] = [
        ("PostgreSQL", pg.host or "127.0.0.1", pg.port or 5432),
        ("Redis", *_host_port(s.redis_url.get_secret_value(), 6379)),
        ("Neo4j", *_host_port(s.neo4j_uri, 7687)),
    ]
    if s.pubsub_emulator_host:
        emulator_host, _, emulator_port = s.pubsub_emulator_host.rpartition(":")
        checks.append(("Pub/Sub emulator", emulator_host, int(emulator_port)))
    table = Table("service", "where", "state")
    for name, host, port in checks:
        table.add_row(
            name, f"{host}:{port}", "[green]up[/]" if _open(host, port) else "[red]down[/]"
        )
    console.print(table)
    engine = create_db_engine(s, pool_size=1, max_overflow=0)
    try:
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
            console.print(f"database schema revision: [bold]{revision}[/]")
            rows = conn.execute(
                text(
                    "SELECT started_at, kind, service, status, actor FROM ops.actions"
                    " ORDER BY started_at DESC LIMIT 10"
                )
            ).all()
            rejected = conn.execute(text("SELECT count(*) FROM ops.rejected_events")).scalar()
        actions = Table("started", "kind", "service", "status", "actor", title="recent actions")
        for row in rows:
            actions.add_row(
                str(row.started_at)[:19], row.kind, row.service or "", row.status, row.actor
            )
        console.print(actions)
        console.print(f"rejected messages kept: {rejected}")
    except Exception as exc:
        console.print(f"[red]database not readable[/]: {type(exc).__name__}")
        raise typer.Exit(1) from None
    finally:
        engine.dispose()


def _host_port(url: str, default: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


if __name__ == "__main__":
    app()
