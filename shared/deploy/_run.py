"""``run_deploy``: one release of one service, from image to promoted (docs/deploy.md).

    deploy (no traffic, tagged) -> release.deployed -> smoke the tag URL -> promote
    (100 % REVISION, tags kept) -> smoke the service URL -> release.promoted

A service opted in to the canary (``canary.services``, docs/canary.md) is not promoted:
once its tag URL passed the smoke, the run publishes ``canary.requested`` and ends
``canary``; the canary function steps the traffic and ends the release itself.

Any failure ends the release with ``release.failed`` (its ``reason``, the phases so far)
and nothing more is done. An outage (Cloud Run or Pub/Sub unreachable after the retries)
also announces ``release.failed`` if it can, then propagates: the CLI's one error line
names the service and the fix (sightops/_errors.py).

Before the promotion nothing was promoted: users never saw the revision, and rollback,
told by the tag URL's ``smoke.failed``, only marks it bad. A failed smoke of the service
URL after the promotion is a failure of a revision serving users: its ``smoke.failed`` is
what makes rollback move traffic back, and the release ends ``failed`` (not
``promoted``): ``promoted`` means serving *and* verified.

A release is deployed once (docs/deploy.md, "Duplicates"): Cloud Build's Pub/Sub trigger
delivers ``migration.succeeded`` at least once, so the revision name and the release
events' ids are derived from the release, and a run that finds the release promoted, or
its revision made by another run, ends ``duplicate`` (exit 0) and publishes nothing.

The run is one span of the release's trace (docs/release.md), continuing the
``migration.succeeded`` event's ``traceparent``, with a child span per phase: everything
it publishes carries ``traceparent``.

Collaborators are passed in (:class:`DeployTools`) so tests and ``sightops simulate``
run the same code in-process against the stand-ins and the emulator.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Collection, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext, suppress
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.clock import Clock, utcnow
from shared.deploy._cloudrun import RevisionExists
from shared.errors import SightOpsError, TransientError
from shared.events import CanaryRequest, EventType, OpsEvent, OpsPayload, ReleaseResult
from shared.trace import TraceContext, set_outcome

if TYPE_CHECKING:
    import httpx

    from shared.deploy._cloudrun import CloudRunDeployer, Deployed
    from shared.deploy._request import DeployRequest
    from shared.smoke import SmokeOptions
    from shared.trace import Tracing

SOURCE = "sightops-deploy"
#: Namespace of the release events' ids (uuid5 of release, type and revision).
_EVENT_IDS = uuid.UUID("0c7b3e52-9a14-4f6d-8e21-5d3a7c9b1f40")
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"

#: Phase names, in run order: ``ReleaseResult.phases`` keys (milliseconds).
PHASES = ("deploy", "smoke_tag", "promote", "smoke_service")


class PublishFailed(SightOpsError):
    """An event of the release could not be published; the deploy stopped there."""


@dataclass
class DeployTools:
    """What ``run_deploy`` works with; ``publish(topic, event) -> message id``."""

    cloud_run: CloudRunDeployer
    publish: Callable[[str, OpsEvent[Any]], str]
    smoke_options: SmokeOptions
    smoke_topic: str = "smoke-tests"
    events_topic: str = "ops-events"
    clock: Clock = utcnow
    timer: Callable[[], float] = time.perf_counter
    http: httpx.Client | None = None
    sleep: Callable[[float], None] = time.sleep
    #: spans of the release's trace (``Deps.tracing``); None: no spans, no traceparent
    tracing: Tracing | None = None
    #: called with one human line per step (the CLI prints them)
    progress: Callable[[str], None] = lambda _line: None
    #: services opted in to the canary (``canary.services``): handed to the canary
    #: function after the tag smoke instead of promoted (docs/canary.md)
    canary_services: Collection[str] = frozenset()


@dataclass
class ReleaseOutcome:
    """How the release ended, and every event it published, in order.

    ``duplicate``: another run of the release promoted it or is driving it; this run
    published nothing (``reason`` says which). ``canary``: the tagged revision passed
    its smoke and the canary function now drives the release (``canary.requested``)."""

    status: Literal["promoted", "failed", "duplicate", "canary"]
    result: ReleaseResult
    events: list[OpsEvent[OpsPayload]]

    @property
    def reason(self) -> str | None:
        return self.result.reason

    @property
    def exit_code(self) -> int:
        return 1 if self.status == "failed" else 0


def revision_name(service: str, commit_sha: str, event_id: str | None = None) -> str:
    """``<service>-<8 hex of the commit>-<3 chars>``: which commit a revision runs is
    visible in every list, and the name is the release's (the last 3 characters hash
    the commit and the event that asked for it): a duplicated event names the same
    revision, which Cloud Run creates once. At most 62 characters (a service name is at
    most 49), lowercase: a valid revision name (``<service>-<suffix>``, at most 63)."""
    digest = int(hashlib.sha256(f"{commit_sha}:{event_id or ''}".encode()).hexdigest(), 16)
    suffix = ""
    for _ in range(3):
        digest, digit = divmod(digest, 36)
        suffix += _BASE36[digit]
    return f"{service}-{commit_sha[:8]}-{suffix}"


def release_event_id(release: str, kind: EventType, revision: str) -> str:
    """The id of a release event: the same for every run of the release, so the
    receipts, the ledger and Slack take a duplicate run's event once."""
    return str(uuid.uuid5(_EVENT_IDS, f"{release}:{kind.value}:{revision}"))


def run_deploy(request: DeployRequest, tools: DeployTools) -> ReleaseOutcome:
    """Drive one release; never raises for a failed step (the outcome says it), only
    :class:`PublishFailed` when the release's own events cannot be published and
    :class:`TransientError` when Cloud Run stays unreachable."""
    from shared.release import release_id

    request.validate()
    run = _Run(request, tools, release_id(request.service, request.commit_sha))
    if tools.tracing is None:
        return run.go()
    attributes = {
        "service": request.service,
        "revision": run.revision,
        "build_id": request.build_id,
        "event_id": request.event_id,
    }
    with tools.tracing.span(
        "sightops deploy",
        traceparent=request.traceparent,
        release=run.release,
        attributes=attributes,
    ) as trace:
        run.trace = trace
        outcome = run.go()
        set_outcome(outcome.status)
        return outcome


class _Run:
    def __init__(self, request: DeployRequest, tools: DeployTools, release: str) -> None:
        self.request = request
        self.tools = tools
        self.release = release
        self.revision = revision_name(request.service, request.commit_sha, request.event_id)
        self.started: datetime = tools.clock()
        self.phases: dict[str, float] = {}
        self.events: list[OpsEvent[OpsPayload]] = []
        self.deployed: Deployed | None = None
        self.trace: TraceContext | None = None

    def go(self) -> ReleaseOutcome:
        req, cloud, revision = self.request, self.tools.cloud_run, self.revision
        try:
            serving = cloud.promoted(req.project, req.region, req.service, revision, req.image)
            if serving is not None:
                return self._duplicate(serving, f"already promoted: {serving} serves 100 %")
            self.tools.progress(f"deploying {req.image} as {revision} (no traffic, tag {req.tag})")
            with self._phase("deploy"):
                self.deployed = cloud.deploy_no_traffic(
                    req.project, req.region, req.service, req.image, revision, req.tag
                )
        except RevisionExists as exc:
            return self._duplicate(revision, str(exc))
        except TransientError as exc:
            self._announce_outage(f"deploy of {revision} stopped: {exc}")
            raise
        except SightOpsError as exc:
            return self._failed(f"deploy of {revision} failed: {exc}")
        deployed = self.deployed
        self._publish(
            self.tools.events_topic, self._release(EventType.RELEASE_DEPLOYED, url=deployed.tag_url)
        )
        self.tools.progress(f"{deployed.revision} serves no traffic at {deployed.tag_url}")

        with self._phase("smoke_tag"):
            tag_smoke = self._smoke(deployed.tag_url)
        if tag_smoke is not None:
            return self._failed(f"smoke on the tag URL failed ({tag_smoke}); nothing was promoted")
        if req.service in self.tools.canary_services:
            return self._hand_to_canary(deployed)

        try:
            with self._phase("promote"):
                cloud.promote(req.project, req.region, req.service, deployed.revision)
        except TransientError as exc:
            self._announce_outage(f"promotion of {deployed.revision} stopped: {exc}")
            raise
        except SightOpsError as exc:
            return self._failed(f"promotion of {deployed.revision} failed: {exc}")
        self.tools.progress(f"{deployed.revision} serves 100 % of {req.service}")

        with self._phase("smoke_service"):
            service_smoke = self._smoke(deployed.service_url)
        if service_smoke is not None:
            return self._failed(
                f"smoke on the service URL failed after promotion ({service_smoke}); "
                "rollback acts on its smoke.failed"
            )
        event = self._release(EventType.RELEASE_PROMOTED, url=deployed.service_url)
        self._publish(self.tools.events_topic, event)
        return ReleaseOutcome("promoted", event.data_as(ReleaseResult), self.events)

    # ------------------------------------------------------------------ steps

    def _smoke(self, url: str) -> str | None:
        """Run the smoke checks at ``url`` and publish the verdict; the failed checks, or
        None when every check passed."""
        from shared.smoke import smoke

        assert self.deployed is not None
        event = smoke(
            url,
            service=self.request.service,
            region=self.request.region,
            revision=self.deployed.revision,
            options=self.tools.smoke_options,
            build_id=self.request.build_id,
            commit_sha=self.request.commit_sha,
            clock=self.tools.clock,
            client=self.tools.http,
            sleep=self.tools.sleep,
        )
        self._publish(self.tools.smoke_topic, event)
        failed = event.data.failed_checks
        set_outcome("failed" if failed else "passed")
        self.tools.progress(f"{event.type.value} at {url}")
        if not failed:
            return None
        return ", ".join(f"{c.name}: {c.error or 'failed'}" for c in failed)

    def _hand_to_canary(self, deployed: Deployed) -> ReleaseOutcome:
        """``canary.requested`` instead of the promotion. ``stable_revision`` is what
        serves 100 % now (None when traffic is split: the canary then stops, it needs one
        revision to compare against)."""
        req = self.request
        try:
            state = self.tools.cloud_run.traffic.read(req.project, req.region, req.service)
        except TransientError as exc:
            self._announce_outage(f"hand-off of {deployed.revision} to the canary stopped: {exc}")
            raise
        except SightOpsError as exc:
            return self._failed(f"hand-off of {deployed.revision} to the canary failed: {exc}")
        request = CanaryRequest(
            service=req.service,
            region=req.region,
            project=req.project,
            release_id=self.release,
            revision=deployed.revision,
            stable_revision=state.sole_server(),
            tag_url=deployed.tag_url,
            commit_sha=req.commit_sha,
            build_id=req.build_id,
            requested_at=self.tools.clock(),
        )
        event = self._event(EventType.CANARY_REQUESTED, request)
        self._publish(self.tools.events_topic, event)
        self.tools.progress(f"{deployed.revision} handed to the canary ({event.type.value})")
        reason = f"{deployed.revision} passed its tag smoke; the canary function steps traffic"
        return ReleaseOutcome(
            "canary", self._result(url=deployed.tag_url, reason=reason), self.events
        )

    def _failed(self, reason: str) -> ReleaseOutcome:
        event = self._release(EventType.RELEASE_FAILED, reason=reason)
        self._publish(self.tools.events_topic, event)
        return ReleaseOutcome("failed", event.data_as(ReleaseResult), self.events)

    def _announce_outage(self, reason: str) -> None:
        """``release.failed`` for a release an outage stopped, if Pub/Sub takes it; the
        outage itself is what the caller reports."""
        with suppress(PublishFailed):
            event = self._release(EventType.RELEASE_FAILED, reason=reason)
            self._publish(self.tools.events_topic, event)

    def _duplicate(self, revision: str, reason: str) -> ReleaseOutcome:
        """Another run of the release got here first: publish nothing, say why."""
        result = self._result(revision=revision, reason=reason)
        return ReleaseOutcome("duplicate", result, self.events)

    def _release(
        self, kind: EventType, *, url: str | None = None, reason: str | None = None
    ) -> OpsEvent[OpsPayload]:
        return self._event(kind, self._result(url=url, reason=reason))

    def _event(self, kind: EventType, payload: OpsPayload) -> OpsEvent[OpsPayload]:
        """An event of the release, its id the release's (a duplicate run's is the same)."""
        event: OpsEvent[OpsPayload] = OpsEvent.new(
            kind, payload, source=SOURCE, clock=self.tools.clock
        )
        return event.model_copy(update={"id": release_event_id(self.release, kind, self.revision)})

    def _result(
        self, *, url: str | None = None, reason: str | None = None, revision: str | None = None
    ) -> ReleaseResult:
        req, deployed = self.request, self.deployed
        return ReleaseResult(
            service=req.service,
            region=req.region,
            commit_sha=req.commit_sha,
            release_id=self.release,
            build_id=req.build_id,
            revision=deployed.revision if deployed else revision,
            previous_revision=deployed.previous_revision if deployed else None,
            image=(deployed.image if deployed and deployed.image else req.image),
            url=url,
            reason=reason[:1000] if reason else None,
            phases=dict(self.phases),
            started_at=self.started,
            finished_at=self.tools.clock(),
        )

    def _publish(self, topic: str, event: OpsEvent[Any]) -> None:
        try:
            self.tools.publish(topic, event)
        except Exception as exc:  # the release cannot go on unheard
            what = f"{event.type.value} {event.id}"
            raise PublishFailed(
                f"release {self.release} stopped: could not publish {what} to {topic}: {_why(exc)}"
            ) from exc
        self.events.append(event)

    @contextmanager
    def _phase(self, name: str) -> Iterator[None]:
        """One phase: a child span of the run's, timed into ``phases`` (milliseconds),
        also when it fails."""
        t0 = self.tools.timer()
        try:
            with self._span(name):
                yield
        finally:
            self.phases[name] = round((self.tools.timer() - t0) * 1000, 1)

    def _span(self, name: str) -> AbstractContextManager[Any]:
        if self.tools.tracing is None or self.trace is None:
            return nullcontext()
        # A child of the run's span that names the release, so what it publishes
        # carries traceparent (shared.trace.outgoing_attributes).
        return self.tools.tracing.span(
            name,
            traceparent=self.trace.traceparent,
            tracestate=self.trace.tracestate,
            release=self.release,
        )


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SightOpsError) else type(exc).__name__
