"""notify, through functions-framework: builds (docs/notify.md), delivery and retries."""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import functions_framework
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from shared.events import parse_build_message
from shared.notify import render_build
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import serve
from tests.functions.notify.conftest import SOURCE, WEBHOOK_PATH
from tests.helpers import GOLDEN, PROJECT, envelope, push

REGEN = os.environ.get("REGEN_GOLDEN") == "1"


def golden_build(name: str, build_id: str | None = None) -> tuple[bytes, dict[str, str]]:
    message = json.loads((GOLDEN / "cloudbuild" / f"{name}.json").read_text())
    data, attributes = message["data"], dict(message["attributes"])
    if build_id:
        data["id"] = attributes["buildId"] = build_id
    return json.dumps(data).encode(), attributes


@pytest.fixture
def notify_deps(settings: Settings, sink: Any, deps: Deps) -> Iterator[Deps]:
    _, running = sink
    configured = settings.model_copy(
        update={"slack_webhook_url": SecretStr(running.url + WEBHOOK_PATH)}
    )
    d = Deps(configured, metrics=deps.metrics, engine=deps.engine)
    set_process_deps(d)
    yield d


@pytest.fixture
def client(notify_deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="notify", source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


def notifications(deps: Deps, build_id: str) -> list[str]:
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT status FROM ops.actions WHERE kind = 'notification'"
                    " AND detail->>'build_id' = :b"
                ),
                {"b": build_id},
            ).scalars()
        )


def test_terminal_build_renders_the_golden_block_kit_message() -> None:
    data, attributes = golden_build("success_triggered")
    # the golden message links to its release on a console (tests/shared/notify/test_render.py)
    build = parse_build_message(data, attributes)
    rendered = render_build(build, console="https://console.example").to_dict()
    path = GOLDEN / "slack" / "build_success_triggered.json"
    if REGEN:
        path.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n")
    assert rendered == json.loads(path.read_text())
    assert "sight-api-ci" in rendered["text"] and "SUCCESS" in rendered["text"]


def test_failed_manual_build_without_optional_fields_still_renders() -> None:
    data, attributes = golden_build("success_manual")
    rendered = render_build(parse_build_message(data, attributes)).to_dict()
    assert rendered["blocks"][0]["type"] == "header"
    assert len(rendered["blocks"][0]["text"]["text"]) <= 150


def test_terminal_build_posts_one_slack_message(client: Any, sink: Any, notify_deps: Deps) -> None:
    state, _ = sink
    build_id = str(uuid.uuid4())
    data, attributes = golden_build("failure", build_id)
    assert push(client, "cloud-builds", envelope(data, attributes)).status_code == 200
    [message] = state.messages(WEBHOOK_PATH)
    assert "FAILURE" in message.body["text"]
    assert notifications(notify_deps, build_id) == ["sent"]


@pytest.mark.parametrize("status", ["queued", "working"])
def test_non_terminal_build_sends_nothing(client: Any, sink: Any, status: str) -> None:
    state, _ = sink
    data, attributes = golden_build(status, str(uuid.uuid4()))
    assert push(client, "cloud-builds", envelope(data, attributes)).status_code == 200
    assert state.messages() == []


def test_duplicate_delivery_sends_exactly_one_message(client: Any, sink: Any) -> None:
    state, _ = sink
    body = envelope(*golden_build("success_triggered", str(uuid.uuid4())))
    for _ in range(3):
        assert push(client, "cloud-builds", body).status_code == 200
    assert len(state.messages()) == 1


def test_rate_limited_post_is_retried_after_retry_after(client: Any, sink: Any) -> None:
    state, _ = sink
    state.rate_limit(count=1, retry_after=1)
    started = time.monotonic()
    body = envelope(*golden_build("timeout", str(uuid.uuid4())))
    assert push(client, "cloud-builds", body).status_code == 200
    assert time.monotonic() - started >= 1.0
    assert len(state.messages()) == 1
    assert [m.status for m in state.received()] == [429, 200]


def test_archived_channel_is_permanent_recorded_and_not_retried(
    client: Any, sink: Any, notify_deps: Deps
) -> None:
    state, _ = sink
    state.inject_fault(error="channel_is_archived")
    build_id = str(uuid.uuid4())
    body = envelope(*golden_build("failure", build_id))
    assert push(client, "cloud-builds", body).status_code == 200
    assert push(client, "cloud-builds", body).status_code == 200  # redelivery: duplicate
    assert [m.status for m in state.received()] == [410]
    assert notifications(notify_deps, build_id) == ["failed"]
    assert notify_deps.metrics.counter("events", consumer="notify", outcome="failed") == 1


def test_slack_server_errors_make_pubsub_redeliver(client: Any, sink: Any) -> None:
    state, _ = sink
    state.inject_fault(503, count=3)
    body = envelope(*golden_build("failure", str(uuid.uuid4())))
    assert push(client, "cloud-builds", body).status_code == 503
    assert push(client, "cloud-builds", body).status_code == 200
    assert len(state.messages()) == 1


def test_without_a_webhook_the_message_is_rendered_to_the_log(
    settings: Settings, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    set_process_deps(Deps(settings, metrics=deps.metrics, engine=deps.engine))
    app = functions_framework.create_app(
        target="notify", source=str(SOURCE), signature_type="cloudevent"
    )
    build_id = str(uuid.uuid4())
    body = envelope(*golden_build("success_triggered", build_id))
    assert push(app.test_client(), "cloud-builds", body).status_code == 200
    logged = [r.getMessage() for r in caplog.records if r.name == "sightops.notify"]
    assert any("sight-api-ci" in line for line in logged)
    assert notifications(deps, build_id) == ["logged"]


def test_build_published_to_the_emulator_reaches_the_slack_sink(
    sink: Any, notify_deps: Deps
) -> None:
    """The vertical slice: emulator `cloud-builds` -> push subscription -> notify -> Slack."""
    state, _ = sink
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    app = functions_framework.create_app(
        target="notify", source=str(SOURCE), signature_type="cloudevent"
    )
    with serve(app) as function:
        ensure_topic(publisher, PROJECT, "cloud-builds")
        subscription = ensure_subscription(
            subscriber,
            PROJECT,
            f"notify-slice-{uuid.uuid4().hex[:8]}",
            "cloud-builds",
            push_to=f"{function.url}/projects/{PROJECT}/topics/cloud-builds",
        )
        try:
            build_id = str(uuid.uuid4())
            data, attributes = golden_build("success_triggered", build_id)
            publisher.publish(f"projects/{PROJECT}/topics/cloud-builds", data, **attributes).result(
                timeout=10
            )
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and not state.messages():
                time.sleep(0.1)
            [message] = state.messages(WEBHOOK_PATH)
            assert build_id in json.dumps(message.body)
            assert notifications(notify_deps, build_id) == ["sent"]
        finally:
            subscriber.delete_subscription(subscription=subscription)
