"""`sightops deploy` through the CLI, against the Cloud Run stand-in serving revisions from
the Sight API stand-in, and the real Pub/Sub emulator (docs/deploy.md, "sightops deploy")."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.deploy import PHASES
from shared.events import (
    EventType,
    OpsEvent,
    OpsPayload,
    ReleaseResult,
    SmokeResult,
    parse_ops_message,
)
from shared.release import release_id
from shared.settings import get_settings
from sightops.cli import app
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import RunningServer, serve
from standins import sightapi as sightapi_standin
from standins.cloudrun import CloudRunState, create_app
from tests.helpers import PROJECT

REGION = "europe-west1"
REPO = f"{REGION}-docker.pkg.dev/{PROJECT}/sight"
OLD = "1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b"  # pragma: allowlist secret
NEW = "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91"  # pragma: allowlist secret
BUILD = "0b6f2c3e-7d41-4a8e-9c55-2e81f4d7a6b3"

runner = CliRunner()


class Topic:
    """A private topic on the emulator and a pull subscription to read it back."""

    def __init__(self, publisher: Any, subscriber: Any, name: str) -> None:
        self.name = name
        self._publisher = publisher
        self._subscriber = subscriber
        ensure_topic(publisher, PROJECT, name)
        self._sub = ensure_subscription(subscriber, PROJECT, f"{name}-pull", name)
        self.seen: list[OpsEvent[OpsPayload]] = []
        self.markers = 0

    def pull(self) -> None:
        response = self._subscriber.pull(subscription=self._sub, max_messages=50, timeout=1)
        if response.received_messages:
            self._subscriber.acknowledge(
                subscription=self._sub, ack_ids=[m.ack_id for m in response.received_messages]
            )
        for received in response.received_messages:
            msg = received.message
            if msg.attributes.get("marker"):
                self.markers += 1
            else:
                self.seen.append(parse_ops_message(msg.data, dict(msg.attributes)))

    def published_nothing(self) -> bool:
        """Publish a marker and read up to it: nothing else arrived before (or with) it."""
        path = f"projects/{PROJECT}/topics/{self.name}"
        self._publisher.publish(path, b"{}", marker="1").result(10)
        deadline = time.monotonic() + 15
        while not self.markers and time.monotonic() < deadline:
            self.pull()
        return self.markers == 1 and self.seen == []


@dataclass
class World:
    cloudrun: CloudRunState
    sight: sightapi_standin.SightApiState
    server: RunningServer
    service: str
    smoke: Topic
    ops: Topic
    old_revision: str

    @property
    def image(self) -> str:
        return f"{REPO}/{self.service}:{NEW}"

    def deploy(self, *extra: str) -> Any:
        args = ["deploy", "--service", self.service, "--commit-sha", NEW, "--build-id", BUILD]
        return runner.invoke(app, [*args, *extra])

    def serving(self) -> dict[str, int]:
        svc = self.cloudrun.get_service(PROJECT, REGION, self.service)
        latest = svc.get("latestReadyRevision", "").rsplit("/", 1)[-1]
        out: dict[str, int] = {}
        for item in svc.get("trafficStatuses", []):
            if item.get("percent"):
                name = item.get("revision") or latest
                out[name] = out.get(name, 0) + int(item["percent"])
        return out

    def events(self, count: int, timeout_s: float = 15.0) -> list[OpsEvent[OpsPayload]]:
        """Every event published to both topics, in the order they happened."""
        deadline = time.monotonic() + timeout_s
        while len(self.smoke.seen) + len(self.ops.seen) < count and time.monotonic() < deadline:
            self.smoke.pull()
            self.ops.pull()
        seen = sorted([*self.smoke.seen, *self.ops.seen], key=lambda e: e.time)
        assert len(seen) == count, [e.type.value for e in seen]
        return seen

    def patches(self) -> int:
        return self.cloudrun.patch_count(PROJECT, REGION, self.service)


@pytest.fixture(scope="module")
def pubsub() -> tuple[Any, Any]:
    os.environ.setdefault("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


@pytest.fixture
def world(
    database_url: str, pubsub: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> Iterator[World]:
    sight = sightapi_standin.SightApiState(seed=3)
    cloudrun = CloudRunState(seed=5, route_seed=9)
    service = f"svc-{uuid.uuid4().hex[:8]}"
    suffix = uuid.uuid4().hex[:8]
    smoke, ops = (Topic(*pubsub, f"{t}-{suffix}") for t in ("smoke-tests", "ops-events"))
    with (
        serve(sightapi_standin.create_app(sight)) as sight_server,
        serve(create_app(cloudrun)) as server,
    ):
        cloudrun.configure(serve_base=server.url, upstream=sight_server.url)
        cloudrun.create_service(
            PROJECT, REGION, service, f"{REPO}/{service}:{OLD}", revision=f"{service}-old"
        )
        for name, value in {
            "CLOUD_RUN_ENDPOINT": server.url,
            "GCP_PROJECT": PROJECT,
            "GCP_REGION": REGION,
            "TOPICS__SMOKE_TESTS": smoke.name,
            "TOPICS__OPS_EVENTS": ops.name,
            "ROLLBACK__SMOKE_RETRIES": "0",
            "ROLLBACK__API_TIMEOUT_S": "5",
        }.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        yield World(cloudrun, sight, server, service, smoke, ops, f"{service}-old")
    get_settings.cache_clear()


def test_a_good_image_is_deployed_smoked_promoted_and_announced_in_order(world: World) -> None:
    result = world.deploy()

    assert result.exit_code == 0, result.output
    deployed, tag_smoke, service_smoke, promoted = world.events(4)
    assert [e.type for e in (deployed, tag_smoke, service_smoke, promoted)] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_PASSED,
        EventType.SMOKE_PASSED,
        EventType.RELEASE_PROMOTED,
    ]
    release = promoted.data_as(ReleaseResult)
    revision = release.revision
    assert revision is not None and revision.startswith(f"{world.service}-{NEW[:8]}-")
    assert world.serving() == {revision: 100}
    spec = world.cloudrun.get_service(PROJECT, REGION, world.service)["traffic"]
    pinned = {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision}
    assert {**pinned, "percent": 100} in spec
    assert any(t.get("tag") == "candidate" and t["revision"] == revision for t in spec)
    assert release.previous_revision == world.old_revision
    assert release.image == world.image
    assert release.release_id == release_id(world.service, NEW) == promoted.release_id
    assert release.build_id == BUILD
    assert list(release.phases) == list(PHASES)
    assert all(ms > 0 for ms in release.phases.values())
    assert tag_smoke.data_as(SmokeResult).url.endswith(f"/candidate---{world.service}")
    assert service_smoke.data_as(SmokeResult).url == release.url
    # The new revision answered every smoke request: the candidate through its tag, then
    # the service once it held 100 %.
    assert set(world.sight.served()) == {revision}
    assert f"release {release.release_id} promoted" in result.stdout


def test_a_bad_image_fails_on_its_tag_url_and_traffic_is_untouched(world: World) -> None:
    world.sight.set_image(world.image, failing_checks=["health"])

    result = world.deploy()

    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert "failed: smoke on the tag URL failed (GET /health: HTTP 503" in result.stderr
    assert world.serving() == {world.old_revision: 100}
    deployed, tag_smoke, failed = world.events(3)
    assert [e.type for e in (deployed, tag_smoke, failed)] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_FAILED,
        EventType.RELEASE_FAILED,
    ]
    release = failed.data_as(ReleaseResult)
    assert release.revision == deployed.data_as(ReleaseResult).revision
    assert "nothing was promoted" in (release.reason or "")
    assert list(release.phases) == ["deploy", "smoke_tag"]


def test_a_failed_service_smoke_after_promotion_publishes_smoke_failed_and_release_failed(
    world: World,
) -> None:
    """The image breaks between the two smoke runs (just before the promotion's PATCH):
    rollback is told by smoke.failed; the release does not count as promoted."""
    world.cloudrun.interleave(
        lambda: world.sight.set_image(world.image, failing_checks=["db"]),
        method="PATCH",
        skip=1,
    )

    result = world.deploy()

    assert result.exit_code == 1
    events = world.events(4)
    assert [e.type for e in events] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_PASSED,
        EventType.SMOKE_FAILED,
        EventType.RELEASE_FAILED,
    ]
    release = events[-1].data_as(ReleaseResult)
    assert world.serving() == {release.revision: 100}, "rollback, not the deploy, moves it back"
    assert "after promotion" in (release.reason or "")
    assert list(release.phases) == list(PHASES)


@pytest.mark.parametrize("status", [409, 503])
def test_one_refused_update_from_cloud_run_is_retried(world: World, status: int) -> None:
    world.cloudrun.inject_fault(status, count=1, method="PATCH")

    result = world.deploy()

    assert result.exit_code == 0, result.output
    assert world.patches() == 3  # the refused deploy, the deploy, the promotion
    assert world.events(4)[-1].type is EventType.RELEASE_PROMOTED


def test_cloud_run_refusing_every_update_ends_in_one_clear_line(world: World) -> None:
    world.cloudrun.inject_fault(503, count=10, method="PATCH")

    result = world.deploy()

    assert result.exit_code == 1
    [line] = result.stderr.splitlines()
    assert line.startswith(f"release {release_id(world.service, NEW)} failed: deploy of ")
    assert "Cloud Run unavailable: ServiceUnavailable" in line
    assert "Traceback" not in result.output
    assert world.serving() == {world.old_revision: 100}
    [failed] = world.events(1)
    assert failed.type is EventType.RELEASE_FAILED
    assert failed.data_as(ReleaseResult).revision is None


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--commit-sha", "3f2a9c1"], "commit is not a full commit"),
        (["--commit-sha", NEW.upper()], "commit is not a full commit"),
        (["--service", "Sight_API"], "service is not a Cloud Run service name"),
        (["--service", "s" * 50], "service is not a Cloud Run service name"),
        (["--build-id", "b/1"], "build id is not a Cloud Build id"),
        (["--tag", "Candidate"], "tag is not a Cloud Run revision tag"),
        (["--region", "europe west1"], "region is not a region"),
        (["--image-repo", "x;id"], "image repository is not"),
        (["--event-type", "sight.ops.migration.failed"], "not a migration.succeeded event"),
        (["--event-id", "not-a-uuid"], "the event id is not a UUID"),
    ],
)
def test_invalid_input_exits_2_with_one_line_and_touches_nothing(
    world: World, args: list[str], says: str
) -> None:
    result = world.deploy(*args)

    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith("not deploying: ") and says in line, line
    assert world.patches() == 0
    assert world.smoke.published_nothing() and world.ops.published_nothing()


def test_a_missing_service_is_one_line_too(world: World) -> None:
    result = runner.invoke(app, ["deploy", "--commit-sha", NEW])
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "not deploying: give --service and --commit-sha (or DEPLOY_SERVICE, DEPLOY_COMMIT_SHA)"
    ]


def test_values_come_from_the_environment_as_cloud_build_passes_them(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "DEPLOY_SERVICE": world.service,
        "DEPLOY_COMMIT_SHA": NEW,
        "DEPLOY_BUILD_ID": BUILD,
        "DEPLOY_EVENT_TYPE": "sight.ops.migration.succeeded",
        "DEPLOY_EVENT_ID": str(uuid.uuid4()),
        "DEPLOY_IMAGE_REPO": REPO,
        "DEPLOY_TAG": "canary",
    }.items():
        monkeypatch.setenv(name, value)

    result = runner.invoke(app, ["deploy"])

    assert result.exit_code == 0, result.output
    promoted = world.events(4)[-1].data_as(ReleaseResult)
    assert promoted.image == world.image
    statuses = world.cloudrun.get_service(PROJECT, REGION, world.service)["trafficStatuses"]
    assert any(t.get("tag") == "canary" and t["revision"] == promoted.revision for t in statuses)
