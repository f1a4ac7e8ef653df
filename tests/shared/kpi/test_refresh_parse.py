"""Reading refresh requests from both producers: our own events and Cloud Scheduler."""

from __future__ import annotations

import uuid

import pytest

from shared.errors import InvalidEventError
from shared.events import EventType, KpiRefreshRequested, OpsEvent, SmokeResult
from shared.kpi.refresh import dedupe_key, parse_refresh_request
from shared.runtime import PubsubMessage

KPI_TYPE = EventType.KPI_REFRESH_REQUESTED.value


def test_our_own_event_is_parsed_strictly_with_its_envelope() -> None:
    project_id = str(uuid.uuid4())
    data, attributes = OpsEvent.new(
        EventType.KPI_REFRESH_REQUESTED, KpiRefreshRequested(project_id=project_id), "test"
    ).to_pubsub()
    assert parse_refresh_request(data, attributes).project_id == project_id


def test_our_own_event_of_another_type_on_this_topic_is_invalid() -> None:
    payload = SmokeResult(
        service="s",
        region="r",
        revision="v",
        url="https://x",
        started_at="2026-01-01T00:00:00Z",  # type: ignore[arg-type]
        finished_at="2026-01-01T00:00:01Z",  # type: ignore[arg-type]
    )
    data, attributes = OpsEvent.new(EventType.SMOKE_PASSED, payload, "test").to_pubsub()
    with pytest.raises(InvalidEventError, match="KpiRefreshRequested"):
        parse_refresh_request(data, attributes)


@pytest.mark.parametrize(
    ("data", "attributes"),
    [
        (b'{"all_active": true}', {"type": KPI_TYPE, "source": "scheduler"}),
        (b'{"all_active": true}', {}),
        (b"", {"type": KPI_TYPE}),
        (b"  \n", {"id": "fixed-scheduler-id"}),
    ],
)
def test_scheduler_body_without_per_run_attributes_is_read_leniently(
    data: bytes, attributes: dict[str, str]
) -> None:
    assert parse_refresh_request(data, attributes) == KpiRefreshRequested(all_active=True)


def test_scheduler_body_for_one_project_is_canonicalised() -> None:
    project_id = uuid.uuid4()
    body = f'{{"project_id": "{str(project_id).upper()}"}}'.encode()
    assert parse_refresh_request(body, {}).project_id == str(project_id)


@pytest.mark.parametrize(
    ("data", "attributes", "reason"),
    [
        (b"{not json", {}, "not valid JSON"),
        (b"[1]", {}, "JSON object"),
        (b'{"project_id": "nope"}', {}, "project_id"),
        (b"{}", {}, "exactly one"),
        (b'{"project_id": "' + str(uuid.uuid4()).encode() + b'", "all_active": true}', {}, "one"),
        (b'{"all_active": true}', {"type": "sight.ops.smoke.failed"}, "not sight.ops.kpi.refresh"),
    ],
)
def test_unusable_scheduler_body_is_invalid_with_a_reason(
    data: bytes, attributes: dict[str, str], reason: str
) -> None:
    with pytest.raises(InvalidEventError, match=reason):
        parse_refresh_request(data, attributes)


def test_dedupe_key_is_the_pubsub_message_id_even_with_a_fixed_id_attribute() -> None:
    message = PubsubMessage(b"", {"id": "fixed"}, message_id="123", publish_time=None)
    assert dedupe_key(KpiRefreshRequested(all_active=True), message) == "message:123"
