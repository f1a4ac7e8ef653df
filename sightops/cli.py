"""The ``sightops`` command line: operators' and developers' entry point."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from typer._click.exceptions import NoArgsIsHelpError, UsageError  # typer vendors click
from typer.core import TyperGroup

if TYPE_CHECKING:
    from typer._click import Context

    from shared.settings import Settings


class _Sightops(TyperGroup):
    """The root group: what any command raises becomes one line with the fix, never a
    traceback (sightops/_errors.py; docs/cli.md, "Errors"). Bugs keep their traceback."""

    def invoke(self, ctx: Context) -> Any:
        from sightops._errors import EXIT_USAGE, explain

        try:
            return super().invoke(ctx)
        except NoArgsIsHelpError:
            raise  # prints the group's help
        except UsageError as exc:
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx else ""
            typer.echo(f"error: {exc.format_message()}{where}", err=True)
            raise typer.Exit(EXIT_USAGE) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:
            failure = explain(exc, _settings_or_none())
            if failure is None:
                raise
            typer.echo(f"error: {failure.message}", err=True)
            raise typer.Exit(failure.exit_code) from None


def _settings_or_none() -> Settings | None:
    from shared.settings import get_settings

    try:
        return get_settings()
    except Exception:  # the settings themselves are what failed
        return None


app = typer.Typer(
    cls=_Sightops, help="sight-ops: operations automation for Sight.", no_args_is_help=True
)
events_app = typer.Typer(help="Publish and inspect events.", no_args_is_help=True)
pubsub_app = typer.Typer(help="Pub/Sub emulator wiring.", no_args_is_help=True)
app.add_typer(events_app, name="events")
app.add_typer(pubsub_app, name="pubsub")

console = Console()


_ENDPOINTS_KEY = "sightops.endpoints"


@app.callback()
def _main(
    ctx: typer.Context,
    local: Annotated[
        bool,
        typer.Option(
            "--local/--no-local",
            help="use the endpoints of a running `make dev` (default; never in production)",
        ),
    ] = True,
) -> None:
    """sight-ops: operations automation for Sight."""
    from shared.log import configure_logging
    from shared.settings import get_settings
    from sightops.endpoints import load_endpoints

    # Before the settings are read: a running `make dev` fills in what the environment
    # does not say (docs/cli.md). `dev` itself is the stack, so it reads no other's file.
    loaded = load_endpoints(local=local and ctx.invoked_subcommand != "dev")
    settings = get_settings()
    # Logs as JSON on stderr: stdout is the command's own output (tables, JSON reports).
    # Warnings only unless LOG_LEVEL says otherwise: a terminal wants the answer, not INFO.
    explicit = "LOG_LEVEL" in os.environ
    configure_logging(settings.log_level if explicit else "WARNING", to_stderr=True)
    if not explicit:  # the driver warns at each retry; the command says the outcome once
        logging.getLogger("neo4j").setLevel(logging.ERROR)
    logging.getLogger("sightops.cli").debug(loaded.describe())
    ctx.meta[_ENDPOINTS_KEY] = loaded


def _register_areas() -> None:
    from sightops.commands import (
        backup,
        canary,
        deploy,
        dlq,
        housekeeping,
        kpi,
        maintain,
        migrations,
        notify,
        report,
        rollback,
        settings,
        simulate,
    )

    for area in (
        migrations,
        rollback,
        deploy,
        canary,
        notify,
        kpi,
        report,
        simulate,
        housekeeping,
        maintain,
        backup,
        dlq,
        settings,
    ):
        area.register(app)


_register_areas()

_TOPIC_BY_TYPE_PREFIX = {
    "sight.ops.smoke.": "smoke-tests",
    "sight.ops.kpi.": "kpi-refresh",
    "sight.ops.report.requested": "kpi-refresh",
    "sight.ops.maintain.requested": "maintenance",
    "sight.ops.backup.requested": "backup-requests",
    "sight.ops.": "ops-events",
}


def topic_for(data: bytes, attributes: dict[str, str]) -> str:
    """Where a message belongs, from what it is (same rules as the design's topics)."""
    if "buildId" in attributes:
        return "cloud-builds"
    if "budgetId" in attributes:
        return "billing-budget"
    event_type = attributes.get("type", "")
    for prefix, topic in _TOPIC_BY_TYPE_PREFIX.items():
        if event_type.startswith(prefix):
            return topic
    try:
        if "incident" in json.loads(data):
            return "monitoring-alerts"
    except (ValueError, TypeError, RecursionError):  # not JSON, or nested past the parser
        pass
    raise typer.BadParameter("cannot tell the topic of this message; pass --topic")


def _parse_json(raw: str | bytes, what: str) -> Any:
    """Operator input as JSON, or a usage error (exit 2) saying where it is broken."""
    try:
        return json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise typer.BadParameter(f"{what} is not valid JSON: {exc}") from None
    except RecursionError:
        raise typer.BadParameter(f"{what} is nested too deeply to read as JSON") from None


#: What each topic carries, for the refusal of a mismatching --topic.
_WHAT_BY_TOPIC = {
    "cloud-builds": "a Cloud Build notification",
    "monitoring-alerts": "a Cloud Monitoring incident",
    "smoke-tests": "a smoke result",
    "ops-events": "an ops event",
    "kpi-refresh": "a KPI refresh request",
    "billing-budget": "a Cloud Billing budget notification",
    "maintenance": "a maintenance request",
    "backup-requests": "a backup or drill request",
}
#: Keys only a Cloud Build resource has (camelCase, as the API and gcloud print it).
_BUILD_KEYS = frozenset({"createTime", "logUrl", "projectId", "steps", "buildTriggerId"})


def _is_build_resource(body: Any) -> bool:
    return isinstance(body, dict) and "id" in body and not _BUILD_KEYS.isdisjoint(body)


def build_message(
    file: Path | None, event_type: str | None, data: str | None, service: str | None
) -> tuple[bytes, dict[str, str]]:
    """The Pub/Sub message (data, attributes) for what the operator has at hand: our own
    payload with --type, a Pub/Sub message {data, attributes}, a Cloud Build resource
    (`gcloud builds describe --format=json`), or a Monitoring incident body (docs/cli.md)."""
    from shared.events import PAYLOAD_TYPES, EventType, OpsEvent

    body: Any = _parse_json(file.read_bytes(), f"--file {file}") if file else None
    if isinstance(body, list):
        raise typer.BadParameter(
            f"--file {file} holds a JSON array; give one object (a message, a payload,"
            " or one build: `gcloud builds describe ID --format=json`)"
        )
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
    if not event_type:
        if isinstance(body, dict) and "incident" in body:
            # As Monitoring's Pub/Sub channel publishes it: the webhook body, no attributes.
            return json.dumps(body).encode(), {}
        if _is_build_resource(body):
            # As Cloud Build publishes it: the resource as data; buildId and status
            # attributes (a build without status is STATUS_UNKNOWN, proto3 drops it).
            status = body.get("status") or "STATUS_UNKNOWN"
            return json.dumps(body).encode(), {"buildId": str(body["id"]), "status": str(status)}
        raise typer.BadParameter(
            "cannot tell what this is: give --type for one of our payloads, or a file"
            " holding a Pub/Sub message {data, attributes}, a Cloud Build resource"
            " (`gcloud builds describe ID --format=json`) or a Monitoring incident"
        )
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


def checked_topic(
    raw: bytes, attributes: dict[str, str], topic: str | None, settings: Settings
) -> str:
    """The topic a message goes to, once its consumers' own parser accepts it; a --topic
    that is not that topic is refused (nothing is published)."""
    from shared.errors import InvalidEventError
    from shared.events import (
        parse_budget_message,
        parse_build_message,
        parse_incident_message,
        parse_ops_message,
    )

    parsers = {
        "cloud-builds": parse_build_message,
        "monitoring-alerts": parse_incident_message,
        "smoke-tests": parse_ops_message,
        "ops-events": parse_ops_message,
        "kpi-refresh": parse_ops_message,
        "billing-budget": parse_budget_message,
        "maintenance": parse_ops_message,
        "backup-requests": parse_ops_message,
    }
    configured: dict[str, str] = {
        kind: str(getattr(settings.topics, kind.replace("-", "_"))) for kind in parsers
    }
    try:
        kind = topic_for(raw, attributes)
    except typer.BadParameter:
        # Nothing in the message says what it is: the topic named decides its parser.
        kind = next((k for k, name in configured.items() if topic in (k, name)), "")
        if not kind:
            raise
    try:
        parsers[kind](raw, attributes)
    except InvalidEventError as exc:
        raise typer.BadParameter(f"not a valid {kind} message: {exc}") from None
    target = configured[kind]
    if topic is not None and topic not in (target, kind):
        raise typer.BadParameter(
            f"{topic!r} is not where {_WHAT_BY_TOPIC[kind]} goes: that is {target!r}",
            param_hint="--topic",
        )
    return target


def _require_emulator(settings: Settings) -> None:
    """An emulator that is not listening is said at once (the client would retry it)."""
    from sightops._errors import require_listening

    if settings.pubsub_emulator_host and settings.environment != "production":
        host, _, port = settings.pubsub_emulator_host.rpartition(":")
        if port.isdigit():
            require_listening("Pub/Sub", host or "127.0.0.1", int(port))


@events_app.command("publish")
def events_publish(
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            exists=True,
            readable=True,
            help="JSON: a payload (with --type), a Pub/Sub message {data, attributes},"
            " a Cloud Build resource (gcloud builds describe --format=json),"
            " or a Monitoring incident",
        ),
    ] = None,
    event_type: Annotated[str | None, typer.Option("--type", "-t")] = None,
    data: Annotated[str | None, typer.Option("--data", "-d", help="payload as JSON")] = None,
    service: Annotated[str | None, typer.Option("--service")] = None,
    topic: Annotated[
        str | None, typer.Option("--topic", help="refused unless it is the message's topic")
    ] = None,
) -> None:
    """Publish any event (ours, a Cloud Build message, an incident) to its topic."""
    from rich.markup import escape

    from shared.pubsub import Publisher
    from shared.settings import get_settings

    settings = get_settings()
    raw, attributes = build_message(file, event_type, data, service)
    target = checked_topic(raw, attributes, topic, settings)
    _require_emulator(settings)
    publisher = Publisher(settings)
    try:
        message_id = publisher.publish(target, raw, attributes)
    finally:
        publisher.close()
    console.print(
        f"published to [bold]{escape(target)}[/] message {message_id} {escape(str(attributes))}"
    )


@pubsub_app.command("setup")
def pubsub_setup() -> None:
    """Create topics and push/dead-letter subscriptions on the emulator (idempotent)."""
    from shared.settings import get_settings
    from sightops.pubsub_admin import setup

    s = get_settings()
    if s.environment == "production":
        raise typer.BadParameter(
            "this wires the local emulator (`make dev` runs it); in production"
            " terraform/pubsub.tf creates topics and subscriptions (docs/deploy.md)"
        )
    if not s.pubsub_emulator_host:
        raise typer.BadParameter("PUBSUB_EMULATOR_HOST is not set")
    _require_emulator(s)
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
def status(ctx: typer.Context) -> None:
    """Services, schema revision, and the most recent automated actions."""
    from rich.markup import escape
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
    for name, endpoint in (
        ("Cloud Run stand-in", s.cloud_run_endpoint),
        ("Secret Manager stand-in", s.secret_manager_endpoint),
    ):
        if endpoint:
            checks.append((name, *_host_port(endpoint, 80)))
    table = Table("service", "where", "state")
    for name, host, port in checks:
        table.add_row(
            name, f"{host}:{port}", "[green]up[/]" if _open(host, port) else "[red]down[/]"
        )
    console.print(table)
    loaded = ctx.meta.get(_ENDPOINTS_KEY)
    if loaded is not None:
        console.print(f"[dim]{escape(loaded.describe())}[/]")
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
    finally:  # a database that is down is said by the root group (sightops/_errors.py)
        engine.dispose()


def _host_port(url: str, default: int) -> tuple[str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default


if __name__ == "__main__":
    app()
