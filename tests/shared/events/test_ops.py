"""sight-ops' own events: one model for producers and consumers, stable on the wire."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.errors import InvalidEventError
from shared.events import (
    MAX_STATEMENT_CHARS,
    PAYLOAD_TYPES,
    CanaryRequest,
    CanaryResult,
    CanaryTick,
    EventType,
    GraphVersions,
    KpiRefreshRequested,
    LintFinding,
    MigrationResult,
    OpsEvent,
    OpsPayload,
    PostgresRevisions,
    ReleaseResult,
    RollbackResult,
    SmokeCheck,
    SmokeResult,
    parse_ops_message,
)

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "ops"
NOW = datetime(2025, 6, 2, 11, 20, 15, 400000, tzinfo=UTC)


def load(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    message = json.loads((GOLDEN / name).read_text())
    return message["data"], message["attributes"]


def canonical(data: Any) -> bytes:
    """How the goldens encode on the wire: compact JSON, UTF-8, field order as written."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode()


def smoke(**changes: Any) -> SmokeResult:
    fields: dict[str, Any] = {
        "service": "sight-api",
        "region": "europe-west1",
        "revision": "sight-api-00043-vub",
        "url": "https://sight-api-4k2pq7x3va-ew.a.run.app",
        "started_at": NOW - timedelta(seconds=12),
        "finished_at": NOW,
    }
    fields.update(changes)
    return SmokeResult(**fields)


EXPECTED_TYPE = {
    "smoke_passed.json": EventType.SMOKE_PASSED,
    "smoke_failed.json": EventType.SMOKE_FAILED,
    "migration_succeeded.json": EventType.MIGRATION_SUCCEEDED,
    "migration_failed.json": EventType.MIGRATION_FAILED,
    "migration_skipped.json": EventType.MIGRATION_SKIPPED,
    "rollback_succeeded.json": EventType.ROLLBACK_SUCCEEDED,
    "rollback_skipped.json": EventType.ROLLBACK_SKIPPED,
    "rollback_failed.json": EventType.ROLLBACK_FAILED,
    "rollback_frozen.json": EventType.ROLLBACK_FROZEN,
    "kpi_refresh_requested.json": EventType.KPI_REFRESH_REQUESTED,
    "kpi_refresh_all_active.json": EventType.KPI_REFRESH_REQUESTED,
    "release_deployed.json": EventType.RELEASE_DEPLOYED,
    "release_promoted.json": EventType.RELEASE_PROMOTED,
    "release_failed.json": EventType.RELEASE_FAILED,
    "report_requested.json": EventType.REPORT_REQUESTED,
    "report_weekly.json": EventType.REPORT_WEEKLY,
    "canary_requested.json": EventType.CANARY_REQUESTED,
    "canary_tick.json": EventType.CANARY_TICK,
    "canary_tick_service.json": EventType.CANARY_TICK,
    "canary_tick_due.json": EventType.CANARY_TICK,
    "canary_started.json": EventType.CANARY_STARTED,
    "canary_stepped.json": EventType.CANARY_STEPPED,
    "canary_promoted.json": EventType.CANARY_PROMOTED,
    "canary_rolled_back.json": EventType.CANARY_ROLLED_BACK,
    "canary_held.json": EventType.CANARY_HELD,
    "canary_stopped.json": EventType.CANARY_STOPPED,
    "maintain_requested.json": EventType.MAINTAIN_REQUESTED,
    "maintain_completed.json": EventType.MAINTAIN_COMPLETED,
    "backup_requested.json": EventType.BACKUP_REQUESTED,
    "backup_verified.json": EventType.BACKUP_VERIFIED,
    "backup_failed.json": EventType.BACKUP_FAILED,
}
GOLDENS = sorted(EXPECTED_TYPE)


def test_every_golden_file_has_an_expectation_and_every_type_a_golden() -> None:
    assert {p.name for p in GOLDEN.glob("*.json")} == set(EXPECTED_TYPE)
    assert set(EXPECTED_TYPE.values()) == set(EventType)


def test_payload_table_covers_every_event_type() -> None:
    assert set(PAYLOAD_TYPES) == set(EventType)


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_parses_into_the_payload_model_of_its_type(name: str) -> None:
    data, attributes = load(name)
    event = parse_ops_message(canonical(data), attributes)
    assert event.type is EXPECTED_TYPE[name]
    assert isinstance(event.data, PAYLOAD_TYPES[event.type])
    assert event.id == attributes["id"]
    assert event.source == attributes["source"]
    assert event.service == attributes.get("service")
    assert event.schema_version == 1
    assert event.time.tzinfo is not None
    assert event.time.utcoffset() == timedelta(0)


@pytest.mark.parametrize("name", GOLDENS)
def test_golden_round_trips_byte_stable_through_to_pubsub(name: str) -> None:
    data, attributes = load(name)
    wire = canonical(data)
    event = parse_ops_message(wire, attributes)
    assert event.to_pubsub() == (wire, attributes)
    again = parse_ops_message(*event.to_pubsub())
    assert again == event
    assert again.to_pubsub() == (wire, attributes)


def test_smoke_failed_golden_lists_its_failed_checks() -> None:
    event = parse_ops_message(canonical(load("smoke_failed.json")[0]), load("smoke_failed.json")[1])
    result = event.data_as(SmokeResult)
    assert [check.name for check in result.failed_checks] == [
        "GET /v1/personas?limit=1",
        "POST /v1/focus-groups/dry-run",
    ]
    assert result.failed_checks[1].status_code is None
    assert result.build_id == "c8e07d15-2b9a-4f63-8e4d-71a5b0c9d2f6"


def test_migration_golden_reads_from_and_to() -> None:
    data, attributes = load("migration_succeeded.json")
    result = parse_ops_message(canonical(data), attributes).data_as(MigrationResult)
    assert result.postgres == PostgresRevisions(from_="8c1d2e3f4a5b", to="a7f3e9b2c410")
    assert result.postgres.changed
    assert result.graph == GraphVersions(from_=6, to=7)
    assert result.lint_findings[0].severity == "unsafe"
    assert result.lint_findings[0].allowed
    assert not result.breaking


def test_migration_skipped_golden_has_a_reason_and_no_revisions() -> None:
    data, attributes = load("migration_skipped.json")
    event = parse_ops_message(canonical(data), attributes)
    result = event.data_as(MigrationResult)
    assert result.reason is not None
    assert result.postgres.from_ is None
    assert not result.postgres.changed
    assert event.service is None
    assert "service" not in event.to_pubsub()[1]


# --- producing ----------------------------------------------------------------------


def test_new_event_uses_the_clock_a_uuid4_and_the_payload_service() -> None:
    event = OpsEvent.new(EventType.SMOKE_FAILED, smoke(), source="smoke-runner", clock=lambda: NOW)
    assert event.time == NOW
    assert uuid.UUID(event.id).version == 4
    assert event.service == "sight-api"
    assert event.schema_version == 1
    data, attributes = event.to_pubsub()
    assert attributes == {
        "type": "sight.ops.smoke.failed",
        "id": event.id,
        "time": "2025-06-02T11:20:15.400000Z",
        "source": "smoke-runner",
        "schema_version": "1",
        "service": "sight-api",
    }
    assert json.loads(data)["revision"] == "sight-api-00043-vub"


def test_new_event_without_a_clock_is_stamped_now_in_utc() -> None:
    before = datetime.now(UTC)
    event = OpsEvent.new(EventType.SMOKE_PASSED, smoke(), source="smoke-runner")
    assert before <= event.time <= datetime.now(UTC)
    assert event.time.utcoffset() == timedelta(0)


def test_explicit_service_wins_over_the_payload_service() -> None:
    event = OpsEvent.new(EventType.SMOKE_PASSED, smoke(), source="s", service="sight-web")
    assert event.to_pubsub()[1]["service"] == "sight-web"


def test_time_attribute_is_rfc3339_utc_with_z() -> None:
    paris = timezone(timedelta(hours=2))
    event = OpsEvent.new(
        EventType.KPI_REFRESH_REQUESTED,
        KpiRefreshRequested(all_active=True),
        source="cloud-scheduler",
        clock=lambda: datetime(2025, 6, 2, 18, 0, tzinfo=paris),
    )
    assert event.to_pubsub()[1]["time"] == "2025-06-02T16:00:00Z"
    assert "service" not in event.to_pubsub()[1]


def test_a_naive_clock_is_a_producer_bug() -> None:
    with pytest.raises(ValidationError):
        OpsEvent.new(
            EventType.SMOKE_PASSED, smoke(), source="s", clock=lambda: datetime(2025, 1, 1)
        )


def test_a_payload_that_does_not_match_the_type_is_a_producer_bug() -> None:
    with pytest.raises(TypeError, match="RollbackResult"):
        OpsEvent.new(EventType.ROLLBACK_FAILED, smoke(), source="rollback")


# --- consuming ----------------------------------------------------------------------


def test_unknown_fields_and_attributes_are_ignored() -> None:
    data, attributes = load("rollback_frozen.json")
    data["a_future_field"] = {"nested": True}
    attributes = {**attributes, "googclient_schemaencoding": "JSON", "trace": "abc"}
    event = parse_ops_message(canonical(data), attributes)
    result = event.data_as(RollbackResult)
    assert result.to_revision == "sight-api-00042-qin"
    assert "a_future_field" not in event.to_pubsub()[0].decode()


@pytest.mark.parametrize(
    ("event_type", "payload"),
    [
        (
            EventType.SMOKE_PASSED,
            {
                "service": "s",
                "region": "r",
                "revision": "v",
                "url": "u",
                "started_at": "2025-06-02T11:20:03Z",
                "finished_at": "2025-06-02T11:20:04Z",
            },
        ),
        (EventType.MIGRATION_SUCCEEDED, {"build_id": "b"}),
        (EventType.ROLLBACK_SKIPPED, {"service": "s", "reason": "r"}),
        (EventType.KPI_REFRESH_REQUESTED, {"all_active": True}),
    ],
)
def test_missing_optional_fields_are_fine(event_type: EventType, payload: dict[str, Any]) -> None:
    attributes = {
        "type": event_type.value,
        "id": str(uuid.uuid4()),
        "time": "2025-06-02T11:20:15Z",
        "source": "test",
    }
    event = parse_ops_message(canonical(payload), attributes)
    assert event.type is event_type
    assert event.service is None


def test_defaults_of_optional_payload_fields() -> None:
    result = MigrationResult(build_id="b")
    assert result.lint_findings == []
    assert result.duration_ms == 0
    assert result.graph == GraphVersions()
    rollback = RollbackResult(service="s", reason="r")
    assert not rollback.dry_run
    assert not rollback.manual
    assert smoke().checks == []
    assert smoke().failed_checks == []


def test_schema_version_attribute_is_optional_and_parsed() -> None:
    data, attributes = load("rollback_succeeded.json")
    without = {k: v for k, v in attributes.items() if k != "schema_version"}
    assert parse_ops_message(canonical(data), without).schema_version == 1
    assert (
        parse_ops_message(canonical(data), {**attributes, "schema_version": "2"}).schema_version
        == 2
    )
    with pytest.raises(InvalidEventError, match="schema_version"):
        parse_ops_message(canonical(data), {**attributes, "schema_version": "two"})


def test_ids_and_times_are_canonicalised() -> None:
    data, attributes = load("rollback_succeeded.json")
    shouted = {**attributes, "id": attributes["id"].upper(), "time": "2025-06-02T13:20:48.9+02:00"}
    event = parse_ops_message(canonical(data), shouted)
    assert event.id == attributes["id"]
    assert event.to_pubsub()[1]["time"] == attributes["time"]


def test_data_as_rejects_a_payload_of_another_model() -> None:
    data, attributes = load("kpi_refresh_requested.json")
    event = parse_ops_message(canonical(data), attributes)
    assert event.data_as(KpiRefreshRequested).project_id == "6f1c8e7a-2b4d-4c9e-a3f5-0d7b9e1c3a52"
    with pytest.raises(InvalidEventError, match="SmokeResult"):
        event.data_as(SmokeResult)


def test_kpi_project_id_is_a_canonical_uuid() -> None:
    request = KpiRefreshRequested(project_id="6F1C8E7A-2B4D-4C9E-A3F5-0D7B9E1C3A52")
    assert request.project_id == "6f1c8e7a-2b4d-4c9e-a3f5-0d7b9e1c3a52"
    with pytest.raises(ValidationError):
        KpiRefreshRequested(project_id="project-42")


def test_lint_statement_is_truncated_idempotently() -> None:
    finding = LintFinding(
        rule="r", severity="info", migration="m", message="x", statement="SELECT 1;" * 200
    )
    assert len(finding.statement) == MAX_STATEMENT_CHARS
    assert finding.statement.endswith("…")
    again = LintFinding.model_validate_json(finding.model_dump_json())
    assert again == finding


def test_from_and_to_use_wire_names_and_python_names() -> None:
    by_wire = PostgresRevisions.model_validate({"from": "a", "to": "b"})
    by_name = PostgresRevisions(from_="a", to="b")
    assert by_wire == by_name
    assert by_name.model_dump(by_alias=True) == {"from": "a", "to": "b"}
    assert not GraphVersions(from_=3, to=3).changed


def test_smoke_check_fields() -> None:
    check = SmokeCheck(name="GET /healthz", ok=False, error="connection refused")
    assert check.status_code is None
    assert check.latency_ms is None
    result = smoke(checks=[check, SmokeCheck(name="b", ok=True, status_code=200, latency_ms=3)])
    assert result.failed_checks == [check]


INVALID = sorted((GOLDEN / "invalid").glob("*.json"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_message_raises_with_a_reason_naming_the_problem(path: Path) -> None:
    case = json.loads(path.read_text())
    data = case["data_text"].encode() if "data_text" in case else canonical(case["data"])
    with pytest.raises(InvalidEventError) as info:
        parse_ops_message(data, case["attributes"])
    reason = str(info.value)
    for fragment in case["reason_mentions"]:
        assert fragment in reason, reason
    assert len(reason) < 400


def test_reason_never_echoes_a_large_payload() -> None:
    data, attributes = load("smoke_failed.json")
    data["checks"][0]["ok"] = "maybe" * 10_000
    with pytest.raises(InvalidEventError) as info:
        parse_ops_message(canonical(data), attributes)
    assert "data.checks[0].ok" in str(info.value)
    assert len(str(info.value)) < 400


# --- values that travel into the deploy (docs/events.md) ---------------------------------

FULL_SHA = "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91"  # pragma: allowlist secret


@pytest.mark.parametrize(
    "commit_sha",
    ["", "3f2a9c1", FULL_SHA + "\n", FULL_SHA.upper(), FULL_SHA[:-1] + "g", "x$(id)" + FULL_SHA],
)
@pytest.mark.parametrize("name", ["migration_succeeded.json", "smoke_passed.json"])
def test_a_commit_sha_that_is_not_40_lowercase_hex_is_rejected(name: str, commit_sha: str) -> None:
    data, attributes = load(name)
    data["commit_sha"] = commit_sha
    with pytest.raises(InvalidEventError, match=r"data\.commit_sha"):
        parse_ops_message(canonical(data), attributes)


@pytest.mark.parametrize("service", ["Sight-API", "sight_api", "-sight", "sight-", "a" * 64, "s\n"])
def test_a_service_that_is_not_a_cloud_run_service_name_is_rejected(service: str) -> None:
    data, attributes = load("migration_succeeded.json")
    data["service"] = service
    with pytest.raises(InvalidEventError, match=r"data\.service"):
        parse_ops_message(canonical(data), attributes)
    with pytest.raises(ValidationError):
        smoke(service=service)


def test_commit_sha_and_service_may_be_absent_but_never_malformed() -> None:
    assert MigrationResult(build_id="b-1").commit_sha is None
    assert MigrationResult(build_id="b-1", commit_sha=FULL_SHA, service="a").service == "a"
    with pytest.raises(ValidationError, match="40 lowercase hex"):
        MigrationResult(build_id="b-1", commit_sha="abc123")
    with pytest.raises(ValidationError, match="Cloud Build id"):
        MigrationResult(build_id="b 1")


# --- canary (docs/canary.md) -----------------------------------------------------------


def parse_golden(name: str) -> OpsEvent[OpsPayload]:
    data, attributes = load(name)
    return parse_ops_message(canonical(data), attributes)


def test_canary_request_golden_carries_what_the_canary_function_starts_from() -> None:
    event = parse_golden("canary_requested.json")
    request = event.data_as(CanaryRequest)
    assert (request.revision, request.stable_revision) == (
        "sight-api-00044-xaz",
        "sight-api-00043-vub",
    )
    assert request.project == "sight-prod"
    assert event.release_id == request.release_id == "sight-api@4f1c2a9e7b3d"


def test_canary_tick_without_a_service_means_every_running_canary() -> None:
    every = parse_golden("canary_tick.json")
    one = parse_golden("canary_tick_service.json")
    assert every.data_as(CanaryTick).service is None
    assert every.service is None
    assert one.data_as(CanaryTick).service == one.service == "sight-api"
    assert CanaryTick() == CanaryTick(service=None, region=None)


def test_canary_tick_the_canary_sends_itself_names_when_it_is_due() -> None:
    due = parse_golden("canary_tick_due.json").data_as(CanaryTick)
    assert due.service == "sight-api"
    assert due.not_before == datetime(2025, 6, 2, 11, 27, 10, tzinfo=UTC)
    assert parse_golden("canary_tick_service.json").data_as(CanaryTick).not_before is None


def test_canary_rolled_back_golden_carries_the_evidence_of_every_step() -> None:
    result = parse_golden("canary_rolled_back.json").data_as(CanaryResult)
    assert (result.action, result.percent_before, result.percent_after) == ("rollback", 5, 0)
    assert result.evidence is not None
    assert result.evidence["verdict"] == "rollback"
    assert result.evidence["errors"]["canary_events"] == 24
    assert [step.percent for step in result.steps] == [5]
    assert result.steps[0].evidence == result.evidence
    promoted = parse_golden("canary_promoted.json").data_as(CanaryResult)
    assert [step.percent for step in promoted.steps] == [5, 25]
    assert not promoted.manual
    assert promoted.actor == "automation"


def test_a_canary_action_outside_the_contract_is_rejected() -> None:
    data, attributes = load("canary_stepped.json")
    data["action"] = "yolo"
    with pytest.raises(InvalidEventError, match=r"data\.action"):
        parse_ops_message(canonical(data), attributes)


def test_canary_evidence_strings_are_cleaned_not_refused() -> None:
    data, attributes = load("canary_stepped.json")
    data["evidence"]["reason"] = "bad\x00byte"
    result = parse_ops_message(canonical(data), attributes).data_as(CanaryResult)
    assert result.evidence is not None
    assert result.evidence["reason"] == "bad\ufffdbyte"


def test_a_release_ended_by_the_canary_says_so_and_others_do_not() -> None:
    assert parse_golden("release_promoted.json").data_as(ReleaseResult).via is None
    data, attributes = load("release_promoted.json")
    data["via"] = "canary"
    assert parse_ops_message(canonical(data), attributes).data_as(ReleaseResult).via == "canary"
    data["via"] = "someone"
    with pytest.raises(InvalidEventError, match=r"data\.via"):
        parse_ops_message(canonical(data), attributes)
