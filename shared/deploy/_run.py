"""``run_deploy``: one release of one service, from image to promoted (docs/deploy.md).

    deploy (no traffic, tagged) -> release.deployed -> smoke the tag URL -> promote
    (100 % REVISION, tags kept) -> smoke the service URL -> release.promoted

Any failure ends the release with ``release.failed`` (its ``reason``, the phases so far)
and nothing more is done. Before the promotion nothing was promoted: users never saw the
revision, and rollback, told by the tag URL's ``smoke.failed``, only marks it bad. A
failed smoke of the service URL after the promotion is a failure of a revision serving
users: its ``smoke.failed`` is what makes rollback move traffic back, and the release
ends ``failed`` (not ``promoted``): ``promoted`` means serving *and* verified.

Collaborators are passed in (:class:`DeployTools`) so tests and ``sightops simulate``
run the same code in-process against the stand-ins and the emulator.
"""

from __future__ import annotations

import random
import string
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from shared.clock import Clock, utcnow
from shared.errors import SightOpsError
from shared.events import EventType, OpsEvent, OpsPayload, ReleaseResult

if TYPE_CHECKING:
    import httpx

    from shared.deploy._cloudrun import CloudRunDeployer, Deployed
    from shared.deploy._request import DeployRequest
    from shared.smoke import SmokeOptions

SOURCE = "sightops-deploy"

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
    suffix: Callable[[], str] = field(
        default=lambda: "".join(random.choices(string.ascii_lowercase + string.digits, k=3))
    )
    #: called with one human line per step (the CLI prints them)
    progress: Callable[[str], None] = lambda _line: None


@dataclass
class ReleaseOutcome:
    """How the release ended, and every event it published, in order."""

    status: Literal["promoted", "failed"]
    result: ReleaseResult
    events: list[OpsEvent[OpsPayload]]

    @property
    def reason(self) -> str | None:
        return self.result.reason

    @property
    def exit_code(self) -> int:
        return 0 if self.status == "promoted" else 1


def revision_name(service: str, commit_sha: str, suffix: str) -> str:
    """``<service>-<8 hex of the commit>-<suffix>``: which commit a revision runs is
    visible in every list, and a new deploy of the same commit gets a new name."""
    return f"{service}-{commit_sha[:8]}-{suffix}"


def run_deploy(request: DeployRequest, tools: DeployTools) -> ReleaseOutcome:
    """Drive one release; never raises for a failed step (the outcome says it), only
    :class:`PublishFailed` when the release's own events cannot be published."""
    from shared.release import release_id

    request.validate()
    run = _Run(request, tools, release_id(request.service, request.commit_sha))
    return run.go()


class _Run:
    def __init__(self, request: DeployRequest, tools: DeployTools, release: str) -> None:
        self.request = request
        self.tools = tools
        self.release = release
        self.started: datetime = tools.clock()
        self.phases: dict[str, float] = {}
        self.events: list[OpsEvent[OpsPayload]] = []
        self.deployed: Deployed | None = None

    def go(self) -> ReleaseOutcome:
        from shared.errors import TransientError

        req, cloud = self.request, self.tools.cloud_run
        revision = revision_name(req.service, req.commit_sha, self.tools.suffix())
        self.tools.progress(f"deploying {req.image} as {revision} (no traffic, tag {req.tag})")
        try:
            with self._phase("deploy"):
                self.deployed = cloud.deploy_no_traffic(
                    req.project, req.region, req.service, req.image, revision, req.tag
                )
        except (SightOpsError, TransientError) as exc:
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

        try:
            with self._phase("promote"):
                cloud.promote(req.project, req.region, req.service, deployed.revision)
        except (SightOpsError, TransientError) as exc:
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
        self.tools.progress(f"{event.type.value} at {url}")
        if not failed:
            return None
        return ", ".join(f"{c.name}: {c.error or 'failed'}" for c in failed)

    def _failed(self, reason: str) -> ReleaseOutcome:
        event = self._release(EventType.RELEASE_FAILED, reason=reason)
        self._publish(self.tools.events_topic, event)
        return ReleaseOutcome("failed", event.data_as(ReleaseResult), self.events)

    def _release(
        self, kind: EventType, *, url: str | None = None, reason: str | None = None
    ) -> OpsEvent[OpsPayload]:
        req, deployed = self.request, self.deployed
        result = ReleaseResult(
            service=req.service,
            region=req.region,
            commit_sha=req.commit_sha,
            release_id=self.release,
            build_id=req.build_id,
            revision=deployed.revision if deployed else None,
            previous_revision=deployed.previous_revision if deployed else None,
            image=(deployed.image if deployed and deployed.image else req.image),
            url=url,
            reason=reason[:1000] if reason else None,
            phases=dict(self.phases),
            started_at=self.started,
            finished_at=self.tools.clock(),
        )
        event: OpsEvent[OpsPayload] = OpsEvent.new(
            kind, result, source=SOURCE, clock=self.tools.clock
        )
        return event

    def _publish(self, topic: str, event: OpsEvent[Any]) -> None:
        try:
            self.tools.publish(topic, event)
        except Exception as exc:  # the release cannot go on unheard
            what = f"{event.type.value} {event.id}"
            raise PublishFailed(f"could not publish {what} to {topic}: {_why(exc)}") from exc
        self.events.append(event)

    def _phase(self, name: str) -> _Phase:
        return _Phase(self, name)


class _Phase:
    """Times one phase into ``phases`` (milliseconds), also when it fails."""

    def __init__(self, run: _Run, name: str) -> None:
        self.run, self.name = run, name
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = self.run.tools.timer()

    def __exit__(self, *_exc: object) -> None:
        elapsed = (self.run.tools.timer() - self.t0) * 1000
        self.run.phases[self.name] = round(elapsed, 1)


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, SightOpsError) else type(exc).__name__
