"""The `sightops` CLI: publishing any event, and status."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.events import parse_ops_message
from shared.settings import get_settings
from sightops.cli import app, topic_for
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from tests.helpers import GOLDEN

runner = CliRunner()


@pytest.fixture
def cli_env(database_url: str) -> None:
    get_settings.cache_clear()  # the CLI reads settings from env: the test database


@pytest.fixture
def pull_from() -> Any:
    os.environ.setdefault("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()

    def make(topic: str) -> Any:
        ensure_topic(publisher, "sight-local", topic)
        sub = ensure_subscription(subscriber, "sight-local", f"cli-{uuid.uuid4().hex[:8]}", topic)

        def pull() -> list[Any]:
            response = subscriber.pull(subscription=sub, max_messages=10, timeout=10)
            return [m.message for m in response.received_messages]

        return pull

    return make


def test_publish_builds_a_typed_event_from_flags(cli_env: None, pull_from: Any) -> None:
    pull = pull_from("kpi-refresh")
    result = runner.invoke(
        app,
        [
            "events",
            "publish",
            "--type",
            "sight.ops.kpi.refresh_requested",
            "--data",
            '{"all_active": true}',
        ],
    )
    assert result.exit_code == 0, result.output
    assert "kpi-refresh" in result.output
    [message] = pull()
    event = parse_ops_message(message.data, dict(message.attributes))
    assert event.source == "sightops-cli"
    assert json.loads(message.data)["all_active"] is True


def test_publish_sends_a_golden_pubsub_message_as_is(cli_env: None, pull_from: Any) -> None:
    pull = pull_from("cloud-builds")
    golden = GOLDEN / "cloudbuild" / "working.json"
    result = runner.invoke(app, ["events", "publish", "--file", str(golden)])
    assert result.exit_code == 0, result.output
    [message] = pull()
    expected = json.loads(golden.read_text())
    assert dict(message.attributes) == expected["attributes"]
    assert json.loads(message.data) == expected["data"]


def test_publish_rejects_an_unknown_type_with_the_known_ones(cli_env: None) -> None:
    result = runner.invoke(app, ["events", "publish", "--type", "sight.ops.nope"])
    assert result.exit_code == 2
    assert "unknown event type" in result.output
    assert "sight.ops.smoke.failed" in result.output


def test_publish_rejects_an_invalid_payload_with_the_reason(cli_env: None) -> None:
    result = runner.invoke(
        app,
        ["events", "publish", "--type", "sight.ops.kpi.refresh_requested", "--data", "{}"],
    )
    assert result.exit_code == 2
    assert "exactly one of project_id or all_active" in result.output


@pytest.mark.parametrize(
    ("attributes", "data", "topic"),
    [
        ({"buildId": "b", "status": "SUCCESS"}, b"{}", "cloud-builds"),
        ({"type": "sight.ops.smoke.failed"}, b"{}", "smoke-tests"),
        ({"type": "sight.ops.rollback.frozen"}, b"{}", "ops-events"),
        ({}, b'{"incident": {}}', "monitoring-alerts"),
    ],
)
def test_topic_is_inferred_from_what_the_message_is(
    attributes: dict[str, str], data: bytes, topic: str
) -> None:
    assert topic_for(data, attributes) == topic


def test_status_shows_services_schema_revision_and_recent_actions(cli_env: None) -> None:
    result = runner.invoke(app, ["status"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "PostgreSQL" in result.output and "up" in result.output
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from tests.helpers import ROOT

    head = ScriptDirectory.from_config(Config(str(ROOT / "alembic.ini"))).get_current_head()
    assert f"database schema revision: {head}" in result.output
    assert "rejected messages kept" in result.output


def test_publish_with_a_type_makes_a_fresh_event_from_a_golden_messages_payload(
    cli_env: None, pull_from: Any
) -> None:
    pull = pull_from("smoke-tests")
    golden = GOLDEN / "ops" / "smoke_failed.json"
    original = json.loads(golden.read_text())
    result = runner.invoke(
        app, ["events", "publish", "--type", "sight.ops.smoke.failed", "--file", str(golden)]
    )
    assert result.exit_code == 0, result.output
    [message] = pull()
    event = parse_ops_message(message.data, dict(message.attributes))
    assert event.id != original["attributes"]["id"]
    assert event.source == "sightops-cli"
    assert json.loads(message.data)["revision"] == original["data"]["revision"]


@pytest.mark.parametrize(
    ("args", "content", "message"),
    [
        (["--type", "sight.ops.kpi.refresh_requested", "--data", "{bad"], None, "not valid JSON"),
        (["--file"], "{bad", "not valid JSON"),
        (["--file"], '{"data": {}, "attributes": ["type"]}', "attributes must be an object"),
    ],
    ids=["bad-data", "bad-file", "attributes-not-an-object"],
)
def test_publish_of_malformed_input_is_a_usage_error_without_a_traceback(
    cli_env: None, tmp_path: Path, args: list[str], content: str | None, message: str
) -> None:
    if content is not None:
        path = tmp_path / "message.json"
        path.write_text(content)
        args = [*args, str(path)]
    result = runner.invoke(app, ["events", "publish", *args], env={"COLUMNS": "200"})
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
