"""Untrusted text through notify's entry point (docs/notify.md, "Messages"): what an
incident, a build or one of our events says can never mention a channel, forge a link
or carry a registered secret to Slack, and migration skips stay quiet by default."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from shared.log import MASK, mrkdwn_escape
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.functions.notify.test_notify_events import golden, incident_body
from tests.helpers import envelope, push

#: What an attacker (or a careless summary) writes: live mentions and a forged link.
INJECTION = "<!here> <!channel> <https://evil.example|ack> *bold*"
#: Live Slack markup: a mention or a link to the attacker's site.
LIVE = re.compile(r"<(?:[!@#]|https?://evil)")

Delivery = tuple[str, dict[str, Any]]


def _incident(text: str) -> Delivery:
    body = incident_body(
        incident_id=f"0.{uuid.uuid4().hex[:10]}",
        summary=text,
        policy_name=f"p95 {text}",
        condition_name=text,
        documentation={"content": text, "subject": text, "mime_type": "text/markdown"},
    )
    return "monitoring-alerts", envelope(body)


def _build(text: str) -> Delivery:
    data, attributes = golden("cloudbuild", "failure")
    build = json.loads(data)
    build["statusDetail"] = text
    build["substitutions"].update(
        {"TRIGGER_NAME": text, "BRANCH_NAME": text, "REPO_NAME": text, "_SERVICE": text}
    )
    build["logUrl"] = "https://evil.example/<!here>|ack"
    return "cloud-builds", envelope(json.dumps(build).encode(), attributes)


def _smoke(text: str) -> Delivery:
    data, attributes = golden("ops", "smoke_failed")
    smoke = json.loads(data)
    smoke["revision"] = text
    smoke["checks"][1]["error"] = text
    return "smoke-tests", envelope(json.dumps(smoke).encode(), attributes)


def _migration(text: str) -> Delivery:
    data, attributes = golden("ops", "migration_failed")
    migration = json.loads(data)
    migration["error"] = text
    migration["postgres"] = {"from": text, "to": text}
    migration["lint_findings"][0].update({"message": text, "rule": text, "migration": text})
    return "ops-events", envelope(json.dumps(migration).encode(), attributes)


def _rollback(text: str) -> Delivery:
    data, attributes = golden("ops", "rollback_failed")
    rollback = json.loads(data)
    rollback.update({"reason": text, "from_revision": text, "to_revision": text})
    return "ops-events", envelope(json.dumps(rollback).encode(), attributes)


def _canary(text: str) -> Delivery:
    data, attributes = golden("ops", "canary_rolled_back")
    canary = json.loads(data)
    canary.update({"reason": text, "revision": text, "stable_revision": text, "release_id": text})
    canary["actor"] = text
    canary["evidence"]["errors"]["outcome"] = text
    canary["steps"][0].update({"reason": text, "action": text})
    canary["steps"][0]["evidence"]["verdict"] = text
    return "ops-events", envelope(json.dumps(canary).encode(), attributes)


SOURCES: dict[str, Callable[[str], Delivery]] = {
    "incident summary, documentation, policy, condition": _incident,
    "build trigger name, statusDetail, substitutions, log URL": _build,
    "smoke check error and revision": _smoke,
    "migration error, revisions, lint finding": _migration,
    "rollback reason and revisions": _rollback,
    "canary reason, revisions, actor, release, steps and evidence": _canary,
}


def strings(value: Any) -> Iterator[str]:
    """Every string of a Slack payload: the fallback text and each block's every field."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings(item)


def deliver(client: Any, sink: Any, text: str, source: str) -> dict[str, Any]:
    """Push one delivery carrying ``text`` and return the one Slack payload it made."""
    state, _ = sink
    topic, body = SOURCES[source](text)
    assert push(client, topic, body).status_code == 200
    [message] = state.messages(WEBHOOK_PATH)
    return dict(message.body)


@pytest.mark.parametrize("source", list(SOURCES))
def test_untrusted_text_never_becomes_a_live_mention_or_link(
    make_notify: NotifyFactory, sink: Any, source: str
) -> None:
    client, _ = make_notify(group_wait_s=0.05)
    payload = deliver(client, sink, INJECTION, source)
    live = [s for s in strings(payload) if LIVE.search(s)]
    assert live == []
    assert "&lt;!here&gt;" in payload["text"], "the text is shown, escaped, not dropped"
    assert "&lt;!here&gt;" in json.dumps(payload["blocks"])


@pytest.mark.parametrize("source", list(SOURCES))
def test_a_registered_secret_is_masked_in_every_field_even_after_escaping(
    make_notify: NotifyFactory, sink: Any, source: str
) -> None:
    """A secret holding ``<`` and ``&`` is escaped on its way into mrkdwn and must still
    be masked there, in the header's plain text and in the fallback text."""
    state, _ = sink
    secret = f"pw<&>{uuid.uuid4().hex[:12]}"
    client, deps = make_notify(group_wait_s=0.05)
    deps.secrets.resolve(secret)  # a secret configured as a value: registered as resolved
    payload = deliver(client, sink, f"leaked {secret} here", source)
    forms = {secret, mrkdwn_escape(secret), secret.replace("<", "\u2039").replace(">", "\u203a")}
    fragment = secret[-12:]  # the random part: no cut, escape or look-alike may leave it
    leaks = [s for s in strings(payload) if fragment in s or any(f in s for f in forms)]
    assert leaks == []
    assert MASK in payload["text"]
    assert [r for r in state.received() if fragment in json.dumps(r.body)] == []


@pytest.mark.parametrize(
    ("config", "posted"),
    [({}, 0), ({"filters": {"migration_skipped": True}}, 1)],
    ids=["default", "opted-in"],
)
def test_a_migration_skip_is_posted_only_when_the_config_opts_in(
    make_notify: NotifyFactory, sink: Any, config: dict[str, Any], posted: int
) -> None:
    """A build migrate does not select (a manual build) is recorded, not a message."""
    state, _ = sink
    client, _ = make_notify(config)
    data, attributes = golden("ops", "migration_skipped")
    assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    assert len(state.messages(WEBHOOK_PATH)) == posted


@pytest.mark.parametrize(
    ("config", "posted"),
    [({}, 0), ({"filters": {"rollback_skipped": True}}, 1)],
    ids=["default", "opted-in"],
)
def test_a_rollback_skip_is_posted_only_when_the_config_opts_in(
    make_notify: NotifyFactory, sink: Any, config: dict[str, Any], posted: int
) -> None:
    """A rollback with nothing to do (e.g. one of a storm's later incidents) is recorded,
    not a message: only succeeded, failed and frozen reach Slack by default."""
    state, _ = sink
    client, _ = make_notify(config)
    data, attributes = golden("ops", "rollback_skipped")
    assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    assert len(state.messages(WEBHOOK_PATH)) == posted
