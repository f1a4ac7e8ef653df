"""shared.rollback.CloudRun driven against the Cloud Run stand-in (official REST client)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.errors import TransientError
from shared.rollback import (
    CloudRun,
    OperationFailed,
    ServiceNotFound,
    TrafficChanged,
    TrafficConflict,
    UpdateOutcomeUnknown,
    create_cloud_run,
)
from shared.settings import RollbackConfig, Settings
from standins import RunningServer, serve
from standins.cloudrun import CloudRunState, create_app

PROJECT, REGION, SERVICE = "sight-local", "europe-west1", "sight-api"
T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def standin() -> Iterator[tuple[CloudRunState, RunningServer]]:
    state = CloudRunState(seed=3)
    with serve(create_app(state)) as server:
        yield state, server


@pytest.fixture
def cloud(standin: tuple[CloudRunState, RunningServer]) -> CloudRun:
    _, server = standin
    return create_cloud_run(
        Settings(
            cloud_run_endpoint=server.url,
            rollback=RollbackConfig(operation_timeout_s=5, api_timeout_s=5),
        )
    )


def deploy(state: CloudRunState) -> list[str]:
    """v1 created first, v2 tagged candidate (no traffic), v3 serving 100 % via LATEST;
    created in an order that the stand-in's unordered listing does not follow."""
    state.create_service(PROJECT, REGION, SERVICE, "img:v1", create_time=T0)
    names = [state.get_service(PROJECT, REGION, SERVICE)["latestReadyRevision"].rsplit("/", 1)[1]]
    for i, extra in ((2, {"no_traffic": True, "tag": "candidate"}), (3, {"promote": True})):
        rev = state.create_revision(
            PROJECT,
            REGION,
            SERVICE,
            image=f"img:v{i}",
            create_time=T0 + timedelta(days=i),
            **extra,  # type: ignore[arg-type]
        )
        names.append(rev["name"].rsplit("/", 1)[1])
    return names


def test_read_sorts_revisions_by_create_time_and_resolves_latest(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    v1, v2, v3 = deploy(state)
    read = cloud.read(PROJECT, REGION, SERVICE)
    assert [r.name for r in read.revisions] == [v1, v2, v3]
    assert all(r.ready for r in read.revisions)
    assert read.revisions[0].image == "img:v1"
    assert read.serving() == {v3: 100}
    assert read.etag


def test_pin_traffic_moves_everything_and_keeps_tags(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    v1, v2, _v3 = deploy(state)
    after = cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert after.serving() == {v1: 100}
    spec = state.get_service(PROJECT, REGION, SERVICE)["traffic"]
    assert spec == [
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": v1, "percent": 100},
        {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": v2, "tag": "candidate"},
    ]
    [patch] = state.requests("PATCH")
    assert patch["body"]["etag"], "the update carries the etag read just before"


def test_pin_traffic_waits_for_a_slow_operation(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    v1, _, _ = deploy(state)
    state.configure(operation_polls=3)
    after = cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert after.serving() == {v1: 100}
    assert len(state.requests("GET", r"/operations/")) == 3


def test_conflict_is_reread_and_retried_once(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    v1, _, _ = deploy(state)
    state.inject_fault(409, method="PATCH")
    after = cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert after.serving() == {v1: 100}
    assert state.patch_count(PROJECT, REGION, SERVICE) == 2


def test_a_second_conflict_fails_cleanly_without_a_change(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    v1, _, v3 = deploy(state)
    state.inject_fault(409, method="PATCH", count=2)
    with pytest.raises(TrafficConflict, match="409 twice"):
        cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert cloud.read(PROJECT, REGION, SERVICE).serving() == {v3: 100}
    assert state.applied_update_counts() == {}


def test_a_real_etag_race_is_detected_by_the_server(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    """A deploy between our read and our PATCH changes the etag: Cloud Run answers 409.

    Through pin_traffic the same deploy (under LATEST it also changed who serves) is seen
    on the re-read and nothing is sent: before, this test expected pin_traffic to move
    traffic anyway, overwriting the deploy. Decided on a fresh read, it moves.
    """
    state, _ = standin
    v1, _, _ = deploy(state)
    before = cloud.read(PROJECT, REGION, SERVICE)
    services = cloud._services
    svc = services.get_service(name=f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}")
    v4 = state.create_revision(PROJECT, REGION, SERVICE, image="img:v4")["name"].rsplit("/", 1)[1]
    from google.api_core.exceptions import Conflict

    with pytest.raises(Conflict):
        services.update_service(request={"service": svc})
    with pytest.raises(TrafficChanged, match="changed since the decision"):
        cloud.pin_traffic(before, v1)
    assert cloud.read(PROJECT, REGION, SERVICE).serving() == {v4: 100}
    assert state.applied_update_counts() == {}
    assert cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1).serving() == {v1: 100}


def test_a_conflict_from_a_change_that_leaves_traffic_alone_is_retried(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    """A ``--no-traffic --tag`` deploy lands just before our PATCH: a real 409, but who
    serves is unchanged, so the re-read and retry go ahead (and keep the new tag)."""
    state, _ = standin
    v1, _, v3 = deploy(state)
    state.interleave(
        lambda: state.create_revision(
            PROJECT, REGION, SERVICE, image="img:v4", no_traffic=True, tag="next"
        ),
        method="PATCH",
    )
    before = cloud.read(PROJECT, REGION, SERVICE)
    assert before.serving() == {v3: 100}
    assert cloud.pin_traffic(before, v1).serving() == {v1: 100}
    assert state.patch_count(PROJECT, REGION, SERVICE) == 2
    tags = {t.get("tag") for t in state.get_service(PROJECT, REGION, SERVICE)["traffic"]}
    assert "next" in tags


@pytest.mark.parametrize("status", [503, 429])
def test_unavailable_or_throttled_update_is_transient(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun, status: int
) -> None:
    """429 and 503 say the update was not taken: safe to redeliver."""
    state, _ = standin
    v1, _, v3 = deploy(state)
    state.inject_fault(status, method="PATCH")
    with pytest.raises(TransientError):
        cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert cloud.read(PROJECT, REGION, SERVICE).serving() == {v3: 100}


@pytest.mark.parametrize("status", [500, 504])
def test_an_update_answered_500_or_504_has_an_unknown_outcome_and_is_not_retried(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun, status: int
) -> None:
    """500 / 504 do not say whether the update was applied: a human looks."""
    state, _ = standin
    v1, _, _ = deploy(state)
    state.inject_fault(status, method="PATCH")
    with pytest.raises(UpdateOutcomeUnknown, match="outcome unknown"):
        cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
    assert state.patch_count(PROJECT, REGION, SERVICE) == 1


def test_a_brief_read_outage_is_retried_inside_the_call(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    deploy(state)
    state.inject_fault(503, method="GET", count=2)
    assert cloud.read(PROJECT, REGION, SERVICE).revisions


def test_unknown_service_is_not_found(cloud: CloudRun) -> None:
    with pytest.raises(ServiceNotFound):
        cloud.read(PROJECT, REGION, "no-such-service")


def test_failed_operation_is_reported_not_retried(
    standin: tuple[CloudRunState, RunningServer], cloud: CloudRun
) -> None:
    state, _ = standin
    _, _, _ = deploy(state)
    state.configure(unknown_revision_mode="fail_operation")
    before = cloud.read(PROJECT, REGION, SERVICE)
    with pytest.raises(OperationFailed, match="failed"):
        cloud.pin_traffic(before, "sight-api-09999-zzz")


def test_unreachable_cloud_run_is_transient() -> None:
    with serve(create_app(CloudRunState())) as server:
        url = server.url
    cloud = create_cloud_run(Settings(cloud_run_endpoint=url))
    with pytest.raises(TransientError):
        cloud.read(PROJECT, REGION, SERVICE)


def test_an_operation_that_never_finishes_fails_after_the_timeout(
    standin: tuple[CloudRunState, RunningServer],
) -> None:
    state, server = standin
    v1, _, _ = deploy(state)
    state.configure(operation_polls=10_000)
    cloud = create_cloud_run(
        Settings(cloud_run_endpoint=server.url, rollback=RollbackConfig(operation_timeout_s=0.5))
    )
    with pytest.raises(OperationFailed, match="did not finish within"):
        cloud.pin_traffic(cloud.read(PROJECT, REGION, SERVICE), v1)
