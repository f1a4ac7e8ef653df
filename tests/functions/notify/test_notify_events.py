"""notify on all four topics: routing, filters, ops events, exactly-once, Redis down."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import redis
from sqlalchemy import text

from shared.runtime import Deps
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.helpers import GOLDEN, envelope, push

CRITICAL_PATH = "/services/T0TEST/B0CRIT/criticalsecret"
BUILDS_PATH = "/services/T0TEST/B0BUILD/buildssecret"


def golden(folder: str, name: str, **changes: Any) -> tuple[bytes, dict[str, str]]:
    """A golden message with a fresh id (and optional data changes)."""
    message = json.loads((GOLDEN / folder / f"{name}.json").read_text())
    data, attributes = dict(message["data"]), dict(message["attributes"])
    data.update(changes)
    if "id" in attributes:
        attributes["id"] = str(uuid.uuid4())
        attributes["time"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    if "buildId" in attributes:
        data["id"] = attributes["buildId"] = str(uuid.uuid4())
    return json.dumps(data).encode(), attributes


def incident_body(name: str = "incident_1_2_open", **changes: Any) -> bytes:
    body = json.loads((GOLDEN / "monitoring" / f"{name}.json").read_text())
    body["incident"].update(changes)
    return json.dumps(body).encode()


def actions(deps: Deps, **detail: str) -> list[dict[str, Any]]:
    where = " AND ".join(f"detail->>'{k}' = :{k}" for k in detail)
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT status, detail FROM ops.actions WHERE kind = 'notification'"
                f" AND {where} ORDER BY id"
            ),
            detail,
        ).all()
    return [{**r.detail, "status": r.status} for r in rows]


@pytest.mark.parametrize(
    "name",
    [
        "smoke_failed",
        "migration_succeeded",
        "migration_failed",
        "rollback_succeeded",
        "rollback_failed",
        "rollback_frozen",
    ],
)
def test_every_ops_event_posts_one_message_and_records_it(
    make_notify: NotifyFactory, sink: Any, name: str
) -> None:
    state, _ = sink
    client, deps = make_notify()
    data, attributes = golden("ops", name)
    assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["blocks"][0]["type"] == "header"
    assert [a["status"] for a in actions(deps, event_id=attributes["id"])] == ["sent"]


def test_smoke_passed_and_kpi_requests_send_nothing(make_notify: NotifyFactory, sink: Any) -> None:
    state, _ = sink
    client, _ = make_notify()
    for topic, name in (("smoke-tests", "smoke_passed"), ("kpi-refresh", "kpi_refresh_requested")):
        assert push(client, topic, envelope(*golden("ops", name))).status_code == 200
    assert state.received() == []


def test_build_filters_select_statuses_and_triggers(make_notify: NotifyFactory, sink: Any) -> None:
    state, _ = sink
    client, _ = make_notify(
        {
            "filters": {
                "builds": {"statuses": ["FAILURE"], "triggers": {"trigger_names": ["sight-api-ci"]}}
            }
        }
    )
    push(client, "cloud-builds", envelope(*golden("cloudbuild", "success_triggered")))
    push(client, "cloud-builds", envelope(*golden("cloudbuild", "failure")))
    other = golden("cloudbuild", "failure", substitutions={"TRIGGER_NAME": "docs-ci"})
    push(client, "cloud-builds", envelope(*other))
    [message] = state.messages()
    assert "FAILURE" in message.body["text"] and "sight-api-ci" in message.body["text"]


def test_routes_pick_webhooks_by_kind_severity_and_service(
    make_notify: NotifyFactory, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, running = sink
    monkeypatch.setenv("TEST_CRITICAL_WEBHOOK", running.url + CRITICAL_PATH)
    monkeypatch.setenv("TEST_BUILDS_WEBHOOK", running.url + BUILDS_PATH)
    client, _ = make_notify(
        {
            "routes": [
                {
                    "name": "critical",
                    "match": {"severities": ["critical"], "services": ["sight-api"]},
                    "webhook": "env:TEST_CRITICAL_WEBHOOK",
                },
                {
                    "name": "builds",
                    "match": {"kinds": ["build"]},
                    "webhook": "env:TEST_BUILDS_WEBHOOK",
                },
            ]
        }
    )
    push(client, "cloud-builds", envelope(*golden("cloudbuild", "failure")))
    push(client, "ops-events", envelope(*golden("ops", "rollback_frozen")))  # critical
    push(client, "ops-events", envelope(*golden("ops", "migration_succeeded")))  # default
    assert len(state.messages(BUILDS_PATH)) == 1
    assert "frozen" in state.messages(CRITICAL_PATH)[0].body["text"]
    assert "Migration succeeded" in state.messages(WEBHOOK_PATH)[0].body["text"]


def test_a_route_can_continue_to_the_next_one(
    make_notify: NotifyFactory, sink: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    state, running = sink
    monkeypatch.setenv("TEST_CRITICAL_WEBHOOK", running.url + CRITICAL_PATH)
    client, _ = make_notify(
        {
            "routes": [
                {
                    "name": "oncall",
                    "match": {"types": ["sight.ops.rollback.f*"]},
                    "webhook": "env:TEST_CRITICAL_WEBHOOK",
                    "continue": True,
                },
                {"name": "everything", "webhook": "default"},
            ]
        }
    )
    push(client, "ops-events", envelope(*golden("ops", "rollback_failed")))
    assert len(state.messages(CRITICAL_PATH)) == 1
    assert len(state.messages(WEBHOOK_PATH)) == 1


def test_webhook_from_secret_manager_reference(
    make_notify: NotifyFactory, sink: Any, deps: Deps
) -> None:
    """The route names a Secret Manager reference; the stand-in holds the URL."""
    from shared.secrets import Secrets
    from standins import secretmanager, serve

    state, running = sink
    sm = secretmanager.SecretManagerState()
    sm.add_version("slack-builds", running.url + BUILDS_PATH)
    with serve(secretmanager.create_app(sm)) as sm_server:
        client, d = make_notify(
            {
                "routes": [
                    {
                        "name": "builds",
                        "match": {"kinds": ["build"]},
                        "webhook": "projects/sight-local/secrets/slack-builds/versions/latest",
                    }
                ]
            },
            settings_update={"secret_manager_endpoint": sm_server.url},
        )
        d.__dict__["secrets"] = Secrets(d.settings)
        push(client, "cloud-builds", envelope(*golden("cloudbuild", "timeout")))
    assert len(state.messages(BUILDS_PATH)) == 1
    assert sm.access_count("slack-builds") == 1


def test_slack_success_with_a_lost_commit_is_not_sent_twice(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """Slack took the message but the delivery's transaction never committed (simulated
    by deleting the receipt): the redelivery finds the Redis sent-marker and only
    records the action."""
    state, _ = sink
    client, deps = make_notify()
    data, attributes = golden("cloudbuild", "failure")
    body = envelope(data, attributes)
    assert push(client, "cloud-builds", body).status_code == 200
    with deps.engine.begin() as conn:
        conn.execute(
            text("DELETE FROM ops.event_receipts WHERE consumer = 'notify' AND event_id = :k"),
            {"k": f"build:{attributes['buildId']}:FAILURE"},
        )
    assert push(client, "cloud-builds", body).status_code == 200
    assert len(state.messages()) == 1
    recorded = actions(deps, build_id=attributes["buildId"])
    assert [a["status"] for a in recorded] == ["sent", "sent"]
    assert recorded[1]["note"] == "delivered by an earlier attempt"


def test_same_build_status_published_twice_sends_one_message(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify()
    data, attributes = golden("cloudbuild", "success_triggered")
    push(client, "cloud-builds", envelope(data, attributes))  # two Pub/Sub messages,
    push(client, "cloud-builds", envelope(data, attributes))  # different message ids
    assert len(state.messages()) == 1


def test_test_notification_is_posted_at_once_without_grouping(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify(group_wait_s=30)
    body = (GOLDEN / "monitoring" / "test_notification.json").read_bytes()
    assert push(client, "monitoring-alerts", envelope(body)).status_code == 200
    [message] = state.messages()
    assert message.body["blocks"][0]["text"]["text"].startswith("[TEST]")


def test_with_redis_down_every_alert_is_sent_on_its_own(
    make_notify: NotifyFactory, sink: Any, caplog: pytest.LogCaptureFixture
) -> None:
    state, _ = sink
    dead = redis.Redis(host="127.0.0.1", port=1, socket_timeout=0.2, socket_connect_timeout=0.2)
    client, _ = make_notify(redis_client=dead, group_wait_s=5)
    for n in range(3):
        body = incident_body(incident_id=f"0.down{n}-{uuid.uuid4().hex[:6]}")
        assert push(client, "monitoring-alerts", envelope(body)).status_code == 200
    assert len(state.messages()) == 3
    assert any("redis unavailable" in r.getMessage() for r in caplog.records)


def test_duplicate_incident_notifications_are_one_alert(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """Cloud Monitoring retried its webhook: two messages, same incident and state."""
    state, _ = sink
    client, _ = make_notify(group_wait_s=0.3, group_interval_s=0.5)
    body = incident_body(incident_id=f"0.dup-{uuid.uuid4().hex[:6]}")
    assert push(client, "monitoring-alerts", envelope(body)).status_code == 200
    assert push(client, "monitoring-alerts", envelope(body)).status_code == 200
    assert len(state.messages()) == 1


@pytest.mark.skipif(os.environ.get("CI_SKIP_SLOW") == "1", reason="slow")
def test_incident_published_to_the_emulator_reaches_slack(
    make_notify: NotifyFactory, sink: Any
) -> None:
    """emulator `monitoring-alerts` -> push subscription -> notify -> grouped -> Slack."""
    import time

    import functions_framework
    from google.cloud import pubsub_v1

    from sightops.pubsub_admin import ensure_subscription, ensure_topic
    from standins import serve
    from tests.functions.notify.conftest import SOURCE
    from tests.helpers import PROJECT

    state, _ = sink
    make_notify(group_wait_s=0.5)
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    app = functions_framework.create_app(
        target="notify", source=str(SOURCE), signature_type="cloudevent"
    )
    with serve(app) as function:
        ensure_topic(publisher, PROJECT, "monitoring-alerts")
        subscription = ensure_subscription(
            subscriber,
            PROJECT,
            f"notify-alerts-{uuid.uuid4().hex[:8]}",
            "monitoring-alerts",
            push_to=f"{function.url}/projects/{PROJECT}/topics/monitoring-alerts",
        )
        try:
            incident_id = f"0.emu-{uuid.uuid4().hex[:8]}"
            publisher.publish(
                f"projects/{PROJECT}/topics/monitoring-alerts",
                incident_body(incident_id=incident_id),
            ).result(timeout=10)
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not state.messages():
                time.sleep(0.1)
            [message] = state.messages()
            assert incident_id in json.dumps(message.body)
        finally:
            subscriber.delete_subscription(subscription=subscription)
