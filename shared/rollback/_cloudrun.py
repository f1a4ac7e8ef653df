"""Cloud Run Admin API v2 through google-cloud-run: read a service, move its traffic.

The update (docs/rollback.md, "The traffic update"): read the service (and so its etag) just
before, pin 100 % to the target with every tag kept at 0 %, send UpdateService, wait for
the long-running operation, then read the service again and verify ``traffic_statuses``.

Errors are classified here, once: 503/429/500/504, timeouts and connection failures are
:class:`TransientError` (Pub/Sub redelivers); 409 (an etag that changed under us) is
retried once after a fresh read, then :class:`TrafficConflict`; everything else is a
:class:`CloudRunError` (permanent: a retry cannot fix it).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.errors import PermanentError, TransientError
from shared.rollback._decide import rollback_traffic
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


class CloudRunError(PermanentError):
    """Cloud Run refused the request in a way a retry cannot fix."""


class ServiceNotFound(CloudRunError):
    """The service does not exist (wrong name, project or region)."""


class TrafficConflict(CloudRunError):
    """UpdateService answered 409 twice: someone else keeps changing the service."""


class OperationFailed(CloudRunError):
    """The UpdateService operation failed or did not finish in time."""


class TrafficChanged(CloudRunError):
    """Who gets traffic changed after the decision (a human, a deploy): nothing sent."""


class UpdateOutcomeUnknown(CloudRunError):
    """UpdateService was sent and then something failed: traffic may or may not have
    moved. Never retried blindly (a redelivery would find "serves no traffic" and the
    move would go unrecorded); a human looks."""


def _short(name: str) -> str:
    return name.rsplit("/", 1)[-1] if name else ""


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
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry
        from google.api_core.future import polling

        self._services = services
        self._revisions = revisions
        self._timeout = api_timeout_s
        self._operation_timeout = operation_timeout_s
        # Reads retry briefly by themselves; a longer outage goes back to Pub/Sub.
        self._read_retry = gretry.Retry(
            initial=0.1,
            maximum=1.0,
            multiplier=2.0,
            timeout=min(3.0, api_timeout_s),
            predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.TooManyRequests),
        )
        # Cloud Run applies a traffic change in seconds: poll from 0.1 s, at most every 2 s.
        self._polling = polling.DEFAULT_POLLING.with_delay(
            initial=0.1, maximum=2.0, multiplier=1.5
        ).with_timeout(operation_timeout_s)

    # ------------------------------------------------------------------ reads

    def read(self, project: str, region: str, service: str) -> ServiceState:
        """The service with its traffic and every revision (sorted by create time)."""
        name = f"projects/{project}/locations/{region}/services/{service}"
        with _classified(name):
            svc = self._services.get_service(
                name=name, retry=self._read_retry, timeout=self._timeout
            )
            revisions = [
                RevisionInfo(
                    name=_short(rev.name),
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
        with _classified(name):
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
            latest_ready_revision=_short(svc.latest_ready_revision) or None,
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
        from google.api_core import exceptions as gexc
        from google.cloud import run_v2

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
            spec = rollback_traffic(_items(svc.traffic), target)
            svc.traffic = [
                run_v2.TrafficTarget(
                    type_=1 if item.type == "LATEST" else 2,
                    revision=item.revision,
                    percent=item.percent,
                    tag=item.tag,
                )
                for item in spec
            ]
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
                f"{_describe(exc)}: outcome unknown"
            ) from exc
        return self._state(before.project, before.region, before.service, after, before.revisions)

    def _send(self, name: str, svc: run_v2.Service) -> Any:
        """UpdateService. Only an answer that says it was not taken (409, 429, 503, other
        4xx) or a connection that never opened leaves the state certain; any other
        failure (timeout, reset, 500, 504) may have applied it."""
        from google.api_core import exceptions as gexc

        try:
            with _classified(name, conflict_passes=True):
                return self._services.update_service(
                    request={"service": svc}, timeout=self._timeout
                )
        except TransientError as exc:
            cause = exc.__cause__
            if isinstance(cause, gexc.ServiceUnavailable | gexc.TooManyRequests) or (
                cause is not None and _never_connected(cause)
            ):
                raise
            raise UpdateOutcomeUnknown(
                f"UpdateService of {_short(name)} was sent, then {_describe(cause or exc)}: "
                "outcome unknown"
            ) from exc
        except (gexc.Conflict, CloudRunError):
            raise
        except Exception as exc:
            raise UpdateOutcomeUnknown(
                f"UpdateService of {_short(name)} was sent, then {_describe(exc)}: outcome unknown"
            ) from exc

    def _wait(self, operation: Any, service: str) -> None:
        from google.api_core import exceptions as gexc

        try:
            operation.result(polling=self._polling)
        except concurrent.futures.TimeoutError as exc:
            raise OperationFailed(
                f"UpdateService of {service} did not finish within {self._operation_timeout:.0f}s"
            ) from exc
        except gexc.GoogleAPICallError as exc:
            # The operation itself failed (e.g. a revision vanished): the state is
            # uncertain, so a human looks rather than a blind retry.
            raise OperationFailed(f"UpdateService of {service} failed: {exc.message}") from exc


def _fmt_routing(state: ServiceState) -> str:
    return describe_split(state.routing()[0])


def _describe(exc: BaseException) -> str:
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        return f"{exc.code} {exc.message}".strip()
    return type(exc).__name__


def _never_connected(exc: BaseException) -> bool:
    """The request certainly never reached Cloud Run (connection refused, connect timeout)."""
    try:
        import requests
        from urllib3.exceptions import NewConnectionError
    except ImportError:  # pragma: no cover - google-auth brings requests
        return False
    if isinstance(exc, requests.ConnectTimeout | ConnectionRefusedError):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(reason, NewConnectionError)


def _time_or_none(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) and value.timestamp() > 0 else None


@contextmanager
def _classified(name: str, *, conflict_passes: bool = False) -> Iterator[None]:
    """Map google-api-core / transport errors to our error classes."""
    from google.api_core import exceptions as gexc

    transient = (
        gexc.ServiceUnavailable,
        gexc.TooManyRequests,
        gexc.InternalServerError,
        gexc.GatewayTimeout,
        gexc.DeadlineExceeded,
        gexc.RetryError,
        TimeoutError,
        ConnectionError,
    )
    try:
        yield
    except gexc.Conflict as exc:
        if conflict_passes:
            raise
        raise CloudRunError(f"Cloud Run refused: 409 {exc.message}") from exc
    except gexc.NotFound as exc:
        raise ServiceNotFound(f"Cloud Run: {name} not found") from exc
    except transient as exc:
        raise TransientError(f"Cloud Run unavailable: {type(exc).__name__}") from exc
    except gexc.GoogleAPICallError as exc:
        raise CloudRunError(f"Cloud Run refused: {exc.code} {exc.message}") from exc
    except Exception as exc:
        if _is_transport_error(exc):
            raise TransientError(f"Cloud Run unreachable: {type(exc).__name__}") from exc
        raise


def _is_transport_error(exc: BaseException) -> bool:
    try:
        import requests
    except ImportError:  # pragma: no cover - google-auth brings requests
        return False
    return isinstance(exc, requests.ConnectionError | requests.Timeout)


def create_cloud_run(settings: Settings) -> CloudRun:
    """Official REST clients pointed at ``cloud_run_endpoint`` (the stand-in) when it is
    set, default clients (Application Default Credentials) otherwise."""
    from google.cloud import run_v2

    config = settings.rollback
    if settings.cloud_run_endpoint:
        from google.auth.credentials import AnonymousCredentials

        options = {"api_endpoint": settings.cloud_run_endpoint}
        services = run_v2.ServicesClient(
            transport="rest",
            client_options=options,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
        revisions = run_v2.RevisionsClient(
            transport="rest",
            client_options=options,
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    else:
        services = run_v2.ServicesClient()
        revisions = run_v2.RevisionsClient()
    return CloudRun(
        services,
        revisions,
        api_timeout_s=config.api_timeout_s,
        operation_timeout_s=config.operation_timeout_s,
    )


def _cloud_run_of(deps: Deps) -> CloudRun:
    return create_cloud_run(deps.settings)


def cloud_run_for(deps: Deps) -> CloudRun:
    """The one CloudRun of these deps, built on first use (clients are costly to create)."""
    return deps.service(_cloud_run_of)
