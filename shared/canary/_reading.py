"""What the canary's two readers share (Cloud Monitoring, ``_monitoring``; Cloud Logging,
``_logs``): the period grid, filter string literals, the client, and one page read with
retries within the read's deadline (docs/canary.md, "Reading Cloud Monitoring").

google-api-core is imported on first use (docs/architecture.md, "Cold start").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, TypeVar

from shared.errors import PermanentError, TransientError

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = 1_000_000
C = TypeVar("C")


def us(moment: datetime) -> int:
    """Microseconds since the epoch of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("times must be timezone-aware")
    delta = moment - EPOCH
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def grid(
    start: datetime, end: datetime, alignment_s: int, visibility_delay_s: float
) -> tuple[int, int, int] | None:
    """``(first end, last end, period)`` in microseconds: the periods of ``alignment_s``
    on the epoch grid lying wholly inside ``(start, end - visibility_delay_s]``, the
    first ``(first end - period, first end]``; None when no whole period fits yet."""
    period = alignment_s * US
    visible = us(end) - round(visibility_delay_s * US)
    last_end = visible // period * period
    first_end = -(-us(start) // period) * period + period
    if last_end < first_end:
        return None
    return first_end, last_end, period


def quote(value: str) -> str:
    """A filter string literal (Monitoring's filters and the Logging query language
    escape alike: a backslash before ``"`` and ``\\``)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def transient() -> tuple[type[Exception], ...]:
    """The API errors a later call may not meet: UNAVAILABLE, DEADLINE_EXCEEDED,
    RESOURCE_EXHAUSTED, INTERNAL."""
    from google.api_core import exceptions as gexc

    return (
        gexc.ServiceUnavailable,
        gexc.DeadlineExceeded,
        gexc.ResourceExhausted,
        gexc.InternalServerError,
    )


def describe(exc: BaseException) -> str:
    """Code and message of an API error (never a header or a credential)."""
    from google.api_core import exceptions as gexc

    if isinstance(exc, gexc.GoogleAPICallError):
        code = exc.grpc_status_code.name if exc.grpc_status_code is not None else exc.code
        return f"{code}: {exc.message}".strip()
    return type(exc).__name__


def grpc_client(endpoint: str | None, client: Callable[..., C], transport: Callable[..., Any]) -> C:
    """A GAPIC ``client``: over an insecure gRPC channel to ``endpoint`` (``host:port`` of a
    stand-in) through its gRPC ``transport`` class when given, with Application Default
    Credentials to the real API otherwise."""
    if not endpoint:
        return client()
    import grpc

    return client(transport=transport(channel=grpc.insecure_channel(endpoint)))


class ApiReader:
    """What the readers of one list method share: their grid options, checked once, and
    one page at a time with the :func:`transient` errors retried (0.1 s doubling to 2 s)
    until the read's deadline, shared by its pages; then :attr:`unavailable`. Any other
    API error is :attr:`refused`."""

    unavailable: ClassVar[type[TransientError]]
    refused: ClassVar[type[PermanentError]]

    def __init__(self, *, alignment_s: int, visibility_delay_s: float, timeout_s: float) -> None:
        if alignment_s < 1 or int(alignment_s) != alignment_s:
            raise ValueError("alignment_s must be a whole number of seconds, at least 1")
        if visibility_delay_s < 0 or timeout_s <= 0:
            raise ValueError("visibility_delay_s must be >= 0 and timeout_s > 0")
        self.alignment_s = int(alignment_s)
        self.visibility_delay_s = visibility_delay_s
        self.timeout_s = timeout_s

    def first_page(
        self, method: Callable[..., Any], request: dict[str, Any], what: str, deadline: float
    ) -> Any:
        """The first page of ``method(request=…)`` (a GAPIC list method; the request
        names its page token); ``what`` names the read in the error messages."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise self.unavailable(f"{what}: no answer within {self.timeout_s:g}s")
        retry = gretry.Retry(
            initial=0.1,
            maximum=2.0,
            multiplier=2.0,
            timeout=remaining,
            predicate=gretry.if_exception_type(*transient()),
        )
        try:
            return next(iter(method(request=request, retry=retry, timeout=remaining).pages))
        except gexc.RetryError as exc:
            cause = describe(exc.cause if exc.cause is not None else exc)
            raise self.unavailable(
                f"{what}: still failing after {self.timeout_s:g}s ({cause})"
            ) from exc
        except transient() as exc:
            raise self.unavailable(f"{what}: {describe(exc)}") from exc
        except gexc.GoogleAPICallError as exc:
            raise self.refused(f"{what} refused: {describe(exc)}") from exc


__all__ = [
    "EPOCH",
    "US",
    "ApiReader",
    "describe",
    "from_us",
    "grid",
    "grpc_client",
    "quote",
    "transient",
    "us",
]
