"""`sightops deploy` through the CLI, against the Cloud Run stand-in serving revisions from
the Sight API stand-in, and the real Pub/Sub emulator (docs/deploy.md, "sightops deploy")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.deploy import PHASES, release_event_id, revision_name
from shared.events import (
    CanaryRequest,
    EventType,
    OpsEvent,
    OpsPayload,
    ReleaseResult,
    SmokeResult,
    parse_ops_message,
)
from shared.release import release_id, release_trace_id
from shared.settings import get_settings
from shared.trace import read_spans
from sightops.cli import app
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from standins import RunningServer, serve
from standins import sightapi as sightapi_standin
from standins.cloudrun import CloudRunState, create_app
from tests.helpers import PROJECT, ROOT

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
        #: Pub/Sub attributes of each message seen, by event id
        self.attributes: dict[str, dict[str, str]] = {}
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
                self.attributes[self.seen[-1].id] = dict(msg.attributes)

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

    def revisions(self) -> list[str]:
        listed = self.cloudrun.list_revisions(PROJECT, REGION, self.service)["revisions"]
        return sorted(r["name"].rsplit("/", 1)[-1] for r in listed)

    def attributes(self, event: OpsEvent[OpsPayload]) -> dict[str, str]:
        """The Pub/Sub attributes ``event`` was published with."""
        return {**self.smoke.attributes, **self.ops.attributes}[event.id]

    def forget(self) -> None:
        """Read from here on: what was published so far is not looked at again."""
        self.smoke.seen.clear()
        self.ops.seen.clear()


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


def test_cloud_run_unavailable_through_every_retry_is_an_outage_line_after_release_failed(
    world: World,
) -> None:
    """An outage is not a failed release of ours: the root group's line names the service
    and the fix (sightops/_errors.py), exit 3; release.failed still tells the pipeline."""
    world.cloudrun.inject_fault(503, count=10, method="PATCH")

    result = world.deploy()

    assert result.exit_code == 3
    [line] = result.stderr.splitlines()
    assert line.startswith("error: the Cloud Run Admin API is unreachable at "), line
    assert "(ServiceUnavailable)" in line and "make dev" in line
    assert "Traceback" not in result.output
    assert world.serving() == {world.old_revision: 100}
    [failed] = world.events(1)
    assert failed.type is EventType.RELEASE_FAILED
    release = failed.data_as(ReleaseResult)
    assert release.revision is None
    assert (release.reason or "").startswith("deploy of ")
    assert "Cloud Run unavailable: ServiceUnavailable" in (release.reason or "")


def test_pubsub_unreachable_is_said_before_cloud_run_is_touched(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A release that cannot be heard is not started: the emulator's absence is the
    root group's line, and Cloud Run saw no update."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("PUBSUB_EMULATOR_HOST", f"127.0.0.1:{closed}")
    get_settings.cache_clear()

    result = world.deploy()

    assert result.exit_code == 3
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: Pub/Sub is unreachable at 127.0.0.1:{closed}"), line
    assert "make dev" in line
    assert world.patches() == 0


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


# ---- a release is deployed once (docs/deploy.md, "Duplicates") -------------------------


def test_a_duplicate_deploy_of_a_promoted_release_is_a_no_op(world: World) -> None:
    """Cloud Build's Pub/Sub trigger delivers at least once: the same migration.succeeded
    again finds the release promoted, touches nothing and publishes nothing."""
    assert world.deploy().exit_code == 0
    promoted = world.events(4)[-1].data_as(ReleaseResult)
    revisions, patches = world.revisions(), world.patches()
    world.forget()

    again = world.deploy()

    assert again.exit_code == 0, again.output
    assert again.stdout.splitlines() == [
        f"release {promoted.release_id}: already promoted: {promoted.revision} serves 100 %; "
        "nothing to do"
    ]
    assert world.patches() == patches
    assert world.revisions() == revisions
    assert world.serving() == {promoted.revision: 100}
    assert world.smoke.published_nothing() and world.ops.published_nothing()


def test_two_concurrent_deploys_of_one_release_make_one_revision_and_no_release_failed(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The second run (a subprocess, as a second Cloud Build) creates the release's
    revision while the first one's UpdateService is on its way: Cloud Run refuses the
    first (409) and the first finds the revision another run made. It ends at once, exit
    0, and publishes nothing; the second drives the release to promoted."""
    monkeypatch.setenv("ROLLBACK__API_TIMEOUT_S", "30")  # the first PATCH waits for the second
    get_settings.cache_clear()
    event_id = str(uuid.uuid4())
    revision = revision_name(world.service, NEW, event_id)
    args = ["deploy", "--service", world.service, "--commit-sha", NEW, "--event-id", event_id]
    second: list[subprocess.Popen[str]] = []

    def another_run_creates_the_revision_first() -> None:
        second.append(
            subprocess.Popen(
                [sys.executable, "-m", "sightops.cli", *args],
                cwd=ROOT,
                env=dict(os.environ),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
        deadline = time.monotonic() + 30
        while revision not in world.revisions() and time.monotonic() < deadline:
            time.sleep(0.05)

    world.cloudrun.interleave(another_run_creates_the_revision_first, method="PATCH")

    first = runner.invoke(app, args)

    out, err = second[0].communicate(timeout=60)
    assert second[0].returncode == 0, err
    assert f"promoted: {revision} serves 100 %" in out
    assert first.exit_code == 0, first.output
    assert f"{revision} already exists: another run of this release deployed it" in first.stdout
    assert world.revisions() == sorted([world.old_revision, revision])
    assert world.serving() == {revision: 100}
    assert [e.type for e in world.events(4)] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_PASSED,
        EventType.SMOKE_PASSED,
        EventType.RELEASE_PROMOTED,
    ]
    world.forget()
    assert world.smoke.published_nothing() and world.ops.published_nothing()


def test_a_promotion_refused_because_the_release_was_promoted_meanwhile_is_success(
    world: World,
) -> None:
    """Another run of the same release moves traffic to the same revision just before our
    promotion's UpdateService: Cloud Run answers 409, and that is not a failed release."""
    revision = revision_name(world.service, NEW)
    pinned = {"type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION", "revision": revision}

    def the_other_run_promotes() -> None:
        world.cloudrun.set_traffic(
            PROJECT,
            REGION,
            world.service,
            [{**pinned, "percent": 100}, {**pinned, "percent": 0, "tag": "candidate"}],
        )

    world.cloudrun.interleave(the_other_run_promotes, method="PATCH", skip=1)

    result = world.deploy()

    assert result.exit_code == 0, result.output
    assert world.serving() == {revision: 100}
    events = world.events(4)
    assert EventType.RELEASE_FAILED not in [e.type for e in events]
    assert events[-1].type is EventType.RELEASE_PROMOTED


def test_release_events_have_ids_of_the_release_so_a_duplicate_run_is_taken_once(
    world: World,
) -> None:
    """What the receipts and the ledger deduplicate on: uuid5 of the release, the event
    type and the revision, the same in every run of the release."""
    event_id = str(uuid.uuid4())

    assert world.deploy("--event-id", event_id).exit_code == 0

    release = release_id(world.service, NEW)
    revision = revision_name(world.service, NEW, event_id)
    ids = {e.type: e.id for e in world.events(4) if e.type.value.startswith("sight.ops.release.")}
    assert ids == {
        kind: release_event_id(release, kind, revision)
        for kind in (EventType.RELEASE_DEPLOYED, EventType.RELEASE_PROMOTED)
    }


# ---- one trace per release (docs/release.md) --------------------------------------------


@pytest.fixture
def spans(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where this test's spans go (the local exporter's file)."""
    path = tmp_path / "spans.jsonl"
    monkeypatch.setenv("TRACE__EXPORTER", "local")
    monkeypatch.setenv("TRACE__LOCAL_FILE", str(path))
    get_settings.cache_clear()
    return path


def test_the_deploy_continues_the_events_trace_and_everything_it_publishes_carries_it(
    world: World, spans: Path
) -> None:
    trace_id = release_trace_id(release_id(world.service, NEW))
    migrate_span = "a1b2c3d4e5f60718"

    result = world.deploy("--traceparent", f"00-{trace_id}-{migrate_span}-01")

    assert result.exit_code == 0, result.output
    recorded = read_spans(spans, trace_id)
    [run] = [s for s in recorded if s.name == "sightops deploy"]
    assert run.parent_span_id == migrate_span
    assert run.attributes["release_id"] == release_id(world.service, NEW)
    assert run.attributes["outcome"] == "promoted"
    phases = {s.name: s.span_id for s in recorded if s.parent_span_id == run.span_id}
    assert set(phases) == set(PHASES)
    events = world.events(4)
    deployed, tag_smoke, service_smoke, promoted = events
    assert {world.attributes(e)["traceparent"].split("-")[1] for e in events} == {trace_id}
    published_in = [world.attributes(e)["traceparent"].split("-")[2] for e in (deployed, promoted)]
    assert published_in == [run.span_id, run.span_id]
    assert world.attributes(tag_smoke)["traceparent"].split("-")[2] == phases["smoke_tag"]
    assert world.attributes(service_smoke)["traceparent"].split("-")[2] == phases["smoke_service"]


@pytest.mark.parametrize("given", [None, "00-not-a-traceparent-01"], ids=["none", "malformed"])
def test_without_a_valid_traceparent_the_deploy_is_a_root_span_in_the_releases_trace(
    world: World, spans: Path, given: str | None
) -> None:
    trace_id = release_trace_id(release_id(world.service, NEW))

    result = world.deploy(*(["--traceparent", given] if given else []))

    assert result.exit_code == 0, result.output
    [run] = [s for s in read_spans(spans, trace_id) if s.name == "sightops deploy"]
    assert run.parent_span_id is None
    assert {world.attributes(e)["traceparent"].split("-")[1] for e in world.events(4)} == {trace_id}


# ---- hand-off to the canary (docs/deploy.md, "Canary"; docs/canary.md) -----------------


def opt_in(monkeypatch: pytest.MonkeyPatch, *services: str) -> None:
    """``canary.services`` as the environment gives it."""
    plan = {"steps": [5, 25, 50, 100], "max_step_s": 1800}
    monkeypatch.setenv("CANARY__SERVICES", json.dumps(dict.fromkeys(services, plan)))
    get_settings.cache_clear()


def test_a_canary_service_is_handed_to_the_canary_after_its_tag_smoke_instead_of_promoted(
    world: World, spans: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_in(monkeypatch, world.service)
    trace_id = release_trace_id(release_id(world.service, NEW))

    result = world.deploy("--traceparent", f"00-{trace_id}-a1b2c3d4e5f60718-01")

    assert result.exit_code == 0, result.output
    deployed, tag_smoke, requested = world.events(3)
    assert [e.type for e in (deployed, tag_smoke, requested)] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_PASSED,
        EventType.CANARY_REQUESTED,
    ]
    revision = deployed.data_as(ReleaseResult).revision
    assert world.serving() == {world.old_revision: 100}, "the canary moves traffic, not deploy"
    request = requested.data_as(CanaryRequest)
    assert (request.revision, request.stable_revision) == (revision, world.old_revision)
    assert (request.project, request.region, request.build_id) == (PROJECT, REGION, BUILD)
    assert request.tag_url == tag_smoke.data_as(SmokeResult).url
    assert request.release_id == release_id(world.service, NEW) == requested.release_id
    assert request.commit_sha == NEW
    # published like the release events: the release's attributes, in the run's span
    assert world.attributes(requested)["release_id"] == request.release_id
    assert (
        world.attributes(requested)["traceparent"].split("-")[:3]
        == world.attributes(deployed)["traceparent"].split("-")[:3]
    )
    [run] = [s for s in read_spans(spans, trace_id) if s.name == "sightops deploy"]
    assert run.attributes["outcome"] == "canary"
    last = result.stdout.splitlines()[-1]
    assert f"release {request.release_id} handed to the canary" in last
    assert f"sightops canary status {world.service}" in last
    assert not result.stderr


def test_a_second_run_of_a_release_the_canary_drives_publishes_nothing(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_in(monkeypatch, world.service)
    assert world.deploy().exit_code == 0
    world.events(3)
    revisions, patches = world.revisions(), world.patches()
    world.forget()

    again = world.deploy()

    assert again.exit_code == 0, again.output
    assert "nothing to do" in again.stdout
    assert (world.revisions(), world.patches()) == (revisions, patches)
    assert world.smoke.published_nothing() and world.ops.published_nothing()


def test_a_canary_service_whose_tag_smoke_fails_is_not_handed_to_the_canary(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_in(monkeypatch, world.service)
    world.sight.set_image(world.image, failing_checks=["health"])

    result = world.deploy()

    assert result.exit_code == 1
    assert [e.type for e in world.events(3)] == [
        EventType.RELEASE_DEPLOYED,
        EventType.SMOKE_FAILED,
        EventType.RELEASE_FAILED,
    ]
    assert world.serving() == {world.old_revision: 100}


def test_a_service_not_opted_in_is_promoted_as_before(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    opt_in(monkeypatch, "some-other-service")

    result = world.deploy()

    assert result.exit_code == 0, result.output
    assert world.events(4)[-1].type is EventType.RELEASE_PROMOTED
    assert len(world.serving()) == 1 and world.old_revision not in world.serving()
