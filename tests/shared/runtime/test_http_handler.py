"""``http_handler``, driven through functions-framework exactly as production is: the
order of checks, the one JSON error body, the classification of unexpected exceptions,
and the one log line per request (docs/architecture.md, "An HTTP request's path")."""

from __future__ import annotations

import io
import json
import logging
import uuid
from pathlib import Path
from typing import Any

import functions_framework
import pytest

from shared.log import JsonFormatter
from shared.runtime import Deps
from tests.shared.runtime.sample_http.main import LIMIT, TOKEN

SOURCE = Path(__file__).parent / "sample_http" / "main.py"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="sample_http", source=str(SOURCE), signature_type="http"
    )
    return app.test_client()


@pytest.fixture
def lines(caplog: pytest.LogCaptureFixture) -> Any:
    """The http runtime's log lines of the last request, as Cloud Logging gets them."""
    caplog.set_level(logging.INFO)

    def take() -> list[dict[str, Any]]:
        records = [r for r in caplog.records if r.name == "sightops.http"]
        caplog.clear()
        return [json.loads(JsonFormatter().format(r)) for r in records]

    return take


def error_of(response: Any) -> dict[str, str]:
    """The one error body; every error is JSON and never cached."""
    assert response.headers["Content-Type"] == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}
    return dict(body["error"])


def test_success_is_the_functions_answer_with_one_info_line_and_trace(
    client: Any, lines: Any
) -> None:
    trace_id = uuid.uuid4().hex
    response = client.post(
        "/", data=b"hello", headers={**AUTH, "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
    )
    assert response.status_code == 201
    assert response.get_json() == {"echo": "hello"}
    assert response.headers["X-Sample"] == "yes"
    [line] = lines()
    assert line["severity"] == "INFO"
    assert line["logging.googleapis.com/labels"] == {
        "function": "sample_http",
        "method": "POST",
        "status": "201",
        "outcome": "echoed",
    }
    assert line["logging.googleapis.com/trace"] == f"projects/sight-local/traces/{trace_id}"
    assert line["size"] == 5


def test_cloud_trace_context_header_is_a_trace_too(client: Any, lines: Any) -> None:
    trace_id = uuid.uuid4().hex
    headers = {**AUTH, "X-Cloud-Trace-Context": f"{trace_id}/1;o=1"}
    assert client.post("/", data=b"x", headers=headers).status_code == 201
    [line] = lines()
    assert line["logging.googleapis.com/trace"] == f"projects/sight-local/traces/{trace_id}"


def test_another_method_is_405_with_allow_before_auth(client: Any, lines: Any) -> None:
    response = client.get("/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert error_of(response)["code"] == "method_not_allowed"
    [line] = lines()
    assert (line["severity"], line["logging.googleapis.com/labels"]["status"]) == ("WARNING", "405")


def test_the_auth_hook_refuses_before_the_body_is_read(client: Any, lines: Any) -> None:
    response = client.post("/", data=b"x" * (LIMIT * 4), headers={"Authorization": "Bearer no"})
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert error_of(response) == {"code": "unauthorised", "message": "unauthorised"}
    assert len(lines()) == 1


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_a_body_over_the_limit_is_413(client: Any, lines: Any, chunked: bool) -> None:
    if chunked:
        response = client.post(
            "/",
            input_stream=io.BytesIO(b"x" * (LIMIT + 1)),
            headers={**AUTH, "Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )
    else:
        response = client.post("/", data=b"x" * (LIMIT + 1), headers=AUTH)
    assert response.status_code == 413
    assert error_of(response)["code"] == "too_large"
    assert len(lines()) == 1
    exactly = client.post("/", data=b"x" * LIMIT, headers=AUTH)
    assert exactly.status_code == 201 and len(exactly.get_json()["echo"]) == LIMIT


def test_an_http_error_from_the_function_is_the_json_body_and_its_reason_is_logged(
    client: Any, lines: Any
) -> None:
    response = client.post("/?mode=refuse", headers=AUTH)
    assert response.status_code == 409
    assert error_of(response) == {"code": "conflict", "message": "not now"}
    [line] = lines()
    assert line["reason"] == "refused on purpose"
    assert line["logging.googleapis.com/labels"]["outcome"] == "conflict"


def test_an_unexpected_exception_is_500_without_detail_and_one_error_line(
    client: Any, lines: Any
) -> None:
    response = client.post("/?mode=bug", headers=AUTH)
    assert response.status_code == 500
    assert error_of(response) == {"code": "internal", "message": "internal error"}
    assert b"secret detail" not in response.data
    [line] = lines()
    assert line["severity"] == "ERROR"
    assert "KeyError" in line["traceback"]


@pytest.mark.parametrize("mode", ["transient", "db"])
def test_a_known_transient_failure_is_503(client: Any, lines: Any, mode: str) -> None:
    response = client.post(f"/?mode={mode}", headers=AUTH)
    assert response.status_code == 503
    assert error_of(response)["code"] == "unavailable"
    [line] = lines()
    assert line["severity"] == "WARNING"
    assert "traceback" not in line


def test_werkzeugs_own_refusal_gets_the_same_body_and_the_body_is_still_readable(
    client: Any, lines: Any
) -> None:
    bad = client.post(
        "/?mode=json", data=b"not json", headers=AUTH, content_type="application/json"
    )
    assert bad.status_code == 400
    assert error_of(bad)["code"] == "bad_request"
    good = client.post("/?mode=json", json={"a": 1}, headers=AUTH)
    assert (good.status_code, good.get_json()) == (200, {"a": 1})
    assert len(lines()) == 2
