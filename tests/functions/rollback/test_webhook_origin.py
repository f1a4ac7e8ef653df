"""Only incidents from Cloud Monitoring's Pub/Sub notification channel may move traffic.

alert_intake (the webhook: public when enabled, Basic auth) publishes to the same
``monitoring-alerts`` topic; what it publishes carries ``origin=webhook``, set by our code.
rollback's subscription filters those out (terraform/pubsub.tf, sightops/topology.py) and
its handler skips them too (docs/rollback.md): a leaked intake password must not be
enough to roll production back.
"""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from pydantic import SecretStr

from shared.events import EventType
from shared.runtime import Deps, set_process_deps
from shared.settings import IntakeConfig
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from tests.functions.rollback.conftest import Env
from tests.helpers import PROJECT, ROOT, envelope, push

INTAKE = ROOT / "functions" / "alert_intake" / "main.py"
USER, PASSWORD = "intake-webhook-user-3b7d", "intake-test-password-0c9e"  # pragma: allowlist secret


class Webhook:
    """alert_intake served in-process, publishing to a private monitoring-alerts topic."""

    def __init__(self, client: Any, subscriber: Any, subscription: str) -> None:
        self.client = client
        self.subscriber = subscriber
        self.subscription = subscription

    def post(self, body: bytes) -> Any:
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        return self.client.post(
            "/",
            data=body,
            headers={"Authorization": f"Basic {token}"},
            content_type="application/json",
        )

    def published(self) -> Any:
        """The one message alert_intake published, as Pub/Sub delivers it."""
        response = self.subscriber.pull(
            request={"subscription": self.subscription, "max_messages": 10}, timeout=10
        )
        [received] = response.received_messages
        self.subscriber.acknowledge(
            request={"subscription": self.subscription, "ack_ids": [received.ack_id]}
        )
        return received.message


@pytest.fixture
def webhook(env: Env, pubsub_clients: tuple[Any, Any]) -> Iterator[Webhook]:
    publisher, subscriber = pubsub_clients
    topic = f"monitoring-alerts-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    subscription = ensure_subscription(subscriber, PROJECT, f"{topic}-pull", topic)
    # One Deps for both functions served in this process: rollback's settings plus the
    # intake credentials and the private topic.
    settings = env.deps.settings.model_copy(
        update={
            "intake": IntakeConfig(username=SecretStr(USER), password=SecretStr(PASSWORD)),
            "topics": env.deps.settings.topics.model_copy(update={"monitoring_alerts": topic}),
        }
    )
    env.deps = Deps(
        settings, metrics=env.deps.metrics, engine=env.deps.engine, publisher=env.deps.publisher
    )
    set_process_deps(env.deps)
    app = functions_framework.create_app(target="alert_intake", source=str(INTAKE))
    yield Webhook(app.test_client(), subscriber, subscription)
    subscriber.delete_subscription(subscription=subscription)


def test_an_incident_posted_to_the_webhook_never_moves_traffic_the_channels_copy_does(
    env: Env, webhook: Webhook
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    body = env.incident(v3)

    assert webhook.post(body).status_code == 202
    message = webhook.published()
    assert message.attributes["origin"] == "webhook"
    delivered = envelope(message.data, dict(message.attributes), message_id=message.message_id)
    assert push(env.client, "monitoring-alerts", delivered).status_code == 200
    assert env.patches() == 0
    assert env.serving() == {v3: 100}
    assert env.health() == {v1: "good"}, "a webhook incident is no evidence either"
    # Only the ledger's fact of the incident (docs/rollback.md, "Ledger rows").
    assert [a["kind"] for a in env.actions()] == ["incident"]
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="skipped") >= 1

    # The same notification from the Pub/Sub notification channel (no attributes) acts:
    # the webhook's copy did not take its place in the deduplication either.
    assert push(env.client, "monitoring-alerts", envelope(body, {})).status_code == 200
    assert env.serving() == {v1: 100}
    [event] = env.published.wait(1)
    assert event.type is EventType.ROLLBACK_SUCCEEDED
    assert env.health()[v3] == "bad"


def test_a_webhook_incident_redelivered_is_skipped_again_and_never_retried(
    env: Env, webhook: Webhook
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    assert webhook.post(env.incident(v3)).status_code == 202
    message = webhook.published()
    delivered = envelope(message.data, dict(message.attributes), message_id=message.message_id)
    for _ in range(2):
        assert push(env.client, "monitoring-alerts", delivered).status_code == 200
    assert env.patches() == 0
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="duplicate") >= 1


def test_the_local_topology_filters_webhook_incidents_out_of_rollbacks_subscription(
    pubsub_clients: tuple[Any, Any],
) -> None:
    """The same filter as terraform/pubsub.tf. The emulator (0.8.20) stores it but does not
    apply it, so locally the handler's own check is what keeps webhook incidents out."""
    from sightops.pubsub_admin import setup, teardown
    from sightops.topology import FUNCTIONS

    publisher, subscriber = pubsub_clients
    project = f"filters-{uuid.uuid4().hex[:8]}"
    created = setup(
        os.environ["PUBSUB_EMULATOR_HOST"],
        project,
        [f for f in FUNCTIONS if f.name in {"rollback", "notify"}],
        timeline=False,
    )
    try:
        filters = {
            path.rsplit("/", 1)[1]: subscriber.get_subscription(subscription=path).filter
            for path in created
        }
    finally:
        teardown(os.environ["PUBSUB_EMULATOR_HOST"], created)
        for topic in publisher.list_topics(request={"project": f"projects/{project}"}):
            publisher.delete_topic(topic=topic.name)
    assert filters["rollback--monitoring-alerts"] == "NOT attributes:origin"
    assert filters["rollback--smoke-tests"] == ""
    assert filters["notify--monitoring-alerts"] == "", "notify reports webhook incidents too"


def test_alert_intake_marks_what_it_publishes_as_coming_from_the_webhook() -> None:
    from shared.events import parse_incident_body
    from shared.intake import attributes_for
    from shared.rollback import from_webhook
    from tests.helpers import GOLDEN

    body = (GOLDEN / "monitoring" / "incident_auto_rollback.json").read_bytes()
    attributes = attributes_for(parse_incident_body(body))
    assert from_webhook(attributes)
    assert not from_webhook({}), "the Pub/Sub notification channel sets no attributes"
    assert json.loads(body)["incident"]["incident_id"] == attributes["incident_id"]
