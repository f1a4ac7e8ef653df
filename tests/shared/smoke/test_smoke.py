"""The smoke runner against the Sight API stand-in: every check, timeouts, bounded
retries, the published event, and `sightops smoke` exit codes."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.events import EventType, SmokeResult
from shared.rollback import parse as parse_rollback_message
from shared.settings import get_settings
from shared.smoke import CHECK_NAMES, DB, LOGIN, NEO4J, PERSONA, SmokeOptions, run_checks, smoke
from sightops.cli import app
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import RunningServer, serve
from standins.sightapi import (
    DEFAULT_EMAIL,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT,
    SightApiState,
    create_app,
)
from tests.helpers import PROJECT

OPTIONS = SmokeOptions(
    email=DEFAULT_EMAIL,
    password=DEFAULT_PASSWORD,
    project_id=DEFAULT_PROJECT,
    timeout_s=0.5,
    retries=2,
    backoff_s=0.01,
)


@pytest.fixture
def sight() -> Iterator[tuple[SightApiState, RunningServer]]:
    state = SightApiState()
    with serve(create_app(state)) as server:
        yield state, server


def by_name(checks: list[Any]) -> dict[str, Any]:
    return {c.name: c for c in checks}


def test_every_check_passes_against_a_healthy_api(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    event = smoke(
        server.url, service="sight-api", region="europe-west1", revision="r1", options=OPTIONS
    )
    assert event.type is EventType.SMOKE_PASSED
    assert event.source == "smoke-runner"
    assert [c.name for c in event.data.checks] == list(CHECK_NAMES)
    assert all(c.ok and c.latency_ms is not None for c in event.data.checks)
    assert len(state.personas()) == 1


@pytest.mark.parametrize(
    ("check", "name"),
    [
        ("health", "GET /health"),
        ("docs", "GET /docs"),
        ("db", DB),
        ("neo4j", NEO4J),
        ("login", LOGIN),
        ("persona", PERSONA),
    ],
)
def test_any_failing_check_fails_the_run_with_its_reason(
    sight: tuple[SightApiState, RunningServer], check: str, name: str
) -> None:
    state, server = sight
    state.fail(check, 500, message=f"{check} is broken")
    event = smoke(
        server.url,
        service="sight-api",
        region="europe-west1",
        revision="r1",
        options=OPTIONS,
        sleep=lambda _s: None,
    )
    assert event.type is EventType.SMOKE_FAILED
    failed = by_name(event.data.failed_checks)
    assert name in failed
    assert failed[name].status_code == 500
    assert failed[name].error is not None and failed[name].error.startswith("HTTP 500, expected")
    assert f"{check} is broken" not in failed[name].error, "the answer's body is never copied"


def test_a_slow_check_times_out_after_bounded_retries(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    state.slow("neo4j", 1.5)
    slept: list[float] = []
    started = time.monotonic()
    checks = by_name(run_checks(server.url, OPTIONS, sleep=slept.append))
    assert not checks[NEO4J].ok
    assert checks[NEO4J].error == "timed out after 0.5 s"
    assert state.request_count("neo4j") == 3, "one attempt plus two retries"
    assert slept == [0.01, 0.02], "exponential backoff"
    assert time.monotonic() - started < 3 * 0.5 + 1.5


def test_a_transient_server_error_on_a_get_is_retried(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    state.fail("db", 503, count=1)
    checks = by_name(run_checks(server.url, OPTIONS, sleep=lambda _s: None))
    assert checks[DB].ok
    assert state.request_count("db") == 2


def test_a_client_error_is_not_retried(sight: tuple[SightApiState, RunningServer]) -> None:
    state, server = sight
    state.fail("db", 404)
    run_checks(server.url, OPTIONS, sleep=lambda _s: None)
    assert state.request_count("db") == 1


def test_create_persona_is_not_retried_on_a_500_so_it_never_runs_twice(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    state.fail("persona", 500)
    run_checks(server.url, OPTIONS, sleep=lambda _s: None)
    assert state.request_count("persona") == 1


def test_create_persona_is_retried_on_a_503(sight: tuple[SightApiState, RunningServer]) -> None:
    state, server = sight
    state.fail("persona", 503, count=1)
    checks = by_name(run_checks(server.url, OPTIONS, sleep=lambda _s: None))
    assert checks[PERSONA].ok
    assert len(state.personas()) == 1


def test_a_failed_login_means_the_persona_check_does_not_run(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    wrong = SmokeOptions(email=DEFAULT_EMAIL, password="wrong", project_id=DEFAULT_PROJECT)
    checks = by_name(run_checks(server.url, wrong, sleep=lambda _s: None))
    assert checks[LOGIN].status_code == 401
    assert checks[LOGIN].error == "HTTP 401, expected 200 with an access token"
    assert checks[PERSONA].error == "not run: login failed"
    assert state.request_count("persona") == 0


def test_an_unhealthy_status_in_a_200_answer_fails() -> None:
    """Some health endpoints answer 200 with a status word; "degraded" is not healthy."""
    import httpx

    transport = httpx.MockTransport(
        lambda request: (
            httpx.Response(200, json={"status": "degraded"})
            if request.url.path == "/api/health/db"
            else httpx.Response(200, json={"status": "ok", "access_token": "t", "id": "p"})
        )
    )
    with httpx.Client(transport=transport) as client:
        checks = by_name(run_checks("http://sight.test", OPTIONS, client=client))
    assert checks[DB].error == "HTTP 200 but its status does not say healthy"
    assert [name for name, c in checks.items() if not c.ok] == [DB]


@pytest.mark.parametrize(
    "status", [False, None, {"db": "down"}, 0], ids=["false", "null", "object", "number"]
)
def test_a_200_answer_whose_status_is_not_a_healthy_word_or_true_fails(status: object) -> None:
    """A present ``status`` must say healthy; ``false`` or ``{"db": "down"}`` does not."""
    import httpx

    transport = httpx.MockTransport(
        lambda request: (
            httpx.Response(200, json={"status": status})
            if request.url.path == "/api/health/db"
            else httpx.Response(200, json={"status": "ok", "access_token": "t", "id": "p"})
        )
    )
    with httpx.Client(transport=transport) as client:
        checks = by_name(run_checks("http://sight.test", OPTIONS, client=client))
    assert checks[DB].error == "HTTP 200 but its status does not say healthy"
    assert [name for name, c in checks.items() if not c.ok] == [DB]


def test_a_200_answer_with_status_true_or_without_status_passes() -> None:
    import httpx

    bodies = {"/api/health/db": {"status": True}, "/api/health/neo4j": {"neo4j": "connected"}}
    transport = httpx.MockTransport(
        lambda request: httpx.Response(
            200, json=bodies.get(request.url.path, {"status": "OK", "access_token": "t", "id": "p"})
        )
    )
    with httpx.Client(transport=transport) as client:
        checks = run_checks("http://sight.test", OPTIONS, client=client)
    assert all(c.ok for c in checks), [c.error for c in checks]


def test_an_unreachable_url_fails_every_check_quickly() -> None:
    with serve(create_app(SightApiState())) as server:
        url = server.url
    started = time.monotonic()
    checks = run_checks(url, OPTIONS, sleep=lambda _s: None)
    assert not any(c.ok for c in checks)
    assert checks[0].error == "connection failed: ConnectError", "the exception type only"
    assert time.monotonic() - started < 5


def test_the_event_is_what_the_rollback_function_reads(
    sight: tuple[SightApiState, RunningServer],
) -> None:
    state, server = sight
    state.fail("db", 500)
    event = smoke(
        server.url,
        service="sight-api",
        region="europe-west1",
        revision="sight-api-00043-vub",
        options=OPTIONS,
        build_id="b-1",
        commit_sha="b17d4e2a9c6f03815e7a2d4c9b0f6e3a1d8c5b72",  # pragma: allowlist secret
        sleep=lambda _s: None,
    )
    received = parse_rollback_message(*event.to_pubsub())
    assert not isinstance(received, SmokeResult)
    data = received.data_as(SmokeResult)  # type: ignore[union-attr]
    assert (data.revision, data.build_id, data.url) == ("sight-api-00043-vub", "b-1", server.url)
    assert received.type is EventType.SMOKE_FAILED  # type: ignore[union-attr]


# ------------------------------------------------------------------------ CLI


@pytest.fixture
def smoke_topic(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = f"smoke-tests-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    subscription = ensure_subscription(subscriber, PROJECT, f"{topic}-pull", topic)
    monkeypatch.setenv("TOPICS__SMOKE_TESTS", topic)
    monkeypatch.setenv("GCP_PROJECT", PROJECT)
    monkeypatch.setenv("ROLLBACK__SMOKE_TIMEOUT_S", "0.5")
    monkeypatch.setenv("ROLLBACK__SMOKE_BACKOFF_S", "0")
    monkeypatch.setenv("COLUMNS", "200")
    get_settings.cache_clear()
    yield subscriber, subscription
    get_settings.cache_clear()


def pull(subscriber: Any, subscription: str) -> list[Any]:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        response = subscriber.pull(
            request={"subscription": subscription, "max_messages": 10}, timeout=5
        )
        if response.received_messages:
            return [m.message for m in response.received_messages]
    return []


def test_cli_passes_publishes_and_exits_0(
    sight: tuple[SightApiState, RunningServer], smoke_topic: tuple[Any, str]
) -> None:
    _, server = sight
    result = CliRunner().invoke(
        app,
        ["smoke", server.url, "--service", "sight-api", "--revision", "r7", "--publish"],
    )
    assert result.exit_code == 0, result.output
    assert "sight.ops.smoke.passed" in result.output
    [message] = pull(*smoke_topic)
    assert message.attributes["type"] == "sight.ops.smoke.passed"
    assert message.attributes["service"] == "sight-api"


def test_cli_exits_1_when_a_check_fails(
    sight: tuple[SightApiState, RunningServer], smoke_topic: tuple[Any, str]
) -> None:
    state, server = sight
    state.fail("neo4j", 503)
    result = CliRunner().invoke(
        app, ["smoke", server.url, "--service", "sight-api", "--revision", "r7", "--publish"]
    )
    assert result.exit_code == 1
    assert "sight.ops.smoke.failed" in result.output
    [message] = pull(*smoke_topic)
    assert message.attributes["type"] == "sight.ops.smoke.failed"


def test_cli_uses_the_configured_url_when_none_is_given(
    sight: tuple[SightApiState, RunningServer],
    smoke_topic: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _, server = sight
    monkeypatch.setenv("ROLLBACK__SMOKE_URL", server.url)
    get_settings.cache_clear()
    result = CliRunner().invoke(app, ["smoke", "--service", "sight-api", "--revision", "r7"])
    assert result.exit_code == 0, result.output


def test_a_422_echoing_the_login_password_never_reaches_the_published_event(
    sight: tuple[SightApiState, RunningServer],
    smoke_topic: tuple[Any, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Sight's validation errors repeat their input: the check error is our own words and
    the status code, so smoke.failed (and the Slack message made from it) holds no
    password."""
    state, server = sight
    password = f"smoke-pw-{uuid.uuid4().hex[:12]}"
    state.add_user(DEFAULT_EMAIL, password)
    monkeypatch.setenv("ROLLBACK__SMOKE_PASSWORD", password)
    get_settings.cache_clear()
    state.fail("login", 422, echo=True)
    result = CliRunner().invoke(
        app, ["smoke", server.url, "--service", "sight-api", "--revision", "r7", "--publish"]
    )
    assert result.exit_code == 1, result.output
    [sent] = state.requests("POST", "^/api/auth/login$")
    assert password in json.dumps(sent["body"]), "the stand-in was sent the password"
    [message] = pull(*smoke_topic)
    assert message.attributes["type"] == "sight.ops.smoke.failed"
    received = message.data.decode()
    assert password not in received
    login = by_name(SmokeResult.model_validate(json.loads(received)).checks)[LOGIN]
    assert (login.status_code, login.error) == (422, "HTTP 422, expected 200 with an access token")
    assert password not in result.output
