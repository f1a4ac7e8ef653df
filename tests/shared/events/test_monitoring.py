"""Cloud Monitoring incident notifications: 1.2, 1.1 and test bodies as Google sends them."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.errors import InvalidEventError
from shared.events import IncidentNotification, parse_incident_body, parse_incident_message

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "monitoring"


def body(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GOLDEN / name).read_text())
    return loaded


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def parse_golden(name: str) -> IncidentNotification:
    return parse_incident_body(encode(body(name)))


GOLDENS = sorted(p.name for p in GOLDEN.glob("*.json"))


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_parses_the_same_from_webhook_body_and_pubsub_message(name: str) -> None:
    raw = encode(body(name))
    from_body = parse_incident_body(raw)
    from_message = parse_incident_message(raw, {})
    assert from_body == from_message
    assert from_body.incident.incident_id == body(name)["incident"]["incident_id"]


def test_open_1_2_incident_exposes_its_fields() -> None:
    notification = parse_golden("incident_1_2_open.json")
    incident = notification.incident
    assert notification.version == "1.2"
    assert not notification.is_test
    assert incident.incident_id == "0.nxbq7a1r2s4t"
    assert incident.scoping_project_id == "sight-prod"
    assert incident.scoping_project_number == 412893106524
    assert incident.is_open
    assert not incident.is_closed
    assert incident.started_at == datetime(2025, 6, 2, 10, 49, 2, tzinfo=UTC)
    assert incident.ended_at is None
    assert incident.policy_name == "sight-api p95 latency"
    assert incident.policy_user_labels == {"service": "sight-api", "team": "platform"}
    assert incident.condition_name == "Cloud Run Revision - p95 request latency above 1500 ms"
    assert incident.condition is not None
    assert "conditionThreshold" in incident.condition
    assert incident.resource is not None
    assert incident.resource.type == "cloud_run_revision"
    assert incident.resource_type_display_name == "Cloud Run Revision"
    assert incident.resource_display_name == "sight-api-00042-qin"
    assert incident.resource_id is None  # sent as ""
    assert incident.metric is not None
    assert incident.metric.type == "run.googleapis.com/request_latencies"
    assert incident.metric.display_name == "Request Latencies"
    assert incident.observed_value == "2318.442"
    assert incident.threshold_value == "1500"
    assert incident.documentation is not None
    assert incident.documentation.mime_type == "text/markdown"
    assert incident.documentation.subject == "[Warning] sight-api p95 latency above 1500 ms"
    assert incident.severity == "Warning"
    assert incident.metadata == {"system_labels": {}, "user_labels": {}}
    assert incident.cloud_run_service == "sight-api"
    assert incident.cloud_run_revision == "sight-api-00042-qin"
    assert not incident.auto_rollback


def test_closed_incident_keeps_the_incident_id_and_allows_prose_observed_value() -> None:
    opened = parse_golden("incident_1_2_open.json").incident
    closed = parse_golden("incident_1_2_closed.json").incident
    assert closed.incident_id == opened.incident_id
    assert closed.is_closed
    assert not closed.is_open
    assert closed.ended_at == datetime(2025, 6, 2, 11, 16, 1, tzinfo=UTC)
    assert closed.observed_value is not None
    assert closed.observed_value.startswith("No data points")


def test_version_1_1_body_has_few_fields_and_empty_strings_mean_absent() -> None:
    notification = parse_golden("incident_1_1.json")
    incident = notification.incident
    assert notification.version == "1.1"
    assert incident.incident_id == "0.mr4k2zq8c1ve"
    assert incident.is_open
    assert incident.policy_name == "Cloud SQL sight-pg CPU"
    assert incident.resource_id is None
    assert incident.resource_name is None
    assert incident.condition_name is None
    assert incident.scoping_project_id is None
    assert incident.resource is None
    assert incident.policy_user_labels == {}
    assert incident.cloud_run_service is None
    assert not incident.auto_rollback


def test_version_1_1_body_with_every_field_an_empty_string_parses() -> None:
    incident = {
        key: ""
        for key in (
            "resource_id",
            "resource_name",
            "state",
            "started_at",
            "ended_at",
            "policy_name",
            "condition_name",
            "url",
            "summary",
            "policy_user_labels",
            "resource",
            "scoping_project_number",
        )
    }
    incident["incident_id"] = "0.empty"
    parsed = parse_incident_body(encode({"version": "1.1", "incident": incident})).incident
    assert parsed.incident_id == "0.empty"
    assert parsed.state is None
    assert not parsed.is_open
    assert parsed.started_at is None
    assert parsed.resource is None
    assert parsed.scoping_project_number is None


def test_test_notification_is_flagged_and_normalised() -> None:
    notification = parse_golden("test_notification.json")
    incident = notification.incident
    assert notification.is_test
    assert incident.state == "open"  # sent as "OPEN"
    assert incident.is_open
    assert incident.started_at is None  # sent as 0
    assert incident.ended_at is None  # sent as 0
    assert incident.documentation is not None
    assert incident.documentation.content == "Test documentation"  # sent as a bare string
    assert incident.cloud_run_service is None
    assert not incident.auto_rollback


def test_auto_rollback_incident_names_the_cloud_run_service_and_revision() -> None:
    incident = parse_golden("incident_auto_rollback.json").incident
    assert incident.auto_rollback
    assert incident.is_open
    assert incident.severity == "Critical"
    assert incident.cloud_run_service == "sight-api"
    assert incident.cloud_run_revision == "sight-api-00043-vub"


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("true", True),
        ("TRUE", True),
        (" True ", True),
        ("false", False),
        ("yes", False),
        ("", False),
    ],
)
def test_auto_rollback_label_is_case_insensitive_and_only_true_counts(
    label: str, expected: bool
) -> None:
    data = body("incident_auto_rollback.json")
    data["incident"]["policy_user_labels"]["auto_rollback"] = label
    assert parse_incident_body(encode(data)).incident.auto_rollback is expected


def test_auto_rollback_is_false_without_the_label() -> None:
    data = body("incident_auto_rollback.json")
    del data["incident"]["policy_user_labels"]["auto_rollback"]
    assert not parse_incident_body(encode(data)).incident.auto_rollback


def test_cloud_run_service_is_none_for_other_resource_types() -> None:
    data = body("incident_auto_rollback.json")
    data["incident"]["resource"] = {
        "type": "gce_instance",
        "labels": {"instance_id": "1", "service_name": "not-cloud-run", "zone": "europe-west1-b"},
    }
    incident = parse_incident_body(encode(data)).incident
    assert incident.cloud_run_service is None
    assert incident.cloud_run_revision is None


def test_unknown_fields_are_ignored() -> None:
    data = body("incident_1_2_open.json")
    data["delivery_attempt"] = 3
    data["incident"]["apigee_url"] = "http://example.com"
    data["incident"]["brand_new_field"] = {"x": [1, 2]}
    data["incident"]["resource"]["brand_new_field"] = True
    incident = parse_incident_body(encode(data)).incident
    assert incident.incident_id == "0.nxbq7a1r2s4t"


def test_loosely_typed_values_are_coerced() -> None:
    data = body("incident_1_2_open.json")
    data["incident"]["scoping_project_number"] = "412893106524"
    data["incident"]["observed_value"] = 2318.442
    data["incident"]["started_at"] = "1748861342"
    incident = parse_incident_body(encode(data)).incident
    assert incident.scoping_project_number == 412893106524
    assert incident.observed_value == "2318.442"
    assert incident.started_at == datetime(2025, 6, 2, 10, 49, 2, tzinfo=UTC)


def test_an_unknown_state_is_kept_but_is_neither_open_nor_closed() -> None:
    data = body("incident_1_2_open.json")
    data["incident"]["state"] = "Acknowledged"
    incident = parse_incident_body(encode(data)).incident
    assert incident.state == "acknowledged"
    assert not incident.is_open
    assert not incident.is_closed


def test_only_incident_id_is_required() -> None:
    incident = parse_incident_body(b'{"version": "1.2", "incident": {"incident_id": "0.x"}}')
    assert incident.incident.state is None
    assert incident.incident.documentation is None
    assert incident.incident.metric is None


INVALID = sorted((GOLDEN / "invalid").glob("*.json"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_body_raises_with_a_reason_naming_the_problem(path: Path) -> None:
    case = json.loads(path.read_text())
    data = case["data_text"].encode() if "data_text" in case else encode(case["data"])
    with pytest.raises(InvalidEventError) as from_body:
        parse_incident_body(data)
    with pytest.raises(InvalidEventError) as from_message:
        parse_incident_message(data, case["attributes"])
    reason = str(from_body.value)
    assert str(from_message.value) == reason
    for fragment in case["reason_mentions"]:
        assert fragment in reason, reason


def test_reason_never_echoes_a_large_payload() -> None:
    data = body("incident_1_2_open.json")
    data["version"] = "v" * 50_000
    with pytest.raises(InvalidEventError) as info:
        parse_incident_body(encode(data))
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("value", [1e300, 1e18, -1e18, "1e300", "inf", 253402300800])
@pytest.mark.parametrize("field", ["started_at", "ended_at"])
def test_out_of_range_epoch_time_is_an_invalid_event_naming_the_field(
    field: str, value: Any
) -> None:
    """datetime.fromtimestamp raises OverflowError/OSError, not ValueError: unconverted,
    they escape the parser and the runtime, and the message is retried forever."""
    data = {"version": "1.2", "incident": {"incident_id": "x", "state": "open", field: value}}
    with pytest.raises(InvalidEventError) as caught:
        parse_incident_message(encode(data), {})
    assert f"field 'incident.{field}': epoch seconds out of range" in str(caught.value)
