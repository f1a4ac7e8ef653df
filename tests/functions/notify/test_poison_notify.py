"""notify and poison text: NUL or a lone surrogate where notify routes or groups.

A name notify decides on (the service a route matches, the incident id it groups by)
that PostgreSQL cannot store or UTF-8 cannot encode makes the message invalid: answered
2xx on its first delivery, kept in ``ops.rejected_events`` with the reason, nothing sent
to Slack (docs/architecture.md). Text only shown to humans is cleaned instead, so an
odd character in a summary never costs the alert.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from tests.functions.notify.conftest import NotifyFactory
from tests.functions.notify.test_notify_events import golden, incident_body
from tests.helpers import envelope, push, rejected_events

NUL = "\x00"
LONE_SURROGATE = "\ud800"
POISON = pytest.mark.parametrize("bad", [NUL, LONE_SURROGATE], ids=["nul", "lone-surrogate"])


def with_labels(bad: str, where: str) -> bytes:
    body = json.loads(incident_body())
    incident = body["incident"]
    incident["incident_id"] = f"0.poison-{uuid.uuid4().hex[:8]}"
    if where == "service_name":
        incident["resource"] = {
            "type": "cloud_run_revision",
            "labels": {"service_name": "sight-api" + bad, "revision_name": "sight-api-00001"},
        }
    elif where == "policy_user_labels.service":
        incident["policy_user_labels"] = {"service": "sight-api" + bad}
    else:
        incident["incident_id"] += bad
    return json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as \ud800


@POISON
@pytest.mark.parametrize("where", ["service_name", "policy_user_labels.service", "incident_id"])
def test_an_incident_with_poison_text_in_what_notify_routes_on_is_kept_and_not_posted(
    make_notify: NotifyFactory, sink: Any, where: str, bad: str
) -> None:
    client, deps = make_notify(group_wait_s=0.1)
    data = with_labels(bad, where)
    body = envelope(data)
    assert push(client, "monitoring-alerts", body).status_code == 200
    [kept] = rejected_events(deps.engine, "notify", body["message"]["messageId"])
    assert where.split(".")[0] in kept.reason
    assert bytes(kept.payload) == data
    assert sink[0].received() == []


@POISON
def test_poison_text_in_an_incident_summary_is_cleaned_and_the_alert_still_posted(
    make_notify: NotifyFactory, sink: Any, bad: str
) -> None:
    client, deps = make_notify(group_wait_s=0.1)
    incident_id = f"0.summary-{uuid.uuid4().hex[:8]}"
    body = envelope(incident_body(incident_id=incident_id, summary=f"error rate {bad} high"))
    assert push(client, "monitoring-alerts", body).status_code == 200
    assert rejected_events(deps.engine, "notify", body["message"]["messageId"]) == []
    [message] = sink[0].messages()
    assert "error rate \ufffd high" in json.dumps(message.body, ensure_ascii=False)


@POISON
def test_a_smoke_result_with_poison_text_in_its_service_is_kept_and_not_posted(
    make_notify: NotifyFactory, sink: Any, bad: str
) -> None:
    client, deps = make_notify()
    data, attributes = golden("ops", "smoke_failed")
    payload = json.loads(data)
    payload["service"] += bad
    data = json.dumps(payload).encode()
    assert push(client, "smoke-tests", envelope(data, attributes)).status_code == 200
    [kept] = rejected_events(deps.engine, "notify", attributes["id"])
    assert "data.service" in kept.reason
    assert sink[0].received() == []
