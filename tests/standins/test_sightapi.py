"""The Sight API stand-in: what the smoke runner hits, and how each check is broken."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from standins import RunningServer, serve
from standins.sightapi import (
    DEFAULT_EMAIL,
    DEFAULT_PASSWORD,
    DEFAULT_PROJECT,
    SightApiState,
    create_app,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sight() -> Iterator[tuple[SightApiState, RunningServer]]:
    state = SightApiState()
    with serve(create_app(state)) as server:
        yield state, server


@pytest.fixture
def http(sight: tuple[SightApiState, RunningServer]) -> Iterator[httpx.Client]:
    _, server = sight
    with httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def login(http: httpx.Client) -> str:
    r = http.post("/api/auth/login", json={"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/health", {"status": "ok"}),
        ("/api/health/db", {"status": "ok", "database": "postgresql"}),
        ("/api/health/neo4j", {"status": "ok", "neo4j": "connected"}),
    ],
)
def test_health_endpoints_answer_ok(http: httpx.Client, path: str, body: dict[str, str]) -> None:
    r = http.get(path)
    assert r.status_code == 200
    assert r.json() == body


def test_docs_serves_the_swagger_ui_page(http: httpx.Client) -> None:
    r = http.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Swagger UI" in r.text


def test_login_returns_a_bearer_token(http: httpx.Client) -> None:
    r = http.post("/api/auth/login", json={"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD})
    assert r.json()["token_type"] == "bearer" and r.json()["access_token"]


def test_login_accepts_the_oauth2_password_form(http: httpx.Client) -> None:
    r = http.post("/api/auth/login", data={"username": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD})
    assert r.status_code == 200 and r.json()["access_token"]


def test_wrong_password_is_401_with_a_bearer_challenge(http: httpx.Client) -> None:
    r = http.post("/api/auth/login", json={"email": DEFAULT_EMAIL, "password": "nope"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "Incorrect email or password"}


def test_login_without_fields_is_a_422_validation_error(http: httpx.Client) -> None:
    r = http.post("/api/auth/login", json={"email": DEFAULT_EMAIL})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "password"]


def test_create_persona_with_a_token(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    token = login(http)
    r = http.post(
        f"/api/projects/{DEFAULT_PROJECT}/personas",
        json={"name": "Ada", "attributes": {"age_band": "30-39"}},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 201
    assert r.json()["name"] == "Ada" and r.json()["project_id"] == DEFAULT_PROJECT
    assert [p["id"] for p in state.personas()] == [r.json()["id"]]


def test_create_persona_without_a_token_is_401(http: httpx.Client) -> None:
    r = http.post(f"/api/projects/{DEFAULT_PROJECT}/personas", json={"name": "Ada"})
    assert r.status_code == 401
    assert r.json() == {"detail": "Not authenticated"}


def test_create_persona_in_an_unknown_project_is_404(http: httpx.Client) -> None:
    token = login(http)
    r = http.post(
        "/api/projects/nope/personas",
        json={"name": "Ada"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 404


def test_a_failed_check_answers_its_status_until_healed(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    state.fail("db", 503, message="Database unavailable: too many connections")
    for _ in range(3):
        r = http.get("/api/health/db")
        assert r.status_code == 503
        assert r.json() == {"detail": "Database unavailable: too many connections"}
    assert http.get("/health").status_code == 200, "other checks are untouched"
    state.heal("db")
    assert http.get("/api/health/db").status_code == 200


def test_a_failure_with_a_count_heals_by_itself(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    state.fail("health", 500, count=2)
    assert [http.get("/health").status_code for _ in range(3)] == [500, 500, 200]


def test_a_slow_check_answers_late(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    state.slow("neo4j", 0.3, count=1)
    started = time.monotonic()
    assert http.get("/api/health/neo4j").status_code == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    http.get("/api/health/neo4j")
    assert time.monotonic() - started < 0.3


def test_a_check_can_answer_a_422_that_echoes_the_request_body(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    """FastAPI's validation errors repeat their input: the smoke runner must cope with
    an answer that holds its own password."""
    state, _ = sight
    state.fail("login", 422, echo=True, count=1)
    sent = {"email": DEFAULT_EMAIL, "password": DEFAULT_PASSWORD}
    r = http.post("/api/auth/login", json=sent)
    assert r.status_code == 422
    [error] = r.json()["detail"]
    assert error["loc"] == ["body"] and error["input"] == sent
    assert http.post("/api/auth/login", json=sent).status_code == 200, "count=1 heals"
    assert http.post("/_admin/checks/login", json={"status": 422, "echo": True}).json()["echo"]
    assert http.post("/api/auth/login", json=sent).json()["detail"][0]["input"] == sent


def test_login_and_persona_checks_can_fail_too(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    state.fail("login", 500)
    assert http.post("/api/auth/login", json={"email": "a", "password": "b"}).status_code == 500
    state.heal()
    token = login(http)
    state.fail("persona", 500, message='relation "personas" does not exist')
    r = http.post(
        f"/api/projects/{DEFAULT_PROJECT}/personas",
        json={"name": "x"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 500 and "does not exist" in r.json()["detail"]


def test_admin_api_breaks_heals_and_reports(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    r = http.post("/_admin/checks/docs", json={"status": 502, "count": 1})
    assert r.status_code == 201
    assert http.get("/_admin/checks").json()["behaviours"][0]["check"] == "docs"
    assert http.get("/docs").status_code == 502
    assert http.get("/docs").status_code == 200
    assert http.post("/_admin/checks/health", json={"delay_s": 0.01}).status_code == 201
    assert http.delete("/_admin/checks").status_code == 200
    assert state.behaviours() == []
    assert http.post("/_admin/checks/nope", json={"status": 500}).status_code == 400
    assert [r["path"] for r in http.get("/_admin/requests").json()["requests"]] == [
        "/docs",
        "/docs",
    ]
    assert state.request_count("docs") == 2


def test_admin_api_adds_users_and_projects_and_lists_personas(http: httpx.Client) -> None:
    http.post("/_admin/users", json={"email": "ops@sight.local", "password": "pw-123456"})
    project = http.post("/_admin/projects", json={}).json()["id"]
    token = http.post(
        "/api/auth/login", json={"email": "ops@sight.local", "password": "pw-123456"}
    ).json()["access_token"]
    http.post(
        f"/api/projects/{project}/personas",
        json={"name": "Bo"},
        headers={"Authorization": f"Bearer {token}"},
    )
    [persona] = http.get("/_admin/personas").json()["personas"]
    assert persona["project_id"] == project and persona["created_by"] == "ops@sight.local"


def test_generic_faults_and_reset_work_as_in_the_other_standins(
    sight: tuple[SightApiState, RunningServer], http: httpx.Client
) -> None:
    state, _ = sight
    http.post("/_admin/faults", json={"status": 503, "path_regex": "^/health$"})
    assert http.get("/health").status_code == 503
    assert http.get("/health").status_code == 200
    login(http)
    http.post("/_admin/reset")
    assert state.requests() == [] and state.personas() == []


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_python_m_standins_serves_the_sight_api() -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins", "sightapi", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json() == {"status": "ok"}
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert f"sightapi listening on http://127.0.0.1:{port}" in err
