"""Cloud Run Admin API v2 plumbing shared by rollback and the deploy (google-cloud-run).

One place for what both callers of Cloud Run need (docs/rollback.md "The traffic update",
docs/deploy.md "sightops deploy"): the official REST clients, pointed at the stand-in
(``cloud_run_endpoint``) or at Google with Application Default Credentials; the error
classification; sending an UpdateService and waiting for its long-running operation.

Errors are classified once: 503/429/500/504, timeouts and connection failures are
:class:`TransientError`; 409 (an etag that changed under us) is left to the caller (retry
after a fresh read, then :class:`TrafficConflict`); 404 is :class:`ServiceNotFound`;
everything else is a :class:`CloudRunError` (permanent: a retry cannot fix it).
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from google.cloud import run_v2

    from shared.settings import Settings


class CloudRunError(PermanentError):
    """Cloud Run refused the request in a way a retry cannot fix."""


class ServiceNotFound(CloudRunError):
    """The service does not exist (wrong name, project or region)."""


class TrafficConflict(CloudRunError):
    """UpdateService answered 409 twice: someone else keeps changing the service."""


class OperationFailed(CloudRunError):
    """The UpdateService operation failed or did not finish in time."""


class UpdateOutcomeUnknown(CloudRunError):
    """UpdateService was sent and then something failed: the change may or may not have
    been applied. Never retried blindly; the caller reads the service again or a human
    looks."""


def short(name: str) -> str:
    """The last segment of a resource name (``.../revisions/R`` -> ``R``)."""
    return name.rsplit("/", 1)[-1] if name else ""


def service_name(project: str, region: str, service: str) -> str:
    return f"projects/{project}/locations/{region}/services/{service}"


def create_clients(settings: Settings) -> tuple[run_v2.ServicesClient, run_v2.RevisionsClient]:
    """Official REST clients pointed at ``cloud_run_endpoint`` (the stand-in) when it is
    set, default clients (Application Default Credentials) otherwise."""
    from google.cloud import run_v2

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
        return services, revisions
    return run_v2.ServicesClient(), run_v2.RevisionsClient()


class TrafficSpec(Protocol):
    """One traffic entry as our code holds it (``shared.rollback.TrafficItem``)."""

    @property
    def type(self) -> str: ...
    @property
    def revision(self) -> str: ...
    @property
    def percent(self) -> int: ...
    @property
    def tag(self) -> str: ...


def traffic_targets(spec: Iterable[TrafficSpec]) -> list[run_v2.TrafficTarget]:
    """The ``traffic`` of an UpdateService body (``LATEST`` entries name no revision)."""
    from google.cloud import run_v2

    return [
        run_v2.TrafficTarget(
            type_=1 if item.type == "LATEST" else 2,  # TRAFFIC_TARGET_ALLOCATION_TYPE_*
            revision=item.revision if item.type != "LATEST" else "",
            percent=item.percent,
            tag=item.tag,
        )
        for item in spec
    ]


def read_retry(api_timeout_s: float) -> Any:
    """Reads retry briefly by themselves (503, 429); a longer outage is the caller's."""
    from google.api_core import exceptions as gexc
    from google.api_core import retry as gretry

    return gretry.Retry(
        initial=0.1,
        maximum=1.0,
        multiplier=2.0,
        timeout=min(3.0, api_timeout_s),
        predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.TooManyRequests),
    )


def operation_polling(timeout_s: float) -> Any:
    """Poll an operation from 0.1 s, at most every 2 s, for at most ``timeout_s``."""
    from google.api_core.future import polling

    return polling.DEFAULT_POLLING.with_delay(
        initial=0.1, maximum=2.0, multiplier=1.5
    ).with_timeout(timeout_s)


def send_update(
    services: run_v2.ServicesClient, name: str, svc: run_v2.Service, timeout_s: float
) -> Any:
    """UpdateService; returns the operation. Only an answer that says it was not taken
    (409, 429, 503, other 4xx) or a connection that never opened leaves the state
    certain; any other failure (timeout, reset, 500, 504) may have applied it
    (:class:`UpdateOutcomeUnknown`). A 409 is raised as ``google.api_core`` ``Conflict``."""
    from google.api_core import exceptions as gexc

    try:
        with classified(name, conflict_passes=True):
            return services.update_service(request={"service": svc}, timeout=timeout_s)
    except TransientError as exc:
        cause = exc.__cause__
        if isinstance(cause, gexc.ServiceUnavailable | gexc.TooManyRequests) or (
            cause is not None and never_connected(cause)
        ):
            raise
        raise UpdateOutcomeUnknown(
            f"UpdateService of {short(name)} was sent, then {describe(cause or exc)}: "
            "outcome unknown"
        ) from exc
    except (gexc.Conflict, CloudRunError):
        raise
    except Exception as exc:
        raise UpdateOutcomeUnknown(
            f"UpdateService of {short(name)} was sent, then {describe(exc)}: outcome unknown"
        ) from exc


def wait_operation(operation: Any, polling: Any, service: str, timeout_s: float) -> Any:
    """The operation's result, or :class:`OperationFailed` (failed or too slow)."""
    from google.api_core import exceptions as gexc

    try:
        return operation.result(polling=polling)
    except concurrent.futures.TimeoutError as exc:
        raise OperationFailed(
            f"UpdateService of {service} did not finish within {timeout_s:.0f}s"
        ) from exc
    except gexc.GoogleAPICallError as exc:
        raise OperationFailed(f"UpdateService of {service} failed: {exc.message}") from exc


def describe(exc: BaseException) -> str:
    """Code and message of an API error, else the exception's type (never a body)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        return f"{exc.code} {exc.message}".strip()
    return type(exc).__name__


def never_connected(exc: BaseException) -> bool:
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


@contextmanager
def classified(name: str, *, conflict_passes: bool = False) -> Iterator[None]:
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
