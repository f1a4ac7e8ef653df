"""What the gRPC stand-ins share (Cloud Monitoring, Cloud Logging): a unary handler that is
logged and subject to the stand-ins' fault rules, Google's error trailers, the server on
its own port, page tokens bound to their query, protobuf time conversions.

The official clients of both APIs ship only gRPC transports, so their stand-ins serve
real gRPC (docs/standins.md); one implementation keeps the two alike."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import time
from collections.abc import Callable
from concurrent import futures
from datetime import UTC, datetime
from typing import Any, NoReturn, Self

import grpc
from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from standins._common import HTTP_TO_RPC_STATUS, FaultsAndLog, StandinError

US = 1_000_000

# --------------------------------------------------------------------------- time


def us(moment: datetime) -> int:
    """Microseconds since the epoch (the stand-ins' clock unit)."""
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def from_us(value: int) -> datetime:
    return datetime.fromtimestamp(value // US, UTC).replace(microsecond=value % US)


def ts(value: int) -> Timestamp:
    return Timestamp(seconds=value // US, nanos=(value % US) * 1000)


def ts_us(stamp: Timestamp) -> int:
    return int(stamp.seconds) * US + int(stamp.nanos) // 1000


def duration_us(duration: Duration) -> int:
    return int(duration.seconds) * US + int(duration.nanos) // 1000


# --------------------------------------------------------------------------- requests


def invalid(field_name: str, value: str, why: str) -> StandinError:
    """INVALID_ARGUMENT in the wording Google's APIs use for a bad request field."""
    return StandinError(400, f'Field {field_name} had an invalid value of "{value}": {why}')


def fingerprint(req: Any) -> str:
    """The request without its paging fields: a token is only good for the same query."""
    copy = type(req)()
    copy.CopyFrom(req)
    copy.page_token = ""
    copy.page_size = 0
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:16]


def write_token(first: int, second: int, query: str) -> str:
    """A page token: two non-negative positions and the query's :func:`fingerprint`."""
    raw = json.dumps([first, second, query]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def read_token(token: str, query: str) -> tuple[int, int] | None:
    """The positions of a :func:`write_token` token (None: no token, the first page), or
    INVALID_ARGUMENT for a token of another query or none of ours."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        first, second, seen = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise invalid("pageToken", token, "not a page token") from exc
    if seen != query or not isinstance(first, int) or not isinstance(second, int):
        raise invalid("pageToken", token, "not a page token of this query")
    if first < 0 or second < 0:
        raise invalid("pageToken", token, "not a page token of this query")
    return first, second


# --------------------------------------------------------------------------- handlers


def abort(context: Any, status: str, message: str, retry_after: int | None = None) -> NoReturn:
    """End the call the way Google's front end does: code, message and a
    ``google.rpc.Status`` in the trailers (with ``RetryInfo`` when there is a delay)."""
    from google.protobuf import any_pb2
    from google.rpc import error_details_pb2, status_pb2
    from grpc_status import rpc_status

    code = grpc.StatusCode[status]
    details = []
    if retry_after is not None:
        info = error_details_pb2.RetryInfo(retry_delay=Duration(seconds=retry_after))
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
    rich = status_pb2.Status(code=code.value[0], message=message, details=details)
    context.abort_with_status(rpc_status.to_status(rich))
    raise AssertionError("abort_with_status returned")  # it raises; this is for the types


def unary(
    log: FaultsAndLog, logger: logging.Logger, path: str, call: Callable[[Any], Any]
) -> Callable[[Any, Any], Any]:
    """A unary handler: recorded in ``log`` (the request as JSON), subject to its fault
    rules (matched with method ``POST`` and the gRPC ``path``), a :class:`StandinError` as
    the gRPC status its HTTP code maps to, one log line per call (never a body)."""
    from google.protobuf import json_format

    def done(status: str, started: float) -> None:
        logger.info("POST %s -> %s (%.1f ms)", path, status, (time.monotonic() - started) * 1000)

    def handle(req: Any, context: Any) -> Any:
        started = time.monotonic()
        index = log.record("POST", path, {}, json_format.MessageToDict(req))
        rule = log.take_fault("POST", path)
        if rule is not None:
            log.set_status(index, rule.status)
            status = HTTP_TO_RPC_STATUS.get(rule.status, "UNKNOWN")
            done(f"{status} (injected)", started)
            abort(context, status, rule.body or "Injected fault.", rule.retry_after)
        try:
            answer = call(req)
        except StandinError as exc:
            log.set_status(index, exc.code)
            done(exc.status, started)
            abort(context, exc.status, exc.message)
        log.set_status(index, 200)
        done("OK", started)
        return answer

    return handle


def one_method(
    service: str,
    method: str,
    call: Callable[[Any], Any],
    messages: tuple[Any, Any],
    log: FaultsAndLog,
    logger: logging.Logger,
) -> Any:
    """The generic handler of ``service`` with the one unary ``method`` a stand-in serves
    (a :func:`unary` over ``call``; ``messages``: the protobuf request and response
    classes). Every other method answers UNIMPLEMENTED, as gRPC does for an unknown one."""
    request, response = messages
    return grpc.method_handlers_generic_handler(
        service,
        {
            method: grpc.unary_unary_rpc_method_handler(
                unary(log, logger, f"/{service}/{method}", call),
                request_deserializer=request.FromString,
                response_serializer=response.SerializeToString,
            )
        },
    )


# --------------------------------------------------------------------------- server


class GrpcServer:
    """A stand-in's service on a gRPC server (thread pool); ``target`` is ``HOST:PORT``."""

    def __init__(self, server: Any, host: str, port: int) -> None:
        self._server = server
        self.host = host
        self.port = port
        self._stopped = False

    @property
    def target(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    def stop(self, grace: float = 0.5) -> None:
        """Stop serving and release the port. Idempotent."""
        if not self._stopped:
            self._stopped = True
            self._server.stop(grace).wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def serve(handler: Any, host: str, port: int, name: str) -> GrpcServer:
    """Serve ``handler`` (a generic RPC handler) on ``host:port`` (0 = any free port),
    insecure, on threads named after the stand-in."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8, thread_name_prefix=name))
    server.add_generic_rpc_handlers((handler,))
    address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc}") from exc
    if bound == 0:
        raise OSError(f"cannot listen on {address}")
    server.start()
    return GrpcServer(server, host, bound)


__all__ = [
    "US",
    "GrpcServer",
    "abort",
    "duration_us",
    "fingerprint",
    "from_us",
    "invalid",
    "one_method",
    "read_token",
    "serve",
    "ts",
    "ts_us",
    "unary",
    "us",
    "write_token",
]
