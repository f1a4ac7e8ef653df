from __future__ import annotations

import io
import json
import logging
import uuid
from typing import Any

import pytest

from shared.log import (
    MASK,
    JsonFormatter,
    JsonLineHandler,
    Redactor,
    configure_logging,
    labels,
)


def test_registered_secret_values_are_masked() -> None:
    r = Redactor()
    r.add("s3cr3t-value")
    assert r.redact("token is s3cr3t-value!") == f"token is {MASK}!"


def test_url_passwords_and_slack_webhook_paths_are_masked_by_shape() -> None:
    r = Redactor()
    text = r.redact(
        "postgresql+pg8000://sight:pw-123@db:5432/x and "
        "https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX"
    )
    assert "pw-123" not in text
    assert "XXXXXXXXXXXXXXXXXXXXXXXX" not in text
    assert "postgresql+pg8000://sight:" in text


def test_password_assignments_and_basic_auth_headers_are_masked() -> None:
    r = Redactor()
    text = r.redact('password="abc123def" Authorization: Basic dXNlcjpwYXNz')
    assert "abc123def" not in text
    assert "dXNlcjpwYXNz" not in text


def test_json_line_has_severity_labels_and_is_redacted() -> None:
    redactor = Redactor()
    redactor.add("very-secret")
    logger = logging.getLogger("test.log.json")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(redactor))
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("leaked very-secret here", extra={**labels(consumer="x"), "n": 3})
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["severity"] == "WARNING"
    assert line["message"] == f"leaked {MASK} here"
    assert line["logging.googleapis.com/labels"] == {"consumer": "x"}
    assert line["n"] == 3


def test_configure_logging_is_idempotent() -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    level = root.level
    for h in before:  # an earlier test may have configured the process already
        if isinstance(h.formatter, JsonFormatter):
            root.removeHandler(h)
    try:
        configure_logging("INFO", io.StringIO())
        configure_logging("DEBUG", io.StringIO())
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        assert root.level == logging.DEBUG
    finally:
        for h in root.handlers[:]:
            root.removeHandler(h)
        for h in before:
            root.addHandler(h)
        root.setLevel(level)


def test_a_failing_log_stream_never_prints_the_records_raw_arguments(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = io.StringIO()
    closed.close()
    handler = JsonLineHandler(closed)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.log.closed")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.error("posting to %s", "https://hooks.example/services/T1/B2/rawsecret")
    finally:
        logger.removeHandler(handler)
    err = capsys.readouterr().err
    assert "sightops logging error: ValueError" in err
    assert "rawsecret" not in err


def test_default_handler_writes_to_the_real_stdout_not_a_replaced_one(
    capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    replaced = io.StringIO()
    monkeypatch.setattr("sys.stdout", replaced)
    handler = JsonLineHandler()
    handler.setFormatter(JsonFormatter())
    handler.emit(logging.makeLogRecord({"msg": "to the real stdout", "levelno": 20}))
    assert "to the real stdout" in capfd.readouterr().out
    assert replaced.getvalue() == ""


def test_cli_handler_writes_to_stderr(capfd: pytest.CaptureFixture[str]) -> None:
    handler = JsonLineHandler(to_stderr=True)
    handler.setFormatter(JsonFormatter())
    handler.emit(logging.makeLogRecord({"msg": "to stderr", "levelno": 20}))
    captured = capfd.readouterr()
    assert "to stderr" in captured.err and "to stderr" not in captured.out


def test_secret_with_quotes_backslashes_and_control_characters_is_masked_in_json_lines(
    settings: Any,
) -> None:
    """JSON escapes ``"``, ``\\`` and control characters: a registered secret holding them
    must be masked as written, escaped once (the line) and escaped twice (a JSON document
    quoted in a message)."""
    from shared.secrets import Secrets

    secret = 'pa"ss\\wo\trd\n' + uuid.uuid4().hex[:8]
    assert Secrets(settings).resolve(secret) == secret  # registers it, as production does
    stream = io.StringIO()
    handler = JsonLineHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("test.log.escaped")
    logger.addHandler(handler)
    logger.propagate = False  # the session's raw capture must not see the secret
    try:
        logger.error(
            "login failed with %s; body %s",
            secret,
            json.dumps({"credential": secret}),
            extra={"detail": {"value": secret, "nested": [secret]}},
        )
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    escaped_once = json.dumps(secret)[1:-1]
    escaped_twice = json.dumps(escaped_once)[1:-1]
    for form in (secret, escaped_once, escaped_twice):
        assert form not in out
    line = json.loads(out)
    assert line["message"] == f'login failed with {MASK}; body {{"credential": "{MASK}"}}'
    assert line["detail"] == {"value": MASK, "nested": [MASK]}
