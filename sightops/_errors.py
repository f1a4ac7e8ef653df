"""What an operator can meet, as one line with the fix: never a traceback (docs/cli.md, "Errors").

One mapper for every command: the root command group (sightops/cli.py) hands whatever a
command raises to :func:`explain`, which names the cause (no Google credentials, which
service is unreachable and where, bad input) and how to fix it. A command needs no
try/except of its own. Whatever is not recognised here is a bug and keeps its traceback.

Exit codes: 1 the command ran and the answer is "no" (a failed smoke check, a blocked
migration), 2 bad input or configuration, 3 the environment: no credentials, a service
unreachable or refusing us.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.settings import Settings

EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3

CREDENTIALS_FIX = (
    "run `gcloud auth application-default login`, or start `make dev` for the local stack"
)
#: Locally, what starts a service that does not answer.
SERVICES_FIX = "is `make dev` running? (`make services-up` starts the services alone)"
STANDIN_FIX = "is `make dev` running? (it serves the local stand-in)"


@dataclass(frozen=True)
class Failure:
    """One line for the operator and the process's exit code."""

    message: str
    exit_code: int


class Unreachable(Exception):
    """A service that does not answer, found before a call would wait for it."""

    def __init__(self, service: str, where: str) -> None:
        super().__init__(f"{service} unreachable at {where}")
        self.service = service
        self.where = where


@dataclass(frozen=True)
class _Service:
    name: str
    modules: tuple[str, ...]  # code that talks to it: found in a traceback, it names the service
    where: Callable[[Settings], str]
    setting: str
    local_fix: str = SERVICES_FIX


def _host_port(url: str, default_port: int) -> str:
    """``host:port`` of a URL: never its user, password or path (a Slack path is a secret)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url if "//" in url else f"//{url}")
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or default_port}"


def _postgres(s: Settings) -> str:
    from sqlalchemy.engine import make_url

    url = make_url(s.database_url_sync)
    return f"{url.host or '127.0.0.1'}:{url.port or 5432}/{url.database or ''}"


def _pubsub(s: Settings) -> str:
    if s.pubsub_emulator_host and s.environment != "production":
        return s.pubsub_emulator_host
    return "pubsub.googleapis.com"


SERVICES = (
    _Service("PostgreSQL", ("sqlalchemy", "pg8000", "shared.db"), _postgres, "DATABASE_URL"),
    _Service(
        "Redis",
        ("redis", "shared.cache"),
        lambda s: _host_port(s.redis_url.get_secret_value(), 6379),
        "REDIS_URL",
    ),
    _Service("Neo4j", ("neo4j", "shared.graph"), lambda s: s.neo4j_uri, "NEO4J_URI"),
    _Service(
        "Pub/Sub",
        (
            "google.cloud.pubsub",
            "google.cloud.pubsub_v1",
            "google.pubsub",
            "google.pubsub_v1",  # where the generated clients' calls are
            "shared.pubsub",
            "sightops.pubsub_admin",
        ),
        _pubsub,
        "PUBSUB_EMULATOR_HOST",
    ),
    _Service(
        "the Cloud Run Admin API",
        ("google.cloud.run_v2", "shared.rollback._cloudrun"),
        lambda s: s.cloud_run_endpoint or "run.googleapis.com",
        "CLOUD_RUN_ENDPOINT",
        STANDIN_FIX,
    ),
    _Service(
        "Secret Manager",
        ("google.cloud.secretmanager", "shared.secrets"),
        lambda s: s.secret_manager_endpoint or "secretmanager.googleapis.com",
        "SECRET_MANAGER_ENDPOINT",
        STANDIN_FIX,
    ),
    _Service(
        "the Slack webhook",
        ("slack_sdk", "shared.slack"),
        lambda s: (
            _host_port(s.slack_webhook_url.get_secret_value(), 443)
            if s.slack_webhook_url
            else "(unset)"
        ),
        "SLACK_WEBHOOK_URL",
        STANDIN_FIX,
    ),
)
_BY_NAME = {service.name: service for service in SERVICES}


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and its causes, outermost first (each once)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _modules(tb: TracebackType | None) -> list[str]:
    names: list[str] = []
    while tb is not None:
        names.append(str(tb.tb_frame.f_globals.get("__name__", "")))
        tb = tb.tb_next
    return names


def _service_of(exc: BaseException) -> _Service | None:
    """The service a failure comes from: by the exception's type, else by the deepest
    frame of ours or of a client library that talks to one service."""
    import neo4j.exceptions as neo4j_errors
    import redis.exceptions as redis_errors
    from sqlalchemy.exc import SQLAlchemyError

    chain = list(_chain(exc))
    for item in chain:
        if isinstance(item, Unreachable):
            return _BY_NAME.get(item.service)
        if isinstance(item, SQLAlchemyError):
            return _BY_NAME["PostgreSQL"]
        if isinstance(item, redis_errors.RedisError):
            return _BY_NAME["Redis"]
        if isinstance(item, neo4j_errors.Neo4jError | neo4j_errors.DriverError):
            return _BY_NAME["Neo4j"]
    for item in reversed(chain):  # the root cause first, its deepest frame first
        for module in reversed(_modules(item.__traceback__)):
            for service in SERVICES:
                if any(module == m or module.startswith(f"{m}.") for m in service.modules):
                    return service
    return None


def _is_outage(exc: BaseException) -> bool:
    """True when something did not answer: refused, timed out, unresolvable, retried out."""
    import socket

    import httpx
    import neo4j.exceptions as neo4j_errors
    import redis.exceptions as redis_errors
    import requests
    from google.api_core import exceptions as gexc
    from sqlalchemy.exc import InterfaceError, OperationalError

    from shared.errors import TransientError

    outages = (
        Unreachable,
        ConnectionError,  # refused, reset
        TimeoutError,
        socket.gaierror,  # a host name that does not resolve
        requests.ConnectionError,  # the REST transport of Google's clients
        requests.Timeout,
        TransientError,
        httpx.TransportError,
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.RetryError,
        OperationalError,
        InterfaceError,
        redis_errors.ConnectionError,
        redis_errors.TimeoutError,
        neo4j_errors.ServiceUnavailable,
        neo4j_errors.SessionExpired,
        neo4j_errors.TransientError,  # the server is starting, or busy: try again
    )
    return any(isinstance(item, outages) for item in _chain(exc))


def _root_name(exc: BaseException) -> str:
    """The root cause's type, skipping private ones (grpc's ``_InactiveRpcError``)."""
    names = [
        "not listening" if isinstance(item, Unreachable) else type(item).__name__
        for item in reversed(list(_chain(exc)))
    ]
    return next((n for n in names if not n.startswith("_")), names[0])


def _where(service: _Service, settings: Settings | None) -> str:
    if settings is None:
        return f"(see {service.setting})"
    try:
        return f"{service.where(settings)} ({service.setting})"
    except Exception:  # a malformed URL: the name of the setting is enough
        return f"({service.setting})"


def _fix(service: _Service | None, settings: Settings | None) -> str:
    if settings is not None and settings.environment == "production":
        return "check the network, the setting, and that the service is up"
    return service.local_fix if service else SERVICES_FIX


def _settings_error(exc: BaseException) -> Failure | None:
    """A setting the environment gives that does not validate: name it, never its value."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError) or exc.title != "Settings":
        return None
    first = exc.errors()[0]
    name = "__".join(str(part) for part in first["loc"]).upper()
    return Failure(
        f"invalid setting {name}: {first['msg']} (fix the environment variable; docs/cli.md)",
        EXIT_USAGE,
    )


def _database_state(exc: BaseException, settings: Settings | None) -> Failure | None:
    """PostgreSQL answered, but refused the login, lacks the database or the schema."""
    from shared.db import sqlstate

    code = next((c for c in map(sqlstate, _chain(exc)) if c), None)
    if code is None:
        return None
    where = _where(_BY_NAME["PostgreSQL"], settings)
    if code.startswith("28"):
        return Failure(
            f"PostgreSQL refused the login at {where}: check DATABASE_URL's user and password",
            EXIT_UNAVAILABLE,
        )
    if code == "3D000":
        return Failure(
            f"the database at {where} does not exist: create it, or start `make dev`",
            EXIT_UNAVAILABLE,
        )
    if code == "42P01":
        return Failure(
            f"the ops tables do not exist at {where}: the database is not migrated"
            " (`alembic upgrade head`)",
            EXIT_UNAVAILABLE,
        )
    return None


def _google(exc: BaseException, settings: Settings | None) -> Failure | None:
    """Credentials: none found, refused, or not allowed."""
    from google.api_core import exceptions as gexc
    from google.auth import exceptions as auth_errors

    service = _service_of(exc)
    api = f" for {service.name}" if service else ""
    for item in _chain(exc):
        if isinstance(item, auth_errors.DefaultCredentialsError):
            return Failure(f"no Google credentials{api}: {CREDENTIALS_FIX}", EXIT_UNAVAILABLE)
        if isinstance(item, auth_errors.RefreshError):
            return Failure(
                f"Google credentials{api} could not be refreshed: run"
                " `gcloud auth application-default login` again",
                EXIT_UNAVAILABLE,
            )
        if isinstance(item, gexc.PermissionDenied | gexc.Unauthenticated | gexc.Forbidden):
            return Failure(
                f"{service.name if service else 'a Google API'} refused the request"
                f" ({type(item).__name__}): check the account's roles (docs/deploy.md)",
                EXIT_UNAVAILABLE,
            )
    return None


def explain(exc: BaseException, settings: Settings | None) -> Failure | None:
    """The one line for ``exc`` (redacted), or None when it is a bug (keep the traceback).

    ``settings`` says where each service is; None when they could not be read."""
    from shared.errors import ConfigError, SecretError, SightOpsError
    from shared.log import redact

    failure = (
        _settings_error(exc)
        or _google(exc, settings)
        or _database_state(exc, settings)
        or _neo4j_login(exc, settings)
    )
    if failure is None and _is_outage(exc):
        service = _service_of(exc)
        if service is not None:
            failure = Failure(
                f"{service.name} is unreachable at {_where(service, settings)}"
                f" ({_root_name(exc)}): {_fix(service, settings)}",
                EXIT_UNAVAILABLE,
            )
        elif isinstance(exc, SightOpsError):
            failure = Failure(f"{exc}: {_fix(None, settings)}", EXIT_UNAVAILABLE)
    if failure is None:
        failure = _refused(exc)
    if failure is None and isinstance(exc, ConfigError):
        failure = Failure(f"configuration: {exc}", EXIT_USAGE)
    if failure is None and isinstance(exc, SecretError):
        failure = Failure(f"{exc}: check the secret and SECRET_MANAGER_ENDPOINT", EXIT_UNAVAILABLE)
    if failure is None and isinstance(exc, SightOpsError):
        failure = Failure(str(exc), 1)
    if failure is None:
        return None
    return Failure(redact(failure.message), failure.exit_code)


def _refused(exc: BaseException) -> Failure | None:
    """What was asked cannot be done as asked (`sightops dlq`: an unknown id, a message
    already replayed, a topic to give): its message says what to change. Outages behind
    it were named above."""
    from shared.dlq import DlqError

    return Failure(str(exc), EXIT_USAGE) if isinstance(exc, DlqError) else None


def _neo4j_login(exc: BaseException, settings: Settings | None) -> Failure | None:
    import neo4j.exceptions as neo4j_errors

    if any(isinstance(item, neo4j_errors.AuthError) for item in _chain(exc)):
        return Failure(
            f"Neo4j refused the login at {_where(_BY_NAME['Neo4j'], settings)}:"
            " check NEO4J_USER and NEO4J_PASSWORD",
            EXIT_UNAVAILABLE,
        )
    return None


def require_listening(service: str, host: str, port: int, timeout_s: float = 0.5) -> None:
    """Raise :class:`Unreachable` at once when nothing listens at ``host:port`` (a local
    emulator), instead of letting a client retry against it for a minute."""
    import socket

    with socket.socket() as sock:
        sock.settimeout(timeout_s)
        if sock.connect_ex((host, port)) != 0:
            raise Unreachable(service, f"{host}:{port}")
