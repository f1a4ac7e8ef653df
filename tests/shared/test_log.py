from __future__ import annotations

import io
import json
import logging

from shared.log import MASK, JsonFormatter, Redactor, configure_logging, labels


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
    try:
        configure_logging("INFO", io.StringIO())
        configure_logging("DEBUG", io.StringIO())
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        assert root.level == logging.DEBUG
    finally:
        for h in root.handlers[:]:
            if h not in before:
                root.removeHandler(h)
