"""notify_flush over HTTP, through functions-framework: Cloud Scheduler's POST flushes
due groups; anything else gets the runtime's JSON error body (docs/notify.md,
"Scheduled flush"; docs/architecture.md, "An HTTP request's path")."""

from __future__ import annotations

import logging
from typing import Any

import functions_framework
import pytest

from tests.functions.notify.conftest import SOURCE, NotifyFactory


@pytest.fixture
def flush(make_notify: NotifyFactory) -> Any:
    make_notify()
    return functions_framework.create_app(
        target="notify_flush", source=str(SOURCE), signature_type="http"
    ).test_client()


def http_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sightops.http"]


def test_a_post_flushes_and_writes_one_line(flush: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    response = flush.post("/")
    assert (response.status_code, response.get_json()) == (200, {"flushed": 0})
    [line] = http_lines(caplog)
    assert line.__dict__["logging.googleapis.com/labels"] == {
        "function": "notify_flush",
        "method": "POST",
        "status": "200",
        "outcome": "ok",
    }


def test_another_method_is_405_with_the_json_error_body(flush: Any) -> None:
    response = flush.get("/")
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert response.get_json()["error"]["code"] == "method_not_allowed"
