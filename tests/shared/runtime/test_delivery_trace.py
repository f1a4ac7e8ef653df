"""One trace per release through the runtime (docs/release.md): a Pub/Sub push served by
functions-framework continues the trace its attributes carry (or joins its release's
trace), and the delivery's span, log line, ``ops.actions`` rows and published messages
all say which trace and release they belong to."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.log import LABELS_KEY, SAMPLED_KEY, SPAN_KEY, TRACE_KEY, JsonFormatter
from shared.metrics import Metrics
from shared.release import release_id, release_trace_id
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings, TraceConfig
from shared.trace import SpanRecord, read_spans
from tests.helpers import GOLDEN, PROJECT, ROOT, envelope, push

SAMPLE = Path(__file__).parent / "sample_function" / "main.py"
MIGRATE = ROOT / "functions" / "migrate" / "main.py"
INCOMING_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
INCOMING_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{INCOMING_TRACE}-{INCOMING_SPAN}-01"
RELEASE = "sight-api@3f2a9c1e8b7d"


@pytest.fixture
def spans_file(tmp_path: Path) -> Path:
    return tmp_path / "spans.jsonl"


@pytest.fixture
def traced(settings: Settings, spans_file: Path) -> Iterator[Deps]:
    """Deps whose spans go to a local span file of this test (TRACE__EXPORTER=local)."""
    configured = settings.model_copy(
        update={"trace": TraceConfig(exporter="local", local_file=spans_file)}
    )
    deps = Deps(configured, metrics=Metrics())
    set_process_deps(deps)
    yield deps
    set_process_deps(None)
    deps.close()


def client_for(source: Path, target: str) -> Any:
    return functions_framework.create_app(
        target=target, source=str(source), signature_type="cloudevent"
    ).test_client()


def runtime_line(caplog: pytest.LogCaptureFixture, event_id: str) -> dict[str, Any]:
    """The delivery's one log line, as the JSON formatter writes it."""
    [record] = [
        r
        for r in caplog.records
        if r.name == "sightops.runtime" and r.__dict__.get("event_id") == event_id
    ]
    line: dict[str, Any] = json.loads(JsonFormatter().format(record))
    return line


def actions(deps: Deps, trigger: str) -> list[Any]:
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT kind, status, release_id, trace_id FROM ops.actions"
                    " WHERE trigger_event_id = :t ORDER BY id"
                ),
                {"t": trigger},
            ).all()
        )


def only_span(spans_file: Path, trace_id: str) -> SpanRecord:
    [span] = read_spans(spans_file, trace_id)
    return span


def test_a_push_carrying_a_traceparent_continues_that_trace_in_span_log_and_action(
    traced: Deps, spans_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="sightops.runtime")
    key = uuid.uuid4().hex
    attributes = {"id": key, "type": "test.sample", "traceparent": TRACEPARENT}
    attributes["release_id"] = RELEASE
    response = push(client_for(SAMPLE, "sample"), "t", envelope({"key": key}, attributes))
    assert response.status_code == 200

    span = only_span(spans_file, INCOMING_TRACE)
    assert span.parent_span_id == INCOMING_SPAN
    assert span.name == "sample test.sample"
    assert span.kind == "consumer"
    assert span.attributes["consumer"] == "sample"
    assert span.attributes["event_id"] == key
    assert span.attributes["outcome"] == "handled"
    assert span.attributes["release_id"] == RELEASE

    line = runtime_line(caplog, key)
    assert line[TRACE_KEY] == f"projects/{PROJECT}/traces/{INCOMING_TRACE}"
    assert line[SPAN_KEY] == span.span_id
    assert line[SAMPLED_KEY] is True
    assert line[LABELS_KEY]["release_id"] == RELEASE

    [row] = actions(traced, key)
    assert (row.kind, row.release_id, row.trace_id) == ("sample", RELEASE, INCOMING_TRACE)


def test_a_cloud_build_message_without_trace_context_is_traced_under_its_release(
    traced: Deps, spans_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """migrate receives the build (its _SERVICE and COMMIT_SHA name the release) and,
    not selecting it, records the skip: span, log line and action are in the release's
    trace, as every later event of that release will be."""
    caplog.set_level(logging.DEBUG, logger="sightops.runtime")  # a skip is logged at DEBUG
    message = json.loads((GOLDEN / "cloudbuild" / "success_triggered.json").read_text())
    build_id = str(uuid.uuid4())
    data = {**message["data"], "id": build_id}
    attributes = {**message["attributes"], "buildId": build_id}
    service = data["substitutions"]["_SERVICE"]
    commit = data["substitutions"]["COMMIT_SHA"]
    release = release_id(service, commit)
    trace_id = release_trace_id(release)
    body = envelope(data, attributes)

    response = push(client_for(MIGRATE, "migrate"), "cloud-builds", body)
    assert response.status_code == 200

    span = only_span(spans_file, trace_id)
    assert span.parent_span_id is None  # the release's trace has no parent to continue
    assert span.name == "migrate build.SUCCESS"
    assert span.attributes["release_id"] == release
    assert span.attributes["outcome"] == "skipped"
    message_id = body["message"]["messageId"]
    line = runtime_line(caplog, message_id)
    assert line[TRACE_KEY].endswith(f"/traces/{trace_id}")
    assert line[LABELS_KEY]["release_id"] == release
    [row] = actions(traced, message_id)
    assert (row.kind, row.status, row.release_id, row.trace_id) == (
        "migration",
        "skipped",
        release,
        trace_id,
    )


def test_a_message_published_during_a_delivery_carries_its_span_and_release(
    traced: Deps, spans_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Read back from the real emulator: the consumer of what we publish continues the
    delivery's trace, as a child of the delivery's span."""
    from google.cloud import pubsub_v1

    # this test's emulator, whatever an earlier test left in the environment
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", traced.settings.pubsub_emulator_host or "")
    name = f"trace-{uuid.uuid4().hex[:8]}"
    topic = f"projects/{PROJECT}/topics/{name}"
    subscription = f"projects/{PROJECT}/subscriptions/{name}-pull"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic)
    try:
        key = uuid.uuid4().hex
        attributes = {"id": key, "mode": "publish", "traceparent": TRACEPARENT}
        attributes["release_id"] = RELEASE
        body = envelope({"key": key, "topic": name}, attributes)
        assert push(client_for(SAMPLE, "sample"), "t", body).status_code == 200
        received = pull(subscriber, subscription)
    finally:
        subscriber.delete_subscription(subscription=subscription)
        publisher.delete_topic(topic=topic)

    span = only_span(spans_file, INCOMING_TRACE)
    [published] = received
    assert published["type"] == "test.published"
    assert published["traceparent"] == f"00-{INCOMING_TRACE}-{span.span_id}-01"
    assert published["release_id"] == RELEASE


def pull(subscriber: Any, subscription: str, timeout_s: float = 10.0) -> list[dict[str, str]]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        response = subscriber.pull(subscription=subscription, max_messages=10, timeout=5.0)
        if response.received_messages:
            subscriber.acknowledge(
                subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages]
            )
            return [dict(m.message.attributes) for m in response.received_messages]
        time.sleep(0.1)
    return []


def test_a_message_that_cannot_be_parsed_still_has_a_failed_span_in_its_trace(
    traced: Deps, spans_file: Path
) -> None:
    key = uuid.uuid4().hex
    body = envelope(b"{not json", {"id": key, "traceparent": TRACEPARENT})
    assert push(client_for(SAMPLE, "sample"), "t", body).status_code == 200
    span = only_span(spans_file, INCOMING_TRACE)
    assert span.attributes["outcome"] == "rejected"
    assert span.status == "ERROR"


def test_a_traceparent_that_is_not_w3c_is_ignored_and_the_release_decides(
    traced: Deps, spans_file: Path
) -> None:
    key = uuid.uuid4().hex
    attributes = {"id": key, "traceparent": "00-zz-not-a-trace", "release_id": RELEASE}
    assert (
        push(client_for(SAMPLE, "sample"), "t", envelope({"key": key}, attributes)).status_code
        == 200
    )
    span = only_span(spans_file, release_trace_id(RELEASE))
    assert span.parent_span_id is None
    [row] = actions(traced, key)
    assert row.trace_id == release_trace_id(RELEASE)


def test_a_malformed_release_id_attribute_is_not_carried_anywhere(
    traced: Deps, spans_file: Path
) -> None:
    key = uuid.uuid4().hex
    attributes = {"id": key, "traceparent": TRACEPARENT, "release_id": "<!here>@nothex"}
    assert (
        push(client_for(SAMPLE, "sample"), "t", envelope({"key": key}, attributes)).status_code
        == 200
    )
    span = only_span(spans_file, INCOMING_TRACE)
    assert "release_id" not in span.attributes
    [row] = actions(traced, key)
    assert (row.release_id, row.trace_id) == (None, INCOMING_TRACE)


def test_an_http_request_continues_its_callers_trace(
    traced: Deps, spans_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.shared.runtime.sample_http.main import TOKEN

    caplog.set_level(logging.INFO, logger="sightops.http")
    app = functions_framework.create_app(
        target="sample_http",
        source=str(Path(__file__).parent / "sample_http" / "main.py"),
        signature_type="http",
    )
    headers = {"Authorization": f"Bearer {TOKEN}", "traceparent": TRACEPARENT}
    assert app.test_client().post("/", data=b"hi", headers=headers).status_code == 201
    span = only_span(spans_file, INCOMING_TRACE)
    assert (span.name, span.kind, span.parent_span_id) == (
        "sample_http POST",
        "server",
        INCOMING_SPAN,
    )
    assert span.attributes["outcome"] == "echoed"
    assert span.attributes["http.response.status_code"] == 201
    [record] = [r for r in caplog.records if r.name == "sightops.http"]
    line = json.loads(JsonFormatter().format(record))
    assert (line[TRACE_KEY], line[SPAN_KEY]) == (
        f"projects/{PROJECT}/traces/{INCOMING_TRACE}",
        span.span_id,
    )
