"""Cloud Run Admin API v2 through google-cloud-run: read a service, move its traffic
(rollback's 100 % pin, the canary's split).

The update (docs/rollback.md, "The traffic update"): read the service (and so its etag) just
before, pin 100 % to the target with every tag kept at 0 %, send UpdateService, wait for
the long-running operation, then read the service again and verify ``traffic_statuses``.

Errors are classified once, in ``shared.cloudrun`` (shared with ``sightops deploy``):
503/429/500/504, timeouts and connection failures are :class:`TransientError` (Pub/Sub
redelivers); 409 (an etag that changed under us) is retried once after a fresh read, then
:class:`TrafficConflict`; everything else is a :class:`CloudRunError` (permanent).
The error classes are re-exported here, so ``shared.rollback.CloudRunError`` is the same
class as ``shared.cloudrun.CloudRunError``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.cloudrun import (
    CloudRunError,
    OperationFailed,
    ServiceNotFound,
    TrafficConflict,
    UpdateOutcomeUnknown,
    classified,
    create_clients,
    describe,
    operation_polling,
    read_retry,
    send_update,
    service_name,
    short,
    traffic_targets,
    wait_operation,
)
from shared.rollback._decide import rollback_traffic, split_traffic
from shared.rollback._model import (
    RevisionInfo,
    ServiceState,
    TrafficItem,
    TrafficType,
    describe_split,
)
from shared.settings import Settings

if TYPE_CHECKING:
    from google.cloud import run_v2

    from shared.runtime import Deps


class TrafficChanged(CloudRunError):
    """Who gets traffic changed after the decision (a human, a deploy): nothing sent."""


def _traffic_type(value: Any) -> TrafficType:
    # TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST == 1, _REVISION == 2
    return "LATEST" if int(value) == 1 else "REVISION"


def _items(entries: Any) -> tuple[TrafficItem, ...]:
    return tuple(
        TrafficItem(_traffic_type(t.type_), t.revision, int(t.percent), t.tag) for t in entries
    )


def _ready(revision: Any) -> bool:
    from google.cloud import run_v2

    succeeded = run_v2.Condition.State.CONDITION_SUCCEEDED
    return any(c.type_ == "Ready" and c.state == succeeded for c in revision.conditions)


class CloudRun:
    """The rollback function's view of Cloud Run; thread-safe (the clients are)."""

    def __init__(
        self,
        services: run_v2.ServicesClient,
        revisions: run_v2.RevisionsClient,
        *,
        api_timeout_s: float = 10.0,
        operation_timeout_s: float = 45.0,
    ) -> None:
        self._services = services
        self._revisions = revisions
        self._timeout = api_timeout_s
        self._operation_timeout = operation_timeout_s
        # Reads retry briefly by themselves; a longer outage goes back to Pub/Sub.
        self._read_retry = read_retry(api_timeout_s)
        # Cloud Run applies a traffic change in seconds: poll from 0.1 s, at most every 2 s.
        self._polling = operation_polling(operation_timeout_s)

    # ------------------------------------------------------------------ reads

    def read(self, project: str, region: str, service: str) -> ServiceState:
        """The service with its traffic and every revision (sorted by create time)."""
        name = service_name(project, region, service)
        with classified(name):
            svc = self._services.get_service(
                name=name, retry=self._read_retry, timeout=self._timeout
            )
            revisions = [
                RevisionInfo(
                    name=short(rev.name),
                    create_time=rev.create_time,
                    ready=_ready(rev),
                    image=rev.containers[0].image if rev.containers else None,
                )
                for rev in self._revisions.list_revisions(
                    parent=name, retry=self._read_retry, timeout=self._timeout
                )
            ]
        revisions.sort(key=lambda r: (r.create_time, r.name))
        return self._state(project, region, service, svc, tuple(revisions))

    def _get(self, name: str) -> run_v2.Service:
        with classified(name):
            return self._services.get_service(
                name=name, retry=self._read_retry, timeout=self._timeout
            )

    @staticmethod
    def _state(
        project: str,
        region: str,
        service: str,
        svc: run_v2.Service,
        revisions: tuple[RevisionInfo, ...],
    ) -> ServiceState:
        return ServiceState(
            project=project,
            region=region,
            service=service,
            revisions=revisions,
            traffic=_items(svc.traffic),
            traffic_statuses=_items(svc.traffic_statuses),
            latest_ready_revision=short(svc.latest_ready_revision) or None,
            etag=svc.etag,
            update_time=_time_or_none(svc.update_time),
        )

    # ------------------------------------------------------------------ update

    def pin_traffic(self, before: ServiceState, target: str) -> ServiceState:
        """Move 100 % to ``target`` (tags kept at 0 %) and return the state read back.

        Re-reads the service right before the PATCH so its etag is current. If who gets
        traffic differs from ``before`` (the state the decision was made on), nothing is
        sent (:class:`TrafficChanged`): a human's or a deploy's change is never
        overwritten. On 409 the same re-read and check, then one retry, then
        :class:`TrafficConflict`. Once the update was sent, any error but a failed
        operation is :class:`UpdateOutcomeUnknown`.
        """
        return self._update_traffic(before, lambda spec: rollback_traffic(spec, target))

    def set_split(self, before: ServiceState, shares: Mapping[str, int]) -> ServiceState:
        """Route ``shares`` (revision -> percent, summing to 100; tags kept at 0 %) and
        return the state read back: the canary's steps (docs/canary.md). The same
        optimistic concurrency as :meth:`pin_traffic`: nothing is sent when who gets
        traffic changed since ``before``; a 409 is retried once after that check."""
        wanted = dict(shares)
        split_traffic((), wanted)  # refuse a bad split before anything is read or sent
        return self._update_traffic(before, lambda spec: split_traffic(spec, wanted))

    def _update_traffic(
        self,
        before: ServiceState,
        new_spec: Callable[[tuple[TrafficItem, ...]], list[TrafficItem]],
    ) -> ServiceState:
        """GetService (etag) -> unchanged routing? -> ``new_spec`` -> UpdateService -> wait
        -> GetService: the one traffic write of rollback and canary."""
        from google.api_core import exceptions as gexc

        name = before.name
        operation: Any = None
        for attempt in (1, 2):
            svc = self._get(name)
            now = self._state(before.project, before.region, before.service, svc, before.revisions)
            if now.routing() != before.routing():
                raise TrafficChanged(
                    f"traffic of {before.service} changed since the decision (was "
                    f"{_fmt_routing(before)}, now {_fmt_routing(now)}); not touching it"
                )
            svc.traffic = traffic_targets(new_spec(_items(svc.traffic)))
            try:
                operation = self._send(name, svc)
            except gexc.Conflict as exc:
                if attempt == 2:
                    raise TrafficConflict(
                        f"UpdateService of {before.service} answered 409 twice "
                        f"(etag changed under us): {exc.message}"
                    ) from exc
                continue
            break
        try:
            self._wait(operation, before.service)
            after = self._get(name)
        except OperationFailed:
            raise
        except Exception as exc:
            raise UpdateOutcomeUnknown(
                f"UpdateService of {before.service} was accepted, then "
                f"{describe(exc)}: outcome unknown"
            ) from exc
        return self._state(before.project, before.region, before.service, after, before.revisions)

    def _send(self, name: str, svc: run_v2.Service) -> Any:
        return send_update(self._services, name, svc, self._timeout)

    def _wait(self, operation: Any, service: str) -> None:
        # The operation itself may fail (e.g. a revision vanished): the state is then
        # uncertain, so a human looks rather than a blind retry.
        wait_operation(operation, self._polling, service, self._operation_timeout)


def _fmt_routing(state: ServiceState) -> str:
    return describe_split(state.routing()[0])


def _time_or_none(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) and value.timestamp() > 0 else None


def create_cloud_run(settings: Settings) -> CloudRun:
    """Official REST clients pointed at ``cloud_run_endpoint`` (the stand-in) when it is
    set, default clients (Application Default Credentials) otherwise."""
    config = settings.rollback
    services, revisions = create_clients(settings)
    return CloudRun(
        services,
        revisions,
        api_timeout_s=config.api_timeout_s,
        operation_timeout_s=config.operation_timeout_s,
    )


__all__ = [
    "CloudRun",
    "CloudRunError",
    "OperationFailed",
    "ServiceNotFound",
    "TrafficChanged",
    "TrafficConflict",
    "UpdateOutcomeUnknown",
    "cloud_run_for",
    "create_cloud_run",
]


def _cloud_run_of(deps: Deps) -> CloudRun:
    return create_cloud_run(deps.settings)


def cloud_run_for(deps: Deps) -> CloudRun:
    """The one CloudRun of these deps, built on first use (clients are costly to create)."""
    return deps.service(_cloud_run_of)
