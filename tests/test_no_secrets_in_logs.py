"""No webhook URL and no password in any log line or error message of the suite.

``tests/conftest.py`` captures every log record (raw, before the redacting formatter),
every test's captured stdout/stderr/log sections and every failure text, and orders
this test last. The secrets are the ones the suite really used: every Slack webhook URL
registered with the redactor while delivering, the webhook paths the tests configure,
and the alert_intake passwords.
"""

from __future__ import annotations

import json
import logging
import re

from shared.log import REDACTOR
from sightops import dev
from tests.conftest import SESSION_LOGS
from tests.functions.alert_intake import test_alert_intake as intake
from tests.functions.notify import conftest as notify_conftest
from tests.functions.notify import test_notify_events as notify_events

_WEBHOOK_TAIL = re.compile(r"/services/([^/\s]+/[^/\s]+/[^/\s\"']+)")


def secrets_in_use() -> set[str]:
    paths = {
        notify_conftest.WEBHOOK_PATH,
        notify_events.CRITICAL_PATH,
        notify_events.BUILDS_PATH,
        dev.SLACK_WEBHOOK_PATH,
    }
    registered = {s for s in REDACTOR._secrets if "/services/" in s}
    found = set(registered)
    for value in paths | registered:
        match = _WEBHOOK_TAIL.search(value)
        if match:
            found.add(match.group(1).rsplit("/", 1)[1])  # the secret token part
    found |= {intake.PASSWORD, dev.INTAKE_PASSWORD}
    return {s for s in found if len(s) >= 8}


def test_no_webhook_url_or_password_appears_in_any_log_line_or_error() -> None:
    assert SESSION_LOGS in logging.getLogger().handlers, "the session capture is installed"
    assert SESSION_LOGS.texts, "the capture saw the suite's logs"
    secrets = secrets_in_use()
    assert notify_conftest.WEBHOOK_PATH.rsplit("/", 1)[1] in secrets
    leaks = [
        (secret, text[:300])
        for text in SESSION_LOGS.texts
        for secret in secrets
        if any(form in text for form in written_forms(secret))
    ]
    assert leaks == []


def written_forms(secret: str) -> set[str]:
    """The secret as written and as JSON writes it inside a string (a JSON log line)."""
    return {secret, json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]}


def test_no_secret_appears_in_any_console_page_the_suite_rendered() -> None:
    """The console shows ledger rows, rejected payloads and dead letters (docs/console.md):
    every page the console tests rendered is checked for the suite's secrets and for those
    the tests planted in the ledger."""
    import pytest

    from tests.functions.console.conftest import CONSOLE_PAGES, CONSOLE_SECRETS

    if not CONSOLE_PAGES:
        pytest.skip("no console page was rendered in this run")
    secrets = secrets_in_use() | set(CONSOLE_SECRETS)
    leaks = [
        (secret, page[:300])
        for page in CONSOLE_PAGES
        for secret in secrets
        if any(form in page for form in written_forms(secret))
    ]
    assert leaks == []
