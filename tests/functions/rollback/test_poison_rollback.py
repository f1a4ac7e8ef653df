"""rollback and poison text: NUL or a lone surrogate in a service, revision or label.

PostgreSQL refuses NUL in ``text`` (SQLSTATE 22021) and nothing encodes a lone surrogate
as UTF-8, so such a message can never be handled. It must be answered 2xx on its first
delivery and kept in ``ops.rejected_events`` with the reason (docs/architecture.md),
not retried five times into the dead-letter topic. Lone surrogates arrive as JSON
escapes (``"\\ud800"``), which is how a producer can send one.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.events import EventType
from tests.functions.rollback.conftest import Env
from tests.helpers import envelope, push, rejected_events

NUL = "\x00"
LONE_SURROGATE = "\ud800"


def push_incident(env: Env, body: bytes) -> tuple[Any, str]:
    pushed = envelope(body, {})
    return push(env.client, "monitoring-alerts", pushed), pushed["message"]["messageId"]


def incident_with(env: Env, revision: str, edit: Any) -> bytes:
    body = json.loads(env.incident(revision))
    edit(body["incident"])
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as \ud800


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    ("where", "edit"),
    [
        (
            "resource.labels.service_name",
            lambda i, bad: i["resource"]["labels"].update(service_name="svc" + bad),
        ),
        (
            "resource.labels.revision_name",
            lambda i, bad: i["resource"]["labels"].update(revision_name="rev" + bad),
        ),
        (
            "policy_user_labels.auto_rollback",
            lambda i, bad: i["policy_user_labels"].update(auto_rollback="true" + bad),
        ),
        (
            "policy_user_labels",
            lambda i, bad: i["policy_user_labels"].update({"team" + bad: "platform"}),
        ),
    ],
)
def test_an_incident_with_poison_text_in_an_identifier_is_kept_and_acknowledged(
    env: Env, where: str, edit: Any, bad: str
) -> None:
    _, _, v3 = env.deploy()
    body = incident_with(env, v3, lambda incident: edit(incident, bad))
    response, message_id = push_incident(env, body)
    assert response.status_code == 200, "acknowledged on the first delivery"
    [kept] = rejected_events(env.deps.engine, "rollback", message_id)
    assert f"incident.{where}" in kept.reason
    assert bytes(kept.payload) == body, "kept byte for byte, so it can be replayed"
    assert env.patches() == 0


def smoke_failed_with(env: Env, accused: str, /, **changes: str) -> tuple[bytes, dict[str, str]]:
    data, attributes = env.smoke(False, accused)
    payload = json.loads(data)
    payload.update(changes)
    if "service" in changes:
        attributes["service"] = changes["service"]
    return json.dumps(payload).encode(), attributes


@pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize("field", ["service", "revision", "region"])
def test_a_smoke_failure_with_poison_text_is_kept_and_acknowledged(
    env: Env, field: str, bad: str
) -> None:
    _, _, v3 = env.deploy()
    original = {"service": env.service, "revision": v3, "region": "europe-west1"}[field]
    data, attributes = smoke_failed_with(env, v3, **{field: original + bad})
    assert attributes["type"] == EventType.SMOKE_FAILED.value
    response = push(env.client, "smoke-tests", envelope(data, attributes))
    assert response.status_code == 200, "acknowledged on the first delivery"
    [kept] = rejected_events(env.deps.engine, "rollback", attributes["id"])
    assert f"data.{field}" in kept.reason
    assert bytes(kept.payload) == data
    assert env.patches() == 0
    assert env.health() == {}, "nothing was learned from a message that was not handled"
