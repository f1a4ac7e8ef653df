"""The deploy's two Cloud Run calls (docs/deploy.md, "sightops deploy").

1. :meth:`CloudRunDeployer.deploy_no_traffic`: one UpdateService whose template names the
   new image and a revision name we choose, and whose traffic keeps every user exactly
   where they are (a ``LATEST`` entry is first pinned to the revision it serves, as
   ``gcloud run deploy --no-traffic`` does) plus the tag at 0 % on the new revision. A
   409 (the service changed between our read and our write) is retried after a fresh
   read, a 503/429 that says the request was not taken after a short backoff; an
   uncertain outcome is settled by reading the service back (did our revision appear?).
2. :meth:`CloudRunDeployer.promote`: rollback's own traffic pin (``CloudRun.pin_traffic``,
   docs/rollback.md): 100 % REVISION to the new revision, tags kept at 0 %, verified.

A release is deployed at most once (docs/deploy.md, "Duplicates"): its revision name is
derived from it, :meth:`CloudRunDeployer.promoted` finds what an earlier run of it left, and
a revision that another run created while this one was asking is :class:`RevisionExists`,
never a failure.

The plumbing (clients, error classes, operation wait) is ``shared.cloudrun``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from shared.cloudrun import (
    CloudRunError,
    TrafficConflict,
    UpdateOutcomeUnknown,
    classified,
    create_clients,
    operation_polling,
    read_retry,
    send_update,
    service_name,
    short,
    wait_operation,
)
from shared.errors import SightOpsError, TransientError
from shared.rollback._cloudrun import CloudRun

if TYPE_CHECKING:
    from google.cloud import run_v2

    from shared.settings import Settings

_LATEST, _REVISION = 1, 2  # TrafficTargetAllocationType


class RevisionNotReady(CloudRunError):
    """The new revision was created but did not become Ready (it cannot serve)."""


class RevisionExists(SightOpsError):
    """Another run of the same release created the revision first (a duplicated
    ``migration.succeeded``): that run drives the release, this one has nothing to do."""

    def __init__(self, revision: str) -> None:
        super().__init__(f"{revision} already exists: another run of this release deployed it")
        self.revision = revision


@dataclass(frozen=True)
class Deployed:
    """A revision that exists and serves no traffic, and where to reach it."""

    revision: str
    image: str
    tag_url: str
    service_url: str
    previous_revision: str | None


class CloudRunDeployer:
    """Creates tagged no-traffic revisions and promotes them; thread-safe."""

    def __init__(
        self,
        services: run_v2.ServicesClient,
        revisions: run_v2.RevisionsClient,
        *,
        api_timeout_s: float = 10.0,
        operation_timeout_s: float = 600.0,
        attempts: int = 3,
        backoff_s: float = 1.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._services = services
        self._revisions = revisions
        self._timeout = api_timeout_s
        self._operation_timeout = operation_timeout_s
        self._attempts = attempts
        self._backoff = backoff_s
        self._sleep = sleep
        self._read_retry = read_retry(api_timeout_s)
        # Creating a revision takes tens of seconds (image pull, start, health check).
        self._polling = operation_polling(operation_timeout_s)
        self.traffic = CloudRun(
            services,
            revisions,
            api_timeout_s=api_timeout_s,
            operation_timeout_s=min(operation_timeout_s, 120.0),
        )

    # ------------------------------------------------------------------ deploy

    def deploy_no_traffic(
        self, project: str, region: str, service: str, image: str, revision: str, tag: str
    ) -> Deployed:
        """Create ``revision`` from ``image`` with no traffic and ``tag`` on it.

        :class:`RevisionExists` when the revision appears without this call having sent
        an update that may have created it: another run of the release (a duplicate, whose
        update Cloud Run refused with 409) got there first."""
        from google.api_core import exceptions as gexc

        name = service_name(project, region, service)
        operation: Any = None
        previous: str | None = None
        maybe_ours = False  # an update of ours may have been applied (outcome unknown)
        for attempt in range(1, self._attempts + 1):
            svc = self._get(name)
            if self._has_revision(name, revision):
                if not maybe_ours:
                    raise RevisionExists(revision)
                break  # an earlier attempt's outcome was unknown, and it was applied
            previous = _primary(svc)
            _no_traffic_template(svc, image, revision, tag)
            try:
                operation = send_update(self._services, name, svc, self._timeout)
                break
            except gexc.Conflict as exc:
                if attempt == self._attempts:
                    raise TrafficConflict(
                        f"UpdateService of {service} answered 409 {attempt} times "
                        f"(the service keeps changing): {exc.message}"
                    ) from exc
            except TransientError:
                if attempt == self._attempts:
                    raise
            except UpdateOutcomeUnknown:
                if attempt == self._attempts:
                    raise
                maybe_ours = True
            self._sleep(self._backoff * 2 ** (attempt - 1))
        if operation is not None:
            wait_operation(operation, self._polling, service, self._operation_timeout)
        return self._deployed(name, revision, tag, previous)

    def promoted(
        self, project: str, region: str, service: str, revision: str, image: str
    ) -> str | None:
        """What an earlier run of the release left: the revision that serves it at 100 %
        (``revision``, or any revision of ``image``); :class:`RevisionExists` when
        ``revision`` exists and does not serve (another run drives it, or it failed);
        None when nothing of it is there yet."""
        state = self.traffic.read(project, region, service)
        serving = state.sole_server()
        info = state.revision(serving) if serving else None
        if serving is not None and (serving == revision or (info and info.image == image)):
            return serving
        if state.revision(revision) is not None:
            raise RevisionExists(revision)
        return None

    def promote(self, project: str, region: str, service: str, revision: str) -> None:
        """Pin 100 % to ``revision`` (REVISION allocation, tags kept) and verify it.

        Refused because the traffic moved under us (409, or changed since the read) is
        success when it moved to ``revision``: another run of the same release promoted
        it first."""
        before = self.traffic.read(project, region, service)
        if before.sole_server() == revision:
            return
        try:
            after = self.traffic.pin_traffic(before, revision)
        except CloudRunError:
            if self.traffic.read(project, region, service).sole_server() == revision:
                return
            raise
        if after.sole_server() != revision:
            raise CloudRunError(
                f"UpdateService of {service} finished but {revision} does not serve 100 % "
                f"({after.serving() or 'nothing reported'})"
            )

    # ------------------------------------------------------------------ reads

    def _get(self, name: str) -> run_v2.Service:
        with classified(name):
            return self._services.get_service(
                name=name, retry=self._read_retry, timeout=self._timeout
            )

    def _has_revision(self, name: str, revision: str) -> bool:
        from google.api_core import exceptions as gexc

        try:
            with classified(name):
                self._revisions.get_revision(
                    name=f"{name}/revisions/{revision}",
                    retry=self._read_retry,
                    timeout=self._timeout,
                )
        except CloudRunError as exc:
            if isinstance(exc.__cause__, gexc.NotFound):
                return False
            raise
        return True

    def _deployed(self, name: str, revision: str, tag: str, previous: str | None) -> Deployed:
        from google.cloud import run_v2

        with classified(name):
            rev = self._revisions.get_revision(
                name=f"{name}/revisions/{revision}", retry=self._read_retry, timeout=self._timeout
            )
        succeeded = run_v2.Condition.State.CONDITION_SUCCEEDED
        ready = next((c for c in rev.conditions if c.type_ == "Ready"), None)
        if ready is None or ready.state != succeeded:
            why = (ready.message if ready is not None else "") or "no Ready condition"
            raise RevisionNotReady(f"revision {revision} is not Ready: {why}")
        svc = self._get(name)
        tagged = [t for t in svc.traffic_statuses if t.tag == tag and t.revision == revision]
        if not tagged or not tagged[0].uri:
            raise CloudRunError(f"tag {tag!r} is not on {revision} (no tag URL reported)")
        return Deployed(
            revision=revision,
            image=rev.containers[0].image if rev.containers else "",
            tag_url=tagged[0].uri,
            service_url=svc.uri,
            previous_revision=previous,
        )


def _primary(svc: run_v2.Service) -> str | None:
    """The revision with the largest share of user traffic now, if any."""
    latest = short(svc.latest_ready_revision)
    shares: dict[str, int] = {}
    for entry in svc.traffic_statuses or svc.traffic:
        revision = entry.revision or (latest if int(entry.type_) == _LATEST else "")
        if revision and entry.percent > 0:
            shares[revision] = shares.get(revision, 0) + int(entry.percent)
    return max(shares, key=lambda r: shares[r]) if shares else None


def _no_traffic_template(svc: run_v2.Service, image: str, revision: str, tag: str) -> None:
    """Mutate ``svc`` into the UpdateService body of a no-traffic tagged deploy."""
    from google.cloud import run_v2

    latest = short(svc.latest_ready_revision)
    traffic: list[run_v2.TrafficTarget] = []
    for entry in svc.traffic:
        kind, pinned = int(entry.type_), entry.revision
        if kind == _LATEST:
            if not latest:
                raise CloudRunError(
                    f"{short(svc.name)} routes to LATEST but has no Ready revision to keep "
                    "serving: deploy it with traffic first"
                )
            kind, pinned = _REVISION, latest
        if entry.tag == tag:
            if entry.percent == 0:
                continue  # the tag moves to the new revision
            entry_tag = ""
        else:
            entry_tag = entry.tag
        traffic.append(
            run_v2.TrafficTarget(type_=kind, revision=pinned, percent=entry.percent, tag=entry_tag)
        )
    if not traffic:  # an empty spec means 100 % LATEST, which would move users
        if not latest:
            raise CloudRunError(f"{short(svc.name)} has no Ready revision to keep serving")
        traffic.append(run_v2.TrafficTarget(type_=_REVISION, revision=latest, percent=100))
    traffic.append(run_v2.TrafficTarget(type_=_REVISION, revision=revision, percent=0, tag=tag))
    svc.traffic = traffic
    svc.template.revision = revision
    if svc.template.containers:
        svc.template.containers[0].image = image
    else:
        svc.template.containers = [run_v2.Container(image=image)]


def create_deployer(
    settings: Settings, *, operation_timeout_s: float = 600.0, backoff_s: float = 1.0
) -> CloudRunDeployer:
    """A deployer on the official clients (the stand-in when ``cloud_run_endpoint`` is set)."""
    services, revisions = create_clients(settings)
    return CloudRunDeployer(
        services,
        revisions,
        api_timeout_s=settings.rollback.api_timeout_s,
        operation_timeout_s=operation_timeout_s,
        backoff_s=backoff_s,
    )
