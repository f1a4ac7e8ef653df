"""The smoke runner: the checks Sight's pipeline runs against a revision's URL.

Each check is one HTTP request with a timeout and at most ``retries`` extra attempts
(exponential backoff), so a cold start or a blip does not fail a release but a broken
revision is reported within a bounded time: at most
``checks x (retries + 1) x timeout`` plus the backoff.

Only requests that are safe to repeat are retried on every transient failure (GETs:
timeouts, connection errors, 5xx, 429). The login and create-persona POSTs are retried
only when the request certainly did nothing (the connection was refused, or the
answer was 429 / 503), so a smoke run never creates two personas by accident.

A check's ``error`` is published (``sight.ops.smoke.failed``) and posted to Slack, so it
is written in our own words with the status code or the exception type only: never a
response or request body, which may echo the smoke password (a 422 validation error
repeats its input). docs/rollback.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from shared.clock import Clock, utcnow
from shared.events import EventType, OpsEvent, SmokeCheck, SmokeResult

#: Check names, in run order; also the ``name`` of each published ``SmokeCheck``.
HEALTH = "GET /health"
DOCS = "GET /docs"
DB = "GET /api/health/db"
NEO4J = "GET /api/health/neo4j"
LOGIN = "POST /api/auth/login"
PERSONA = "POST /api/projects/{project_id}/personas"
CHECK_NAMES = (HEALTH, DOCS, DB, NEO4J, LOGIN, PERSONA)

_OK_STATUS_WORDS = {"ok", "healthy", "up", "pass", "connected"}
_RETRY_ANY = {429, 500, 502, 503, 504}
_RETRY_POST = {429, 503}


@dataclass(frozen=True)
class SmokeOptions:
    """How to run the checks; ``from_settings`` reads ``RollbackConfig``."""

    email: str
    password: str
    project_id: str
    timeout_s: float = 10.0
    retries: int = 2
    backoff_s: float = 0.5

    @classmethod
    def from_settings(cls, settings: Any, resolve: Callable[[str], str | None]) -> SmokeOptions:
        """``resolve`` turns a Secret Manager reference into the password (Secrets.resolve)."""
        config = settings.rollback
        password = resolve(config.smoke_password.get_secret_value()) or ""
        return cls(
            email=config.smoke_email,
            password=password,
            project_id=config.smoke_project_id,
            timeout_s=config.smoke_timeout_s,
            retries=config.smoke_retries,
            backoff_s=config.smoke_backoff_s,
        )


@dataclass(frozen=True)
class _Attempt:
    ok: bool
    status_code: int | None
    latency_ms: float
    error: str | None
    retryable: bool
    body: Any = None


def run_checks(
    url: str,
    options: SmokeOptions,
    *,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SmokeCheck]:
    """Run every check against ``url`` in order; never raises for a failing check."""
    base = url.rstrip("/")
    own = client is None
    http = client or httpx.Client(
        follow_redirects=True, headers={"User-Agent": "sight-ops-smoke/1"}
    )
    try:
        runner = _Runner(http, base, options, sleep)
        checks = [
            runner.check(HEALTH, "GET", "/health", _status_ok),
            runner.check(DOCS, "GET", "/docs", _any_ok),
            runner.check(DB, "GET", "/api/health/db", _status_ok),
            runner.check(NEO4J, "GET", "/api/health/neo4j", _status_ok),
        ]
        login, token = runner.login()
        checks.append(login)
        checks.append(runner.create_persona(token))
        return checks
    finally:
        if own:
            http.close()


class _Runner:
    def __init__(
        self,
        http: httpx.Client,
        base: str,
        options: SmokeOptions,
        sleep: Callable[[float], None],
    ) -> None:
        self.http = http
        self.base = base
        self.options = options
        self.sleep = sleep

    def check(
        self,
        name: str,
        method: str,
        path: str,
        verify: Callable[[httpx.Response], str | None],
        **request: Any,
    ) -> SmokeCheck:
        attempt = self._with_retries(method, path, verify, request)
        return SmokeCheck(
            name=name,
            ok=attempt.ok,
            status_code=attempt.status_code,
            latency_ms=round(attempt.latency_ms, 1),
            error=attempt.error,
        )

    def login(self) -> tuple[SmokeCheck, str | None]:
        attempt = self._with_retries(
            "POST",
            "/api/auth/login",
            _token_ok,
            {"json": {"email": self.options.email, "password": self.options.password}},
        )
        token = None
        if attempt.ok and isinstance(attempt.body, Mapping):
            token = str(attempt.body.get("access_token") or attempt.body.get("token"))
        check = SmokeCheck(
            name=LOGIN,
            ok=attempt.ok,
            status_code=attempt.status_code,
            latency_ms=round(attempt.latency_ms, 1),
            error=attempt.error,
        )
        return check, token

    def create_persona(self, token: str | None) -> SmokeCheck:
        if token is None:
            return SmokeCheck(name=PERSONA, ok=False, error="not run: login failed")
        body = {
            "name": f"sight-ops smoke {utcnow().strftime('%Y%m%dT%H%M%S')}",
            "attributes": {"created_by": "sight-ops smoke runner"},
        }
        return self.check(
            PERSONA,
            "POST",
            f"/api/projects/{self.options.project_id}/personas",
            _created_ok,
            json=body,
            headers={"Authorization": f"Bearer {token}"},
        )

    def _with_retries(
        self,
        method: str,
        path: str,
        verify: Callable[[httpx.Response], str | None],
        request: Mapping[str, Any],
    ) -> _Attempt:
        attempts = self.options.retries + 1
        result = self._once(method, path, verify, request)
        for n in range(1, attempts):
            if result.ok or not result.retryable:
                break
            self.sleep(self.options.backoff_s * 2 ** (n - 1))
            result = self._once(method, path, verify, request)
        return result

    def _once(
        self,
        method: str,
        path: str,
        verify: Callable[[httpx.Response], str | None],
        request: Mapping[str, Any],
    ) -> _Attempt:
        idempotent = method == "GET"
        timeout = self.options.timeout_s
        started = time.perf_counter()
        try:
            response = self.http.request(method, self.base + path, timeout=timeout, **request)
        except httpx.TimeoutException as exc:
            connect = isinstance(exc, httpx.ConnectTimeout)
            return _Attempt(
                False,
                None,
                _ms(started),
                f"timed out after {timeout:g} s",
                idempotent or connect,
            )
        except httpx.TransportError as exc:
            refused = isinstance(exc, httpx.ConnectError)
            return _Attempt(
                False,
                None,
                _ms(started),
                f"connection failed: {type(exc).__name__}",
                idempotent or refused,
            )
        latency = _ms(started)
        body = _json(response)
        problem = verify(response)
        if problem is None:
            return _Attempt(True, response.status_code, latency, None, False, body)
        retry_on = _RETRY_ANY if idempotent else _RETRY_POST
        return _Attempt(
            False, response.status_code, latency, problem, response.status_code in retry_on, body
        )


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _http_error(response: httpx.Response, expected: str) -> str:
    """Our own words and the status code: a body is never copied (it may echo input)."""
    return f"HTTP {response.status_code}, expected {expected}"


def _any_ok(response: httpx.Response) -> str | None:
    return None if response.status_code == 200 else _http_error(response, "200")


def _status_ok(response: httpx.Response) -> str | None:
    """200, and a JSON ``status`` (if present) that is a healthy word or ``true``.

    Anything else present in ``status`` (false, null, a number, an object such as
    ``{"db": "down"}``) fails: a health check that does not say healthy is not healthy.
    The value itself is not reported (it comes from the body).
    """
    if response.status_code != 200:
        return _http_error(response, "200")
    body = _json(response)
    if not isinstance(body, Mapping) or "status" not in body:
        return None
    status = body["status"]
    if status is True or (isinstance(status, str) and status.lower() in _OK_STATUS_WORDS):
        return None
    return "HTTP 200 but its status does not say healthy"


def _token_ok(response: httpx.Response) -> str | None:
    if response.status_code != 200:
        return _http_error(response, "200 with an access token")
    body = _json(response)
    if not isinstance(body, Mapping) or not (body.get("access_token") or body.get("token")):
        return "HTTP 200 but no access_token in the answer"
    return None


def _created_ok(response: httpx.Response) -> str | None:
    if response.status_code not in (200, 201):
        return _http_error(response, "201 with the created persona")
    body = _json(response)
    if not isinstance(body, Mapping) or not body.get("id"):
        return f"HTTP {response.status_code} but no persona id in the answer"
    return None


def smoke(
    url: str,
    *,
    service: str,
    region: str,
    revision: str,
    options: SmokeOptions,
    build_id: str | None = None,
    commit_sha: str | None = None,
    clock: Clock = utcnow,
    client: httpx.Client | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> OpsEvent[SmokeResult]:
    """Run the checks and return the ``sight.ops.smoke.passed|failed`` event to publish."""
    started: datetime = clock()
    checks = run_checks(url, options, client=client, sleep=sleep)
    result = SmokeResult(
        service=service,
        region=region,
        revision=revision,
        url=url,
        build_id=build_id,
        commit_sha=commit_sha,
        checks=checks,
        started_at=started,
        finished_at=clock(),
    )
    passed = all(check.ok for check in checks)
    kind = EventType.SMOKE_PASSED if passed else EventType.SMOKE_FAILED
    return OpsEvent.new(kind, result, source="smoke-runner", clock=clock)
