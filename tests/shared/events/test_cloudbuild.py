"""Cloud Build messages: golden fixtures as Cloud Build publishes them, and edge cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from shared.errors import InvalidEventError
from shared.events import Build, BuildSelector, BuildStatus, MigrateSelector, parse_build_message

GOLDEN = Path(__file__).resolve().parents[2] / "fixtures" / "golden" / "cloudbuild"
TRIGGER_ID = "5d2f8a61-93c4-4b7e-a0d2-1c6e9f3b7a48"


def load(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    message = json.loads((GOLDEN / name).read_text())
    return message["data"], message["attributes"]


def encode(data: Any) -> bytes:
    return json.dumps(data).encode()


def parse_golden(name: str) -> Build:
    data, attributes = load(name)
    return parse_build_message(encode(data), attributes)


EXPECTED_STATUS = {
    "queued.json": BuildStatus.QUEUED,
    "working.json": BuildStatus.WORKING,
    "success_triggered.json": BuildStatus.SUCCESS,
    "success_manual.json": BuildStatus.SUCCESS,
    "failure.json": BuildStatus.FAILURE,
    "timeout.json": BuildStatus.TIMEOUT,
    "cancelled.json": BuildStatus.CANCELLED,
    "internal_error.json": BuildStatus.INTERNAL_ERROR,
    "unknown_status.json": BuildStatus.STATUS_UNKNOWN,
}


def test_every_golden_file_has_an_expectation() -> None:
    assert {p.name for p in GOLDEN.glob("*.json")} == set(EXPECTED_STATUS)


@pytest.mark.parametrize(("name", "status"), sorted(EXPECTED_STATUS.items()))
def test_golden_build_parses_with_its_status_and_id(name: str, status: BuildStatus) -> None:
    data, attributes = load(name)
    build = parse_build_message(encode(data), attributes)
    assert build.id == attributes["buildId"] == data["id"]
    assert build.status is status
    assert build.project_id == "sight-prod"
    assert build.is_terminal == (name not in {"queued.json", "working.json", "unknown_status.json"})


def test_triggered_success_exposes_trigger_commit_service_and_images() -> None:
    build = parse_golden("success_triggered.json")
    assert build.build_trigger_id == TRIGGER_ID
    assert f"trigger-{TRIGGER_ID}" in build.tags
    assert build.trigger_name == "sight-api-ci"
    assert build.commit_sha == "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91"
    assert build.short_sha == "3f2a9c1"
    assert build.branch == "main"
    assert build.repo == "sight"
    assert build.service == "sight-api"
    assert build.log_url is not None
    assert build.log_url.startswith("https://console.cloud.google.com/cloud-build/builds;region=")
    assert build.results is not None
    assert [image.digest for image in build.results.images] == [
        "sha256:9a3e6f1c0b2d84e7f5a61c39d0e2b7f48c15a96d3e0f72b84c6d19a5e3f07b2c"
    ] * 2
    assert build.results.images[0].name == (
        "europe-west1-docker.pkg.dev/sight-prod/sight/sight-api:3f2a9c1"
    )
    assert build.failure_info is None
    assert build.source is not None
    assert build.source_provenance is not None


def test_nanosecond_times_parse_as_utc_microseconds() -> None:
    build = parse_golden("success_triggered.json")
    assert build.create_time == datetime(2025, 6, 2, 9, 14, 3, 512874, tzinfo=UTC)
    assert build.start_time is not None
    assert build.start_time.utcoffset() == timedelta(0)
    assert build.duration == timedelta(minutes=4, seconds=46, microseconds=452889)


def test_manual_build_has_no_trigger_fields() -> None:
    build = parse_golden("success_manual.json")
    assert build.build_trigger_id is None
    assert build.substitutions == {}
    assert build.tags == []
    assert build.trigger_name is None
    assert build.commit_sha is None
    assert build.short_sha is None
    assert build.branch is None
    assert build.repo is None
    assert build.service is None
    assert build.results is not None
    assert len(build.results.images) == 1


def test_failure_carries_failure_info_and_status_detail() -> None:
    build = parse_golden("failure.json")
    assert build.failure_info is not None
    assert build.failure_info.type == "USER_BUILD_STEP"
    assert build.failure_info.detail is not None
    assert "non-zero status" in build.failure_info.detail
    assert build.status_detail is not None
    assert build.results is not None
    assert build.results.images == []
    assert build.short_sha == "b17d4e2"


def test_queued_and_working_builds_have_no_duration() -> None:
    queued = parse_golden("queued.json")
    working = parse_golden("working.json")
    assert queued.start_time is None
    assert queued.duration is None
    assert working.start_time is not None
    assert working.finish_time is None
    assert working.duration is None


def test_unknown_build_status_parses_as_status_unknown() -> None:
    build = parse_golden("unknown_status.json")
    assert build.status is BuildStatus.STATUS_UNKNOWN
    assert not build.is_terminal


@pytest.mark.parametrize("status", list(BuildStatus))
def test_terminal_statuses_are_exactly_the_finished_ones(status: BuildStatus) -> None:
    finished = {"SUCCESS", "FAILURE", "INTERNAL_ERROR", "TIMEOUT", "CANCELLED", "EXPIRED"}
    assert status.is_terminal == (status.value in finished)


def test_status_missing_from_data_falls_back_to_status_attribute() -> None:
    data, attributes = load("success_triggered.json")
    del data["status"]
    build = parse_build_message(encode(data), attributes)
    assert build.status is BuildStatus.SUCCESS


def test_status_in_data_wins_over_status_attribute() -> None:
    data, _ = load("working.json")
    build = parse_build_message(encode(data), {"buildId": data["id"], "status": "SUCCESS"})
    assert build.status is BuildStatus.WORKING


def test_status_missing_everywhere_is_status_unknown() -> None:
    build = parse_build_message(b'{"id": "b-1"}', {})
    assert build.status is BuildStatus.STATUS_UNKNOWN


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (3, BuildStatus.SUCCESS),
        (10, BuildStatus.PENDING),
        (99, BuildStatus.STATUS_UNKNOWN),
        ("success", BuildStatus.SUCCESS),
        ("EXPIRED", BuildStatus.EXPIRED),
    ],
)
def test_status_accepts_proto3_enum_numbers_and_any_case(
    raw: object, expected: BuildStatus
) -> None:
    build = parse_build_message(encode({"id": "b-1", "status": raw}), {})
    assert build.status is expected


def test_id_missing_from_data_is_taken_from_build_id_attribute() -> None:
    build = parse_build_message(b'{"status": "QUEUED"}', {"buildId": "b-7", "status": "QUEUED"})
    assert build.id == "b-7"


def test_id_disagreeing_with_build_id_attribute_is_invalid() -> None:
    with pytest.raises(InvalidEventError, match="buildId"):
        parse_build_message(b'{"id": "b-1"}', {"buildId": "b-2"})


def test_unknown_fields_are_ignored() -> None:
    data, attributes = load("success_triggered.json")
    data["someFutureField"] = {"nested": [1, 2, 3]}
    data["results"]["images"][0]["attestation"] = "sha256:abc"
    data["failureInfo"] = {"type": "A_NEW_FAILURE_TYPE", "detail": "x", "extra": True}
    build = parse_build_message(encode(data), attributes)
    assert build.status is BuildStatus.SUCCESS
    assert build.failure_info is not None
    assert build.failure_info.type == "A_NEW_FAILURE_TYPE"


def test_build_with_only_an_id_parses_with_empty_defaults() -> None:
    build = parse_build_message(b'{"id": "b-1"}', {})
    assert build.project_id is None
    assert build.create_time is None
    assert build.substitutions == {}
    assert build.tags == []
    assert build.images == []
    assert build.results is None
    assert build.log_url is None
    assert build.duration is None


def test_null_collections_are_treated_as_empty() -> None:
    build = parse_build_message(
        b'{"id": "b-1", "substitutions": null, "tags": null, "results": {"images": null}}', {}
    )
    assert build.substitutions == {}
    assert build.tags == []
    assert build.results is not None
    assert build.results.images == []


def test_empty_substitution_values_count_as_absent() -> None:
    build = parse_build_message(
        encode(
            {
                "id": "b-1",
                "substitutions": {"COMMIT_SHA": "", "REVISION_ID": "abc1234def", "_SERVICE": ""},
            }
        ),
        {},
    )
    assert build.commit_sha == "abc1234def"
    assert build.short_sha == "abc1234"
    assert build.service is None


INVALID = sorted((GOLDEN / "invalid").glob("*.json"))


@pytest.mark.parametrize("path", INVALID, ids=[p.stem for p in INVALID])
def test_invalid_message_raises_with_a_reason_naming_the_problem(path: Path) -> None:
    case = json.loads(path.read_text())
    data = case["data_text"].encode() if "data_text" in case else encode(case["data"])
    with pytest.raises(InvalidEventError) as info:
        parse_build_message(data, case["attributes"])
    reason = str(info.value)
    for fragment in case["reason_mentions"]:
        assert fragment in reason, reason


def test_reason_never_echoes_a_large_payload() -> None:
    junk = b"x" * 100_000
    with pytest.raises(InvalidEventError) as info:
        parse_build_message(junk, {})
    assert len(str(info.value)) < 400
    with pytest.raises(InvalidEventError) as info:
        parse_build_message(encode({"id": "b", "createTime": "y" * 10_000}), {})
    assert len(str(info.value)) < 400


@pytest.mark.parametrize("data", [b"", b"   ", b"\xff\xfe\x00garbage", b"null", b"42"])
def test_empty_or_undecodable_data_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidEventError):
        parse_build_message(data, {"buildId": "b-1"})


# --- BuildSelector ------------------------------------------------------------------


def test_empty_selector_selects_nothing() -> None:
    selector = BuildSelector()
    assert selector.is_empty
    assert not selector.selects(parse_golden("success_triggered.json"))


@pytest.mark.parametrize(
    "config",
    [
        {"trigger_ids": [TRIGGER_ID]},
        {"trigger_names": ["sight-api-ci"]},
        {"tags": ["ci"]},
        {"tags": [f"trigger-{TRIGGER_ID}"]},
        {"services": ["sight-api"]},
        {"services": ["other"], "tags": ["ci"]},
    ],
)
def test_selector_selects_a_build_matching_any_criterion(config: dict[str, list[str]]) -> None:
    selector = BuildSelector.model_validate(config)
    assert selector.selects(parse_golden("success_triggered.json"))


def test_selector_does_not_select_unmatched_builds() -> None:
    selector = BuildSelector.model_validate(
        {"trigger_ids": ["other"], "trigger_names": ["x"], "tags": ["y"], "services": ["z"]}
    )
    assert not selector.selects(parse_golden("success_triggered.json"))
    assert not selector.selects(parse_golden("success_manual.json"))


def test_selector_rejects_unknown_configuration_keys() -> None:
    with pytest.raises(ValidationError):
        BuildSelector.model_validate({"service": ["sight-api"]})


# --- MigrateSelector: only what Cloud Build itself sets selects a build for migrate ------

MIGRATE = MigrateSelector.model_validate({"trigger_ids": [TRIGGER_ID], "services": ["sight-api"]})


def manual_build(**substitutions: str) -> Build:
    """A ``gcloud builds submit`` build: no buildTriggerId, and whatever the caller chose."""
    data, attributes = load("success_manual.json")
    data["substitutions"] = substitutions
    data["tags"] = [f"trigger-{TRIGGER_ID}", "sight-api", "ci"]
    return parse_build_message(encode(data), attributes)


def test_migrate_selects_a_build_of_its_trigger() -> None:
    assert MIGRATE.selects(parse_golden("success_triggered.json"))
    assert MigrateSelector(trigger_ids=frozenset({TRIGGER_ID})).selects(
        parse_golden("success_triggered.json")
    )


def test_migrate_never_selects_a_manual_build_whatever_it_claims() -> None:
    build = manual_build(_SERVICE="sight-api", TRIGGER_NAME="sight-api-ci", COMMIT_SHA="x")
    assert build.build_trigger_id is None
    assert BuildSelector(services=frozenset({"sight-api"})).selects(build)  # notify's filter
    assert not MIGRATE.selects(build)
    assert MIGRATE.why_not(build) == "not selected: no trigger ran it (a manual build)"


def test_migrate_services_narrow_the_triggers_builds() -> None:
    data, attributes = load("success_triggered.json")
    data["substitutions"]["_SERVICE"] = "sight-web"
    build = parse_build_message(encode(data), attributes)
    assert not MIGRATE.selects(build)
    assert "_SERVICE" in (MIGRATE.why_not(build) or "")
    assert "sight-web" not in (MIGRATE.why_not(build) or ""), "never quotes caller text"


def test_migrate_does_not_select_another_triggers_build() -> None:
    selector = MigrateSelector(trigger_ids=frozenset({"0f0e0d0c-0000-4000-8000-000000000000"}))
    assert not selector.selects(parse_golden("success_triggered.json"))


def test_an_empty_migrate_selector_selects_nothing() -> None:
    assert MigrateSelector().is_empty
    assert not MigrateSelector().selects(parse_golden("success_triggered.json"))


@pytest.mark.parametrize(
    ("config", "mentions"),
    [
        ({"services": ["sight-api"]}, "trigger_ids"),
        ({"trigger_names": ["sight-api-ci"]}, "trigger_names"),
        ({"trigger_ids": [TRIGGER_ID], "tags": ["ci"]}, "tags"),
        ({"trigger_ids": [TRIGGER_ID], "services": ["Sight_API"]}, "Cloud Run service name"),
        ({"trigger_ids": [""]}, "trigger_ids"),
        ({"trigger_id": [TRIGGER_ID]}, "trigger_id"),
    ],
)
def test_a_migrate_selector_that_caller_chosen_values_could_satisfy_fails_at_start_up(
    config: dict[str, list[str]], mentions: str
) -> None:
    with pytest.raises(ValidationError, match=mentions):
        MigrateSelector.model_validate(config)


@pytest.mark.parametrize("build_id", ['b"; id; echo "', "b 1", "b/1", "-b", "b\n"])
def test_a_build_id_cloud_build_could_not_have_generated_is_invalid(build_id: str) -> None:
    with pytest.raises(InvalidEventError, match="Cloud Build id"):
        parse_build_message(encode({"id": build_id, "status": "SUCCESS"}), {})


def test_odd_substitutions_do_not_make_a_build_unparseable() -> None:
    """Notify still reports such a build; migrate refuses it if it selects it."""
    data, attributes = load("queued.json")
    data["substitutions"]["COMMIT_SHA"] = 'x"; id; echo "'
    data["substitutions"]["_SERVICE"] = "$(id)"
    build = parse_build_message(encode(data), attributes)
    assert build.commit_sha == 'x"; id; echo "' and build.service == "$(id)"
