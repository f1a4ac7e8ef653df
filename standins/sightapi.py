"""Sight API stand-in: the endpoints the smoke runner checks, each breakable on demand.

Answers like Sight's FastAPI service does (JSON bodies, ``{"detail": ...}`` errors,
``401`` with ``WWW-Authenticate: Bearer``, ``422`` validation errors):

- ``GET  /health``                          -> ``{"status": "ok"}``
- ``GET  /docs``                            -> the Swagger UI page (HTML)
- ``GET  /api/health/db``                   -> ``{"status": "ok", "database": "postgresql"}``
- ``GET  /api/health/neo4j``                -> ``{"status": "ok", "neo4j": "connected"}``
- ``POST /api/auth/login``                  -> ``{"access_token", "token_type": "bearer"}``
  (JSON ``{"email", "password"}``, or the OAuth2 form ``username`` / ``password``)
- ``POST /api/projects/{id}/personas``      -> ``201`` the created persona (bearer token)

Any check can be made to fail (a status, a message, or a ``422`` validation error that
echoes the request body as FastAPI's does) or to be slow (a delay), for the next N
requests or until healed, through :class:`SightApiState` or ``/_admin/checks``.

An *image* can be made bad (``/_admin/images``): requests the Cloud Run stand-in forwards
from a revision of that image (header ``X-Standin-Image``) fail the chosen checks, answer
a fraction of 5xx (seeded) or come late. See ``docs/standins.md``.
"""

from __future__ import annotations

import logging
import random
import re
import secrets
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request

from standins._common import (
    JSON,
    Clock,
    FaultRule,
    FaultsAndLog,
    StandinError,
    add_fault_admin_routes,
    admin_json,
    install_request_hooks,
    json_response,
    rfc3339,
    utcnow,
)

logger = logging.getLogger("standins.sightapi")

DEFAULT_EMAIL = "smoke@sight.local"
DEFAULT_PASSWORD = "smoke-local"  # noqa: S105 - the stand-in's development-only default
DEFAULT_PROJECT = "00000000-0000-4000-8000-00000000a11e"

#: check name -> (method, path pattern); the names ``/_admin/checks/<name>`` takes.
CHECKS: dict[str, tuple[str, re.Pattern[str]]] = {
    "health": ("GET", re.compile(r"^/health$")),
    "docs": ("GET", re.compile(r"^/docs$")),
    "db": ("GET", re.compile(r"^/api/health/db$")),
    "neo4j": ("GET", re.compile(r"^/api/health/neo4j$")),
    "login": ("POST", re.compile(r"^/api/auth/login$")),
    "persona": ("POST", re.compile(r"^/api/projects/[^/]+/personas$")),
}

_SWAGGER_PAGE = """<!DOCTYPE html>
<html>
<head>
<link type="text/css" rel="stylesheet" href="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css">
<title>Sight API - Swagger UI</title>
</head>
<body>
<div id="swagger-ui"></div>
<script src="https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"></script>
<script>const ui = SwaggerUIBundle({url: '/openapi.json', dom_id: '#swagger-ui'})</script>
</body>
</html>
"""


@dataclass
class CheckBehaviour:
    """How one check misbehaves: answer ``status`` (None: the normal answer) after
    ``delay_s``, for the next ``remaining`` requests (None: until healed). ``echo``:
    the answer is FastAPI's validation error whose ``input`` is the request body (a
    real 422 repeats what it was sent, password included)."""

    check: str
    status: int | None = None
    delay_s: float = 0.0
    remaining: int | None = None
    message: str | None = None
    hits: int = 0
    echo: bool = False

    def to_json(self) -> JSON:
        return {
            "check": self.check,
            "status": self.status,
            "delay_s": self.delay_s,
            "remaining": self.remaining,
            "message": self.message,
            "hits": self.hits,
            "echo": self.echo,
        }


#: Request header the Cloud Run stand-in sets on what it forwards (standins/cloudrun.py).
IMAGE_HEADER = "X-Standin-Image"
REVISION_HEADER = "X-Standin-Revision"


@dataclass(frozen=True)
class ImageBehaviour:
    """How every revision of one image misbehaves: ``failing_checks`` answer ``status``;
    any other request answers ``status`` with probability ``error_rate``; every request
    waits ``latency_ms`` first."""

    image: str
    failing_checks: tuple[str, ...] = ()
    error_rate: float = 0.0
    latency_ms: float = 0.0
    status: int = 503

    def to_json(self) -> JSON:
        return {
            "image": self.image,
            "failing_checks": list(self.failing_checks),
            "error_rate": self.error_rate,
            "latency_ms": self.latency_ms,
            "status": self.status,
        }


def check_for(method: str, path: str) -> str | None:
    """Which smoke check a request belongs to, if any."""
    for name, (check_method, pattern) in CHECKS.items():
        if method.upper() == check_method and pattern.match(path):
            return name
    return None


class SightApiState:
    """Users, projects, tokens, created personas and check behaviours; thread-safe."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        projects: Iterable[str] | None = None,
        clock: Clock = utcnow,
        seed: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.log = FaultsAndLog(self._lock, clock)
        self._initial_users = dict(
            users if users is not None else {DEFAULT_EMAIL: DEFAULT_PASSWORD}
        )
        self._initial_projects = set(projects if projects is not None else {DEFAULT_PROJECT})
        self._users: dict[str, str] = {}
        self._projects: set[str] = set()
        self._tokens: dict[str, str] = {}
        self._personas: list[JSON] = []
        self._behaviours: dict[str, CheckBehaviour] = {}
        self._images: dict[str, ImageBehaviour] = {}
        self._served: dict[str, int] = {}
        self._rng = random.Random(seed)
        self.reset()

    # ---------------------------------------------------------------- seeding

    def add_user(self, email: str, password: str) -> None:
        with self._lock:
            self._users[email] = password

    def add_project(self, project_id: str) -> None:
        with self._lock:
            self._projects.add(project_id)

    def reset(self) -> None:
        """Back to the seeded users and projects; no tokens, personas, faults or log."""
        with self._lock:
            self._users = dict(self._initial_users)
            self._projects = set(self._initial_projects)
            self._tokens.clear()
            self._personas.clear()
            self._behaviours.clear()
            self._images.clear()
            self._served.clear()
            self.log.reset()

    # ---------------------------------------------------------------- behaviours

    def fail(
        self,
        check: str,
        status: int = 500,
        *,
        count: int | None = None,
        message: str | None = None,
        delay_s: float = 0.0,
        echo: bool = False,
    ) -> CheckBehaviour:
        """Make ``check`` answer ``status`` (for ``count`` requests, or until healed);
        ``echo``: as a validation error echoing the request body."""
        return self.set_behaviour(CheckBehaviour(check, status, delay_s, count, message, echo=echo))

    def slow(self, check: str, delay_s: float, *, count: int | None = None) -> CheckBehaviour:
        """Make ``check`` answer normally but only after ``delay_s``."""
        return self.set_behaviour(CheckBehaviour(check, None, delay_s, count))

    def heal(self, check: str | None = None) -> None:
        """Undo :meth:`fail` / :meth:`slow` for one check, or for all."""
        with self._lock:
            if check is None:
                self._behaviours.clear()
            else:
                self._behaviours.pop(check, None)

    def behaviours(self) -> list[CheckBehaviour]:
        with self._lock:
            return list(self._behaviours.values())

    def set_behaviour(self, behaviour: CheckBehaviour) -> CheckBehaviour:
        """Install a behaviour (validated); replaces the check's previous one."""
        if behaviour.check not in CHECKS:
            raise ValueError(f"unknown check {behaviour.check!r}; known: {', '.join(CHECKS)}")
        if behaviour.status is not None and not 100 <= behaviour.status <= 599:
            raise ValueError(f"status must be an HTTP status, got {behaviour.status}")
        if behaviour.remaining is not None and behaviour.remaining < 1:
            raise ValueError("count must be at least 1")
        if behaviour.delay_s < 0:
            raise ValueError("delay_s must be >= 0")
        with self._lock:
            self._behaviours[behaviour.check] = behaviour
        return behaviour

    def take_behaviour(self, check: str) -> CheckBehaviour | None:
        """The behaviour for this request of ``check``, consumed once."""
        with self._lock:
            found = self._behaviours.get(check)
            if found is None:
                return None
            found.hits += 1
            if found.remaining is not None:
                found.remaining -= 1
                if found.remaining <= 0:
                    del self._behaviours[check]
            return CheckBehaviour(
                found.check,
                found.status,
                found.delay_s,
                found.remaining,
                found.message,
                found.hits,
                found.echo,
            )

    # ---------------------------------------------------------------- bad images

    def set_image(
        self,
        image: str,
        *,
        failing_checks: Iterable[str] = (),
        error_rate: float = 0.0,
        latency_ms: float = 0.0,
        status: int = 503,
    ) -> ImageBehaviour:
        """Make every revision of ``image`` bad (replaces its previous behaviour)."""
        checks = tuple(failing_checks)
        unknown = [c for c in checks if c not in CHECKS]
        if not image:
            raise ValueError("give the image reference")
        if unknown:
            raise ValueError(f"unknown check {unknown[0]!r}; known: {', '.join(CHECKS)}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError("error_rate must be within 0..1")
        if latency_ms < 0:
            raise ValueError("latency_ms must be >= 0")
        if not 500 <= status <= 599:
            raise ValueError("status must be a 5xx")
        behaviour = ImageBehaviour(image, checks, error_rate, latency_ms, status)
        with self._lock:
            self._images[image] = behaviour
        return behaviour

    def heal_image(self, image: str | None = None) -> None:
        """Undo :meth:`set_image` for one image, or for all."""
        with self._lock:
            if image is None:
                self._images.clear()
            else:
                self._images.pop(image, None)

    def images(self) -> list[ImageBehaviour]:
        with self._lock:
            return list(self._images.values())

    def image_verdict(self, image: str, check: str | None) -> tuple[float, int | None]:
        """For one forwarded request: (delay in seconds, failing status or None)."""
        with self._lock:
            found = self._images.get(image)
            if found is None:
                return 0.0, None
            failing = (check is not None and check in found.failing_checks) or (
                found.error_rate > 0 and self._rng.random() < found.error_rate
            )
            return found.latency_ms / 1000, found.status if failing else None

    def count_served(self, revision: str) -> None:
        with self._lock:
            self._served[revision] = self._served.get(revision, 0) + 1

    def served(self) -> dict[str, int]:
        """Forwarded requests received per revision (``X-Standin-Revision``)."""
        with self._lock:
            return dict(self._served)

    # ---------------------------------------------------------------- API state

    def login(self, email: str, password: str) -> str | None:
        with self._lock:
            if self._users.get(email) != password or not password:
                return None
            token = secrets.token_urlsafe(24)
            self._tokens[token] = email
            return token

    def user_for(self, token: str) -> str | None:
        with self._lock:
            return self._tokens.get(token)

    def create_persona(self, project_id: str, owner: str, body: Mapping[str, Any]) -> JSON | None:
        with self._lock:
            if project_id not in self._projects:
                return None
            persona: JSON = {
                "id": str(uuid.uuid4()),
                "project_id": project_id,
                "name": body["name"],
                "attributes": body.get("attributes") or {},
                "spending_habits": body.get("spending_habits"),
                "created_by": owner,
                "created_at": rfc3339(self._clock()),
            }
            self._personas.append(persona)
            return dict(persona)

    def personas(self) -> list[JSON]:
        with self._lock:
            return [dict(p) for p in self._personas]

    def requests(self, method: str | None = None, path_regex: str | None = None) -> list[JSON]:
        return [r.to_json() for r in self.log.requests(method, path_regex)]

    def request_count(self, check: str) -> int:
        """Requests received for one check (including failed and slowed ones)."""
        return sum(1 for r in self.log.requests() if check_for(r.method, r.path) == check)

    def inject_fault(self, status: int, *, count: int = 1, path_regex: str = ".*") -> FaultRule:
        """A generic fault (any path matching ``path_regex``), as the other stand-ins have."""
        return self.log.inject_fault(status, count=count, path_regex=path_regex)


# ---------------------------------------------------------------------------- app


def _detail(status: int, detail: Any, headers: Mapping[str, str] | None = None) -> Response:
    return json_response({"detail": detail}, status, headers)


def _missing(*fields: str) -> Response:
    return _detail(
        422,
        [
            {"type": "missing", "loc": ["body", f], "msg": "Field required", "input": None}
            for f in fields
        ],
    )


def _echoed(status: int, message: str | None) -> Response:
    """FastAPI's validation error, ``input`` being the whole request body (JSON, or the
    form as an object), as Sight answers a body it refuses."""
    body = request.get_json(silent=True)
    if body is None:
        body = request.form.to_dict() or request.get_data(as_text=True)
    return _detail(
        status,
        [
            {
                "type": "value_error",
                "loc": ["body"],
                "msg": message or "Value error, the request was refused",
                "input": body,
            }
        ],
    )


def _fault_response(rule: FaultRule) -> Response:
    return _detail(rule.status, rule.body or "Injected fault.")


_DEFAULT_FAILURE = {
    "health": "Service unhealthy",
    "docs": "Internal Server Error",
    "db": "Database unavailable: connection refused",
    "neo4j": "Neo4j unavailable: ServiceUnavailable",
    "login": "Internal Server Error",
    "persona": "Internal Server Error",
}


def create_app(state: SightApiState | None = None) -> Flask:
    """The Sight API stand-in as a Flask app (``app.extensions["standin"]``)."""
    st = state or SightApiState()
    app = Flask("standins.sightapi")
    app.extensions["standin"] = st

    install_request_hooks(app, st.log, _fault_response, logger)

    @app.before_request
    def _behave() -> Response | None:
        # Registered after the request hooks: a generic fault wins, then the image's
        # (requests forwarded by the Cloud Run stand-in), then a check's.
        check = check_for(request.method, request.path)
        revision = request.headers.get(REVISION_HEADER)
        if revision and not request.path.startswith("/_admin/"):
            st.count_served(revision)
        image = request.headers.get(IMAGE_HEADER)
        if image and not request.path.startswith("/_admin/"):
            delay_s, status = st.image_verdict(image, check)
            if delay_s:
                time.sleep(delay_s)
            if status is not None:
                return _detail(status, _DEFAULT_FAILURE.get(check or "", "Internal Server Error"))
        behaviour = st.take_behaviour(check) if check else None
        if behaviour is None:
            return None
        if behaviour.delay_s:
            time.sleep(behaviour.delay_s)
        if behaviour.status is None:
            return None
        if behaviour.echo:
            return _echoed(behaviour.status, behaviour.message)
        return _detail(behaviour.status, behaviour.message or _DEFAULT_FAILURE[behaviour.check])

    @app.errorhandler(StandinError)
    def _standin_error(exc: StandinError) -> Response:
        return _detail(exc.code, exc.message)

    @app.errorhandler(404)
    def _not_found(_exc: Exception) -> Response:
        return _detail(404, "Not Found")

    @app.errorhandler(405)
    def _not_allowed(_exc: Exception) -> Response:
        return _detail(405, "Method Not Allowed")

    @app.get("/health")
    def health() -> Response:
        return json_response({"status": "ok"})

    @app.get("/docs")
    def docs() -> Response:
        return Response(_SWAGGER_PAGE, 200, content_type="text/html; charset=utf-8")

    @app.get("/api/health/db")
    def health_db() -> Response:
        return json_response({"status": "ok", "database": "postgresql"})

    @app.get("/api/health/neo4j")
    def health_neo4j() -> Response:
        return json_response({"status": "ok", "neo4j": "connected"})

    @app.post("/api/auth/login")
    def login() -> Response:
        body = request.get_json(silent=True)
        if isinstance(body, dict):
            email, password = body.get("email"), body.get("password")
        else:  # OAuth2PasswordRequestForm
            email, password = request.form.get("username"), request.form.get("password")
        missing = [n for n, v in (("email", email), ("password", password)) if not v]
        if missing:
            return _missing(*missing)
        token = st.login(str(email), str(password))
        if token is None:
            return _detail(401, "Incorrect email or password", {"WWW-Authenticate": "Bearer"})
        return json_response({"access_token": token, "token_type": "bearer", "expires_in": 3600})

    @app.post("/api/projects/<project_id>/personas")
    def create_persona(project_id: str) -> Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        owner = st.user_for(token) if scheme.lower() == "bearer" and token else None
        if owner is None:
            return _detail(401, "Not authenticated", {"WWW-Authenticate": "Bearer"})
        body = request.get_json(silent=True)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            return _missing("name")
        persona = st.create_persona(project_id, owner, body)
        if persona is None:
            return _detail(404, "Project not found")
        return json_response(persona, 201)

    # ----------------------------------------------------------------- admin

    @app.get("/_admin/checks")
    def admin_checks() -> Response:
        return json_response(
            {"checks": list(CHECKS), "behaviours": [b.to_json() for b in st.behaviours()]}
        )

    @app.post("/_admin/checks/<check>")
    def admin_set_check(check: str) -> Response:
        body = admin_json()
        try:
            behaviour = st.set_behaviour(
                CheckBehaviour(
                    check,
                    int(body["status"]) if body.get("status") is not None else None,
                    float(body.get("delay_s", 0.0)),
                    int(body["count"]) if body.get("count") is not None else None,
                    body.get("message"),
                    echo=bool(body.get("echo", False)),
                )
            )
        except (TypeError, ValueError) as exc:
            raise StandinError(400, str(exc)) from exc
        return json_response(behaviour.to_json(), 201)

    @app.delete("/_admin/checks")
    def admin_heal_all() -> Response:
        st.heal()
        return json_response({})

    @app.delete("/_admin/checks/<check>")
    def admin_heal(check: str) -> Response:
        st.heal(check)
        return json_response({})

    @app.post("/_admin/users")
    def admin_user() -> Response:
        body = admin_json()
        if not body.get("email") or not body.get("password"):
            raise StandinError(400, "give email and password")
        st.add_user(str(body["email"]), str(body["password"]))
        return json_response({"email": body["email"]}, 201)

    @app.post("/_admin/projects")
    def admin_project() -> Response:
        body = admin_json()
        project_id = str(body.get("id") or uuid.uuid4())
        st.add_project(project_id)
        return json_response({"id": project_id}, 201)

    @app.get("/_admin/personas")
    def admin_personas() -> Response:
        return json_response({"personas": st.personas()})

    @app.get("/_admin/images")
    def admin_images() -> Response:
        return json_response({"images": [b.to_json() for b in st.images()]})

    @app.post("/_admin/images")
    def admin_set_image() -> Response:
        body = admin_json()
        try:
            behaviour = st.set_image(
                str(body.get("image") or ""),
                failing_checks=[str(c) for c in body.get("failing_checks") or []],
                error_rate=float(body.get("error_rate", 0.0)),
                latency_ms=float(body.get("latency_ms", 0.0)),
                status=int(body.get("status", 503)),
            )
        except (TypeError, ValueError) as exc:
            raise StandinError(400, str(exc)) from exc
        return json_response(behaviour.to_json(), 201)

    @app.delete("/_admin/images")
    def admin_heal_images() -> Response:
        st.heal_image(request.args.get("image") or None)
        return json_response({})

    @app.get("/_admin/served")
    def admin_served() -> Response:
        return json_response({"served": st.served()})

    add_fault_admin_routes(app, st)

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return json_response({})

    return app
