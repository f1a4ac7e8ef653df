"""The handler runtime, driven through functions-framework exactly as production is."""

from __future__ import annotations

import json
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.log import JsonFormatter
from shared.runtime import Deps
from tests.helpers import envelope, post_cloudevent, push

SOURCE = Path(__file__).parent / "sample_function" / "main.py"


@pytest.fixture
def client(deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="sample", source=str(SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


def actions_for(deps: Deps, key: str) -> int:
    with deps.engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM ops.actions WHERE kind = 'sample' AND detail->>'key' = :k"
                ),
                {"k": key},
            ).scalar_one()
        )


def runtime_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "sightops.runtime"]


def outcome_of(record: logging.LogRecord) -> str:
    return str(record.__dict__["logging.googleapis.com/labels"]["outcome"])


def test_same_message_delivered_three_times_runs_handler_once(client: Any, deps: Deps) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key}, {"id": key, "type": "test.sample"})
    responses = [
        push(client, "t", body),
        post_cloudevent(client, "t", body),
        push(client, "t", body),
    ]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert actions_for(deps, key) == 1
    assert deps.metrics.counter("events", consumer="sample", outcome="duplicate") == 2


def test_concurrent_duplicates_run_handler_once(client: Any, deps: Deps) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key, "sleep": 0.3}, {"id": key})
    with ThreadPoolExecutor(3) as pool:
        codes = list(pool.map(lambda _: push(client, "t", body).status_code, range(3)))
    assert codes == [200, 200, 200]
    assert actions_for(deps, key) == 1
    assert deps.metrics.counter("events", consumer="sample", outcome="handled") == 1
    assert deps.metrics.counter("events", consumer="sample", outcome="duplicate") == 2


def test_pubsub_message_id_is_the_dedupe_key_when_event_has_no_id(client: Any, deps: Deps) -> None:
    key = uuid.uuid4().hex
    first = envelope({"key": key}, message_id="m-" + key)
    second = envelope({"key": key}, message_id="m2-" + key)
    push(client, "t", first)
    push(client, "t", first)
    push(client, "t", second)
    assert actions_for(deps, key) == 2


def test_malformed_message_is_kept_with_reason_and_acknowledged(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    message_id = "bad-" + uuid.uuid4().hex
    response = push(client, "t", envelope(b"{not json", {"type": "x"}, message_id=message_id))
    assert response.status_code == 200
    with deps.engine.connect() as conn:
        row = conn.execute(
            text("SELECT reason, payload FROM ops.rejected_events WHERE event_id = :id"),
            {"id": message_id},
        ).one()
    assert "not JSON" in row.reason
    assert bytes(row.payload) == b"{not json"
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "rejected"
    assert record.levelno == logging.WARNING


def test_data_that_is_not_base64_is_rejected_not_retried(client: Any, deps: Deps) -> None:
    body = envelope({"key": "x"})
    body["message"]["data"] = "***not base64***"
    assert push(client, "t", body).status_code == 200
    assert deps.metrics.counter("events", consumer="sample", outcome="rejected") == 1
    with deps.engine.connect() as conn:
        reasons = (
            conn.execute(text("SELECT reason FROM ops.rejected_events WHERE consumer = 'sample'"))
            .scalars()
            .all()
        )
    assert "message data is not valid base64" in reasons


def test_event_older_than_maximum_age_is_dropped_with_log_line(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat().replace("+00:00", "Z")
    caplog.set_level(logging.INFO, logger="sightops.runtime")
    response = push(client, "t", envelope({"key": key}, {"id": key, "time": old}))
    assert response.status_code == 200
    assert actions_for(deps, key) == 0
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "stale"
    assert "maximum is 600s" in record.getMessage()


def test_transient_error_answers_503_and_leaves_no_receipt(client: Any, deps: Deps) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key, "succeed_on": 2}, {"id": key, "mode": "transient-until"})
    first = push(client, "t", body)
    assert first.status_code == 503
    assert b"redelivered" in first.data
    second = push(client, "t", body)
    assert second.status_code == 200
    assert actions_for(deps, key) == 1


def test_permanent_error_is_recorded_and_acknowledged_once(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key}, {"id": key, "mode": "permanent"})
    assert push(client, "t", body).status_code == 200
    assert push(client, "t", body).status_code == 200
    with deps.engine.connect() as conn:
        outcome = conn.execute(
            text("SELECT outcome FROM ops.event_receipts WHERE consumer='sample' AND event_id=:k"),
            {"k": key},
        ).scalar_one()
    assert outcome == "failed"
    assert actions_for(deps, key) == 0
    outcomes = [outcome_of(r) for r in runtime_records(caplog)]
    assert outcomes[-2:] == ["failed", "duplicate"]


def test_unexpected_exception_is_retried_with_traceback_logged(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    response = push(client, "t", envelope({"key": key}, {"id": key, "mode": "bug"}))
    assert response.status_code == 503
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "retry"
    assert record.levelno == logging.ERROR
    assert "KeyError" in record.__dict__["traceback"]


def test_outcome_line_has_cloud_logging_fields_and_trace(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key}, {"id": key, "type": "sight.ops.test"})
    trace_id = uuid.uuid4().hex
    headers = {
        "ce-id": "1",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/sight-local/topics/t",
        "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01",
    }
    assert client.post("/", data=json.dumps(body), headers=headers).status_code == 200
    line = json.loads(JsonFormatter().format(runtime_records(caplog)[-1]))
    assert line["severity"] == "INFO"
    assert line["logging.googleapis.com/labels"] == {
        "consumer": "sample",
        "outcome": "handled",
        "event_type": "sight.ops.test",
    }
    assert line["logging.googleapis.com/trace"] == f"projects/sight-local/traces/{trace_id}"
    assert line["event_id"] == key


def test_database_down_is_transient(
    client: Any, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from shared.runtime import set_process_deps

    down = Deps(
        settings.model_copy(
            update={
                "database_url": type(settings.database_url)(
                    "postgresql+asyncpg://sight:sight-local@127.0.0.1:1/sight"
                ),
                "db_connect_timeout_s": 0.5,
            }
        )
    )
    set_process_deps(down)
    key = uuid.uuid4().hex
    response = push(client, "t", envelope({"key": key}, {"id": key}))
    assert response.status_code == 503
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "retry" and record.levelno == logging.WARNING
    assert "sight-local@" not in json.dumps(record.__dict__, default=str)
    down.close()


def rejected_row(deps: Deps, event_id: str | None, reason_like: str = "%") -> Any:
    with deps.engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT event_id, event_type, reason, payload, attributes FROM ops.rejected_events"
                " WHERE consumer = 'sample' AND event_id IS NOT DISTINCT FROM :id"
                " AND reason LIKE :r ORDER BY id DESC LIMIT 1"
            ),
            {"id": event_id, "r": reason_like},
        ).one()


def receipt_outcome(deps: Deps, key: str) -> str:
    with deps.engine.connect() as conn:
        return str(
            conn.execute(
                text(
                    "SELECT outcome FROM ops.event_receipts WHERE consumer='sample' AND event_id=:k"
                ),
                {"k": key},
            ).scalar_one()
        )


def test_a_parser_that_crashes_rejects_and_keeps_the_message_with_an_error_line(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    data = json.dumps({"key": key, "epoch": 1e300}).encode()
    response = push(client, "t", envelope(data, {"id": key}))
    assert response.status_code == 200
    row = rejected_row(deps, key)
    assert row.reason.startswith("parser crashed: OverflowError: ")
    assert bytes(row.payload) == data
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "rejected"
    assert record.levelno == logging.ERROR
    assert "OverflowError" in record.__dict__["traceback"]


def test_a_dedupe_key_that_crashes_rejects_and_keeps_the_message(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    key = uuid.uuid4().hex
    response = push(client, "t", envelope({"key": key, "bad_key": 0}, {"id": key}))
    assert response.status_code == 200
    assert rejected_row(deps, key).reason.startswith("dedupe key crashed: ZeroDivisionError")
    record = runtime_records(caplog)[-1]
    assert outcome_of(record) == "rejected" and record.levelno == logging.ERROR
    assert actions_for(deps, key) == 0


def test_a_non_retryable_error_from_the_handler_is_recorded_failed_and_acknowledged(
    client: Any, deps: Deps, caplog: pytest.LogCaptureFixture
) -> None:
    """SecretError is not retryable (shared/errors.py): handled like PermanentError."""
    key = uuid.uuid4().hex
    body = envelope({"key": key}, {"id": key, "mode": "secret"})
    assert push(client, "t", body).status_code == 200
    assert push(client, "t", body).status_code == 200
    assert receipt_outcome(deps, key) == "failed"
    failed, duplicate = runtime_records(caplog)[-2:]
    assert (outcome_of(failed), outcome_of(duplicate)) == ("failed", "duplicate")
    assert failed.levelno == logging.ERROR
    assert failed.__dict__["error"] == "SecretError"
    assert "cannot access secret" in failed.__dict__["reason"]


def test_an_envelope_that_cannot_be_decoded_is_kept_raw_with_its_message_id(
    client: Any, deps: Deps
) -> None:
    message_id = "b64-" + uuid.uuid4().hex
    body = envelope({"key": "x"}, {"type": "test.sample", "origin": "here"}, message_id=message_id)
    body["message"]["data"] = "***not base64***"
    assert push(client, "t", body).status_code == 200
    row = rejected_row(deps, message_id)
    assert row.reason == "message data is not valid base64"
    assert json.loads(bytes(row.payload))["message"]["data"] == "***not base64***"
    assert row.attributes == {"type": "test.sample", "origin": "here"}
    assert row.event_type == "test.sample"


def test_an_eventarc_envelope_without_message_id_is_kept_raw(client: Any, deps: Deps) -> None:
    marker = uuid.uuid4().hex
    body = envelope({"key": marker})
    del body["message"]["messageId"]
    headers = {
        "ce-id": "1",
        "ce-specversion": "1.0",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-source": "//pubsub.googleapis.com/projects/sight-local/topics/t",
        "Content-Type": "application/json",
    }
    assert client.post("/", data=json.dumps(body), headers=headers).status_code == 200
    with deps.engine.connect() as conn:
        payloads = [
            bytes(p)
            for p in conn.execute(
                text(
                    "SELECT payload FROM ops.rejected_events WHERE consumer = 'sample'"
                    " AND reason = 'message has no messageId' AND event_id IS NULL"
                )
            ).scalars()
        ]
    assert body in [json.loads(p) for p in payloads]


def test_nul_characters_in_a_malformed_message_are_escaped_and_it_is_kept(
    client: Any, deps: Deps
) -> None:
    """PostgreSQL refuses NUL in text and jsonb (22021/22P05, not transient): unescaped,
    the reject would be retried until dead-lettered and never kept."""
    key = uuid.uuid4().hex
    body = envelope(b"{not json", {"id": key + "\x00", "type": "t\x00", "note": "a\x00b"})
    assert push(client, "t", body).status_code == 200
    row = rejected_row(deps, key + "\\x00")
    assert row.event_type == "t\\x00"
    assert row.attributes["note"] == "a\\x00b"
    assert bytes(row.payload) == b"{not json"


def test_nul_characters_in_the_event_id_and_type_do_not_stop_handling(
    client: Any, deps: Deps
) -> None:
    key = uuid.uuid4().hex
    body = envelope({"key": key}, {"id": key + "\x00", "type": "sight.\x00test"})
    assert push(client, "t", body).status_code == 200
    assert push(client, "t", body).status_code == 200
    assert actions_for(deps, key) == 1
    assert receipt_outcome(deps, key + "\\x00") == "handled"
