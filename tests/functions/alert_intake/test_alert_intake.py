"""alert_intake through functions-framework, publishing to the real emulator.

"Nothing published" is proven by order, not by waiting: after the refused requests one
valid request is made, and the topic's fresh pull subscription must then hold exactly
that one message.
"""

from __future__ import annotations

import base64
import io
import json
import os
import uuid
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from google.api_core.exceptions import DeadlineExceeded
from pydantic import SecretStr

from shared.intake import authorised
from shared.log import redact
from shared.runtime import Deps, set_process_deps
from shared.secrets import Secrets
from shared.settings import IntakeConfig, Settings, Topics
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import secretmanager, serve
from tests.helpers import GOLDEN, PROJECT, ROOT

SOURCE = ROOT / "functions" / "alert_intake" / "main.py"
USER = "monitoring"
PASSWORD = "intake-test-password-5f3a"
LIMIT = 4096


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


GOOD = basic(USER, PASSWORD)


def golden_body(name: str) -> bytes:
    return (GOLDEN / "monitoring" / f"{name}.json").read_bytes()


@pytest.fixture(scope="module")
def pubsub() -> Iterator[tuple[Any, Any]]:
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    ensure_topic(publisher, PROJECT, "monitoring-alerts")
    yield publisher, subscriber


@pytest.fixture
def subscription(pubsub: tuple[Any, Any]) -> Iterator[str]:
    _, subscriber = pubsub
    name = ensure_subscription(
        subscriber, PROJECT, f"intake-test-{uuid.uuid4().hex[:8]}", "monitoring-alerts"
    )
    yield name
    subscriber.delete_subscription(subscription=name)


def pull(subscriber: Any, subscription: str, want: int) -> list[Any]:
    """Pull until ``want`` messages arrived (or a few empty pulls), acking them."""
    got: list[Any] = []
    empty = 0
    while len(got) < want + 1 and empty < (3 if len(got) >= want else 20):
        try:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 50}, timeout=1
            )
        except DeadlineExceeded:
            empty += 1
            continue
        if not response.received_messages:
            empty += 1
            continue
        got.extend(m.message for m in response.received_messages)
        subscriber.acknowledge(
            request={
                "subscription": subscription,
                "ack_ids": [m.ack_id for m in response.received_messages],
            }
        )
    return got


@pytest.fixture
def sm() -> Iterator[str]:
    state = secretmanager.SecretManagerState()
    state.add_version("alert-intake-password", PASSWORD)
    with serve(secretmanager.create_app(state)) as running:
        yield running.url


def intake_client(settings: Settings, deps: Deps, sm_url: str, **intake: Any) -> Any:
    """The password comes from the Secret Manager stand-in by reference."""
    values: dict[str, Any] = {
        "username": SecretStr(USER),
        "password": SecretStr(f"projects/{PROJECT}/secrets/alert-intake-password/versions/latest"),
        "max_body_bytes": LIMIT,
    }
    values.update(intake)
    configured = settings.model_copy(
        update={"intake": IntakeConfig(**values), "secret_manager_endpoint": sm_url}
    )
    d = Deps(configured, metrics=deps.metrics, engine=deps.engine, publisher=deps.publisher)
    d.__dict__["secrets"] = Secrets(configured)
    set_process_deps(d)
    app = functions_framework.create_app(
        target="alert_intake", source=str(SOURCE), signature_type="http"
    )
    return app.test_client()


@pytest.fixture
def client(settings: Settings, deps: Deps, sm: str) -> Any:
    return intake_client(settings, deps, sm)


@pytest.mark.parametrize(
    "name", ["incident_1_2_open", "incident_1_2_closed", "incident_1_1", "test_notification"]
)
def test_versions_1_2_1_1_and_test_are_published_with_attributes(
    client: Any, pubsub: Any, subscription: str, name: str
) -> None:
    body = golden_body(name)
    response = client.post("/", data=body, headers=GOOD, content_type="application/json")
    assert response.status_code == 202
    [message] = pull(pubsub[1], subscription, 1)
    assert message.data == body
    incident = json.loads(body)["incident"]
    assert message.attributes["incident_id"] == incident["incident_id"]
    assert message.attributes["state"] == incident["state"].lower()
    assert message.attributes["version"] == json.loads(body)["version"]
    assert "type" not in message.attributes and "buildId" not in message.attributes
    assert response.get_json() == {"published": message.message_id}


@pytest.mark.parametrize(
    ("headers", "why"),
    [
        ({}, "no credentials"),
        (basic(USER, "wrong-password"), "wrong password"),
        (basic("someone", PASSWORD), "wrong user"),
        (basic(USER, PASSWORD + "x"), "password with a suffix"),
        (basic("", ""), "empty credentials"),
        ({"Authorization": "Bearer " + PASSWORD}, "another scheme"),
        ({"Authorization": "Basic not-base64!"}, "malformed header"),
        ({"Authorization": "Basic " + base64.b64encode(USER.encode()).decode()}, "no colon"),
    ],
)
def test_bad_credentials_get_401_with_a_challenge_and_publish_nothing(
    client: Any, pubsub: Any, subscription: str, headers: dict[str, str], why: str
) -> None:
    response = client.post("/", data=golden_body("incident_1_2_open"), headers=headers)
    assert response.status_code == 401, why
    assert response.headers["WWW-Authenticate"].startswith("Basic realm=")
    assert client.post("/", data=golden_body("incident_1_1"), headers=GOOD).status_code == 202
    [only] = pull(pubsub[1], subscription, 1)
    assert json.loads(only.data)["version"] == "1.1"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not valid JSON"),
        (b"[]", "must be a JSON object"),
        (b'{"version": "9.9", "incident": {"incident_id": "x"}}', "version"),
        (b'{"version": "1.2", "incident": {}}', "incident_id"),
        (b'{"version": "1.2"}', "incident"),
        (b"", "empty"),
    ],
)
def test_malformed_bodies_get_400_with_the_reason_and_publish_nothing(
    client: Any, pubsub: Any, subscription: str, body: bytes, reason: str
) -> None:
    response = client.post("/", data=body, headers=GOOD)
    assert response.status_code == 400
    assert reason in response.get_json()["error"]["message"]
    assert client.post("/", data=golden_body("incident_1_1"), headers=GOOD).status_code == 202
    assert len(pull(pubsub[1], subscription, 1)) == 1


def test_too_large_bodies_get_413_and_publish_nothing(
    client: Any, pubsub: Any, subscription: str
) -> None:
    big = json.loads(golden_body("incident_1_2_open"))
    big["incident"]["summary"] = "x" * LIMIT
    data = json.dumps(big).encode()
    assert client.post("/", data=data, headers=GOOD).status_code == 413

    # Chunked, no Content-Length (what a WSGI server marks wsgi.input_terminated): the
    # read itself is bounded at limit+1 bytes.
    response = client.post(
        "/",
        input_stream=io.BytesIO(data),
        headers={**GOOD, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert response.status_code == 413
    assert client.post("/", data=golden_body("incident_1_1"), headers=GOOD).status_code == 202
    assert len(pull(pubsub[1], subscription, 1)) == 1


def test_a_too_large_body_with_bad_credentials_is_refused_as_401(client: Any) -> None:
    response = client.post("/", data=b"x" * (LIMIT * 4), headers=basic(USER, "nope"))
    assert response.status_code == 401


def test_only_post_is_accepted(client: Any) -> None:
    response = client.get("/", headers=GOOD)
    assert response.status_code == 405 and response.headers["Allow"] == "POST"


def test_a_failed_publish_is_503_so_cloud_monitoring_retries(
    settings: Settings, deps: Deps, sm: str
) -> None:
    missing = settings.model_copy(
        update={"topics": Topics(monitoring_alerts=f"no-such-topic-{uuid.uuid4().hex[:6]}")}
    )
    client = intake_client(missing, deps, sm)
    response = client.post("/", data=golden_body("incident_1_2_open"), headers=GOOD)
    assert response.status_code == 503


def test_without_configured_credentials_nothing_is_accepted(
    settings: Settings, deps: Deps, sm: str
) -> None:
    client = intake_client(settings, deps, sm, username=None, password=None)
    response = client.post("/", data=golden_body("incident_1_2_open"), headers=GOOD)
    assert response.status_code == 503


def test_credentials_check_compares_user_and_password_in_full() -> None:
    expected = (b"user", b"secret")
    header = basic("user", "secret")["Authorization"]
    assert authorised(header, expected)
    assert not authorised(basic("user", "secre")["Authorization"], expected)
    assert not authorised(basic("use", "secret")["Authorization"], expected)
    assert not authorised(None, expected)
    assert not authorised(basic("", "")["Authorization"], (b"", b""))


def test_the_user_name_is_not_masked_the_password_is(
    client: Any, pubsub: Any, subscription: str
) -> None:
    """Only the password is a secret: masking the Basic-auth user ("monitoring") would cut
    that word out of every incident URL notify renders (console.cloud.google.com/monitoring/...)."""
    assert client.post("/", data=golden_body("incident_1_2_open"), headers=GOOD).status_code == 202
    url = "https://console.cloud.google.com/monitoring/alerting/incidents/0.x?project=p"
    assert redact(url) == url
    assert PASSWORD not in redact(f"password={PASSWORD}")
