"""The conversion guard, through functions-framework: what functions-framework refuses
before our code runs is kept as rejected; what escapes our own entry is a bug of ours,
answered 503 (redelivered) and never kept (docs/architecture.md, "The handler runtime")."""

from __future__ import annotations

import logging
import uuid
from typing import Any

import pytest
from sqlalchemy import text

from shared.runtime import Deps, EventHandler, PubsubMessage
from tests.helpers import PROJECT, envelope, push, rejected_events
from tests.shared.runtime.test_handler import client, outcome_of, runtime_records

__all__ = ["client"]  # the sample function served by functions-framework


def kept_with(deps: Deps, marker: bytes) -> list[str]:
    """Reasons of the rejected rows of ``sample`` whose payload holds ``marker``."""
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT reason FROM ops.rejected_events"
                    " WHERE consumer = 'sample' AND position(:m in payload) > 0"
                ),
                {"m": marker},
            ).scalars()
        )


def unconvertible(client: Any, marker: bytes) -> Any:
    """A push body that is not UTF-8: functions-framework refuses it before our entry."""
    return client.post(
        f"/projects/{PROJECT}/topics/t",
        data=b'{"message": "\xff' + marker + b'"}',
        content_type="application/json",
    )


def test_a_body_functions_framework_cannot_convert_is_kept_as_rejected(
    client: Any, deps: Deps
) -> None:
    marker = uuid.uuid4().hex.encode()
    assert unconvertible(client, marker).status_code == 200
    [reason] = kept_with(deps, marker)
    assert "could not be converted into a CloudEvent" in reason


def test_an_exception_escaping_our_entry_is_redelivered_not_kept(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bug(self: EventHandler[Any], message: PubsubMessage, deps: Deps | None = None) -> Any:
        raise RuntimeError("a bug past the runtime's classification")

    key = uuid.uuid4().hex
    with monkeypatch.context() as patched:
        patched.setattr(EventHandler, "handle_message", bug)
        response = push(client, "t", envelope({"key": key}, {"id": key}))
    assert response.status_code == 503
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "retry"
    assert record.levelno == logging.ERROR
    assert "RuntimeError" in record.__dict__["traceback"]
    assert record.__dict__["event_id"] == key
    assert rejected_events(deps.engine, "sample", key) == []

    # The sign that our entry ran belongs to that request only: the next conversion
    # failure on the same app is kept as before, and the message itself is handled.
    marker = uuid.uuid4().hex.encode()
    assert unconvertible(client, marker).status_code == 200
    assert len(kept_with(deps, marker)) == 1
    assert push(client, "t", envelope({"key": key}, {"id": key})).status_code == 200
