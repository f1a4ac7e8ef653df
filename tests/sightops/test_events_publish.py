"""`sightops events publish` takes what people have at hand (docs/cli.md, "events publish"):
a Cloud Build resource as gcloud prints it, a Monitoring webhook body, a Pub/Sub message,
our own events; each checked by its consumers' parser before anything is published."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.events import BuildStatus, parse_build_message, parse_incident_message
from shared.settings import get_settings
from sightops.cli import app
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from tests.helpers import GOLDEN

runner = CliRunner()
DESCRIBE = GOLDEN / "cloudbuild" / "gcloud" / "builds_describe_success.json"
INCIDENT = GOLDEN / "monitoring" / "incident_1_2_open.json"

Pull = Callable[..., list[Any]]


@pytest.fixture
def project(database_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A Pub/Sub project of this test's own on the emulator: other tests publish too."""
    name = f"cli-{uuid.uuid4().hex[:10]}"
    monkeypatch.setenv("SIGHTOPS_LOCAL", "0")  # a `make dev` running beside the tests is not ours
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    monkeypatch.setenv("GCP_PROJECT", name)
    get_settings.cache_clear()
    yield name
    get_settings.cache_clear()


@pytest.fixture
def subscribe(project: str) -> Callable[[str], Pull]:
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    def make(topic: str) -> Pull:
        ensure_topic(publisher, project, topic)
        sub = ensure_subscription(subscriber, project, f"pub-{uuid.uuid4().hex[:8]}", topic)

        def pull(timeout: float = 5.0) -> list[Any]:
            """What is on the topic; a publish has completed before the command returned."""
            response = subscriber.pull(subscription=sub, max_messages=10, timeout=timeout)
            return [m.message for m in response.received_messages]

        return pull

    return make


def publish(*args: str) -> Any:
    return runner.invoke(app, ["events", "publish", *args], env={"COLUMNS": "200"})


def test_a_gcloud_builds_describe_file_goes_to_cloud_builds_as_cloud_build_publishes_it(
    project: str, subscribe: Callable[[str], Pull]
) -> None:
    pull = subscribe("cloud-builds")
    result = publish("--file", str(DESCRIBE))
    assert result.exit_code == 0, result.output
    [message] = pull()
    resource = json.loads(DESCRIBE.read_text())
    assert dict(message.attributes) == {"buildId": resource["id"], "status": "SUCCESS"}
    assert json.loads(message.data) == resource
    build = parse_build_message(message.data, dict(message.attributes))
    assert build.status is BuildStatus.SUCCESS and build.service == "sight-api"


def test_a_build_with_its_own_topic_named_is_published(
    project: str, subscribe: Callable[[str], Pull]
) -> None:
    pull = subscribe("cloud-builds")
    result = publish("--file", str(DESCRIBE), "--topic", "cloud-builds")
    assert result.exit_code == 0, result.output
    assert len(pull()) == 1


def test_a_build_named_for_another_topic_is_refused_and_nothing_is_published(
    project: str, subscribe: Callable[[str], Pull]
) -> None:
    pull = subscribe("monitoring-alerts")
    result = publish("--file", str(DESCRIBE), "--topic", "monitoring-alerts")
    assert result.exit_code == 2
    [line] = result.stderr.strip().splitlines()
    assert "'monitoring-alerts' is not where a Cloud Build notification goes" in line
    assert "'cloud-builds'" in line
    assert pull(timeout=1.0) == []


def test_a_monitoring_webhook_body_goes_to_monitoring_alerts_without_attributes(
    project: str, subscribe: Callable[[str], Pull]
) -> None:
    pull = subscribe("monitoring-alerts")
    result = publish("--file", str(INCIDENT))
    assert result.exit_code == 0, result.output
    [message] = pull()
    assert dict(message.attributes) == {}
    incident = parse_incident_message(message.data, {}).incident
    assert incident.incident_id == json.loads(INCIDENT.read_text())["incident"]["incident_id"]


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (
            {"id": "b-1", "createTime": "yesterday", "status": "SUCCESS"},
            "not a valid cloud-builds message",
        ),
        (
            {"data": {"service": "sight-api"}, "attributes": {"type": "sight.ops.smoke.failed"}},
            "not a valid smoke-tests message",
        ),
        ({"incident": {"state": "open"}}, "not a valid monitoring-alerts message"),
        ({"hello": "world"}, "cannot tell what this is"),
        ([{"id": "b-1"}], "holds a JSON array"),
    ],
    ids=["bad-build", "ops-message-missing-envelope", "bad-incident", "unknown", "array"],
)
def test_bad_input_is_one_line_saying_what_is_wrong_and_nothing_is_published(
    project: str, tmp_path: Path, subscribe: Callable[[str], Pull], content: Any, reason: str
) -> None:
    pulls = [subscribe(t) for t in ("cloud-builds", "smoke-tests", "monitoring-alerts")]
    path = tmp_path / "input.json"
    path.write_text(json.dumps(content))
    result = publish("--file", str(path))
    assert result.exit_code == 2, result.output
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and reason in line
    assert "Traceback" not in result.output
    assert [pull(timeout=1.0) for pull in pulls] == [[], [], []]


def test_an_emulator_that_is_down_is_named_with_its_address_at_once(
    project: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{port}")
    get_settings.cache_clear()
    result = publish("--file", str(DESCRIBE))
    assert result.exit_code == 3
    assert result.stderr.strip() == (
        f"error: Pub/Sub is unreachable at 127.0.0.1:{port} (PUBSUB_EMULATOR_HOST)"
        " (not listening): is `make dev` running? (`make services-up` starts the services alone)"
    )


def test_a_budget_notification_goes_to_billing_budget_as_cloud_billing_publishes_it(
    project: str, subscribe: Callable[[str], Pull]
) -> None:
    from shared.events import parse_budget_message

    budget = GOLDEN / "billing" / "budget_exceeded.json"
    pull = subscribe("billing-budget")
    result = publish("--file", str(budget))
    assert result.exit_code == 0, result.output
    [message] = pull()
    golden = json.loads(budget.read_text())
    assert dict(message.attributes) == golden["attributes"]
    assert parse_budget_message(message.data, dict(message.attributes)).crossing == (
        "actual",
        0.9,
    )
