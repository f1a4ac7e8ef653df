"""The Pub/Sub handler runtime (docs/architecture.md): parse, maximum age, dedupe, run,
classify, log.

A function's ``main.py`` is decorator -> parse -> handle; everything else is here:

- a message that can never be handled is kept in ``ops.rejected_events`` with its reason
  and acknowledged (nothing vanishes, nothing loops);
- a stale event is dropped with a log line;
- the receipt ``(consumer, key)`` is inserted in the same transaction as the handler's
  own records, so a duplicate waits for the first delivery and then sees it as done;
- transient failures roll everything back and answer 503 so Pub/Sub redelivers;
  permanent ones are recorded and acknowledged; a data error from the handler (SQLSTATE
  class 22, text no encoder accepts) rolls back and is kept like an unparseable message;
- exactly one structured log line per delivery;
- one span per delivery, in its release's trace (``shared.trace``, docs/release.md).
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Final, Generic, Literal, Protocol, TypeVar, cast

from werkzeug.exceptions import HTTPException, ServiceUnavailable

from shared.errors import ConfigError, InvalidEventError, SightOpsError, TransientError
from shared.event_ages import EVENT_CONSUMERS
from shared.log import LABELS_KEY, TRACE_KEY, add_trace, redact
from shared.runtime._actions import write_action
from shared.runtime._deps import Deps, process_deps
from shared.runtime._message import (
    PubsubMessage,
    cloud_trace,
    message_from_cloudevent,
    message_from_envelope,
    request_traceparent,
    salvage_cloudevent,
)
from shared.runtime._rejected import cap_payload
from shared.runtime._storable import storable, storable_json, storable_text
from shared.trace import current as current_trace
from shared.trace import set_outcome

if TYPE_CHECKING:
    # Loaded on the first delivery, never by ``import main`` (docs/architecture.md,
    # "Cold start"): the methods below import shared.db and SQLAlchemy where they use them.
    from sqlalchemy.engine import Connection

    from shared.settings import Settings
    from shared.trace import TraceContext

logger = logging.getLogger("sightops.runtime")

#: Longest piece of an untrusted attribute kept on a span.
_SHOWN = 200
#: Longest a delivery due later is held before it runs (well under a push ack deadline).
MAX_DUE_WAIT_S: Final = 15.0

E = TypeVar("E")
E_inv = TypeVar("E_inv")


class _FromSettings:
    """``max_age`` not given: the consumer's ``Settings.max_event_age``, read at delivery."""

    def __repr__(self) -> str:
        return "FROM_SETTINGS"


FROM_SETTINGS: Final = _FromSettings()
MaxAge = timedelta | None | _FromSettings
OutcomeStatus = Literal["handled", "skipped", "duplicate", "stale", "rejected", "failed", "retry"]
Parser = Callable[[bytes, Mapping[str, str]], E]


class RetryDelivery(ServiceUnavailable):
    """Answer 503 so Pub/Sub redelivers; carries no detail that could leak."""

    description = "transient failure; the message will be redelivered"


@dataclass
class Outcome:
    """What a handler did: ``handled`` or ``skipped`` plus a reason and log fields."""

    status: Literal["handled", "skipped"] = "handled"
    reason: str | None = None
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def skipped(cls, reason: str, **fields: Any) -> Outcome:
        return cls("skipped", reason, fields)

    @classmethod
    def handled(cls, reason: str | None = None, **fields: Any) -> Outcome:
        return cls("handled", reason, fields)


@dataclass
class Context:
    """Per-delivery context: the deps, the message, the open transaction, the receipt
    key the runtime deduplicated on (a handler never recomputes it), and the release and
    trace the delivery belongs to (docs/release.md)."""

    consumer: str
    deps: Deps
    message: PubsubMessage
    conn: Connection
    key: str = ""
    release_id: str | None = None
    trace_id: str | None = None

    def record_action(
        self,
        kind: str,
        status: str,
        *,
        service: str | None = None,
        detail: Mapping[str, Any] | None = None,
        actor: str = "automation",
        finished: bool = True,
    ) -> int:
        """Append to the ``ops.actions`` audit trail in this delivery's transaction."""
        row = write_action(
            self.conn,
            kind=kind,
            status=status,
            now=self.deps.clock(),
            service=service,
            trigger_event_id=self.message.event_id,
            actor=actor,
            detail=detail,
            finished=finished,
            release_id=self.release_id,
            trace_id=self.trace_id,
        )
        assert row is not None  # a row without dedupe key is always inserted
        return row


HandlerFn = Callable[[E, Context], Outcome | None]


@dataclass
class EventHandler(Generic[E]):
    """The deployable: call it with a CloudEvent (what functions-framework passes)."""

    consumer: str
    parse: Parser[E]
    fn: HandlerFn[E]
    max_age: MaxAge
    dedupe_key: Callable[[E, PubsubMessage], str] | None
    deps_factory: Callable[[], Deps]
    #: when a delivery is due (None: now). One due later waits for it, at most
    #: ``MAX_DUE_WAIT_S``, before its transaction opens (the canary's 10-second ticks).
    not_before: Callable[[E], datetime | None] | None = None
    __name__: str = "handler"

    def max_age_for(self, settings: Settings) -> timedelta | None:
        """The maximum event age in force: the one given, else ``settings``' for this consumer."""
        if isinstance(self.max_age, _FromSettings):
            return settings.max_event_age(self.consumer)
        return self.max_age

    def __call__(self, cloud_event: Any) -> None:
        deps = self.deps_factory()
        started = time.perf_counter()
        try:
            message = message_from_cloudevent(cloud_event)
        except InvalidEventError as exc:
            salvaged = salvage_cloudevent(cloud_event)
            with self.delivery_span(deps, salvaged):
                self._reject(deps, salvaged, str(exc), started)
            return
        except Exception as exc:  # the envelope will not parse better on redelivery
            salvaged = salvage_cloudevent(cloud_event)
            with self.delivery_span(deps, salvaged):
                self._reject_loudly(deps, salvaged, "envelope crashed", exc, started)
            return
        self.handle_message(message, deps)

    def delivery_span(
        self,
        deps: Deps,
        message: PubsubMessage,
        event: object = None,
        start_ns: int | None = None,
    ) -> AbstractContextManager[TraceContext | None]:
        """The delivery's span ``<consumer> <event type>``, in the trace its attributes or
        its release name (``shared.trace``); while it is open, logs, actions and
        published messages carry its trace and release."""
        from shared.trace import release_of

        try:
            tracing = deps.tracing
        except Exception:  # tracing must never stop a delivery
            logger.exception("%s: tracing unavailable; delivery not traced", self.consumer)
            return nullcontext()
        return tracing.span(
            f"{self.consumer} {message.label[:_SHOWN]}",
            kind="consumer",
            traceparent=message.traceparent,
            tracestate=message.tracestate,
            release=release_of(event, message.attributes),
            fallback=message.trace,
            attributes={
                "consumer": self.consumer,
                "event_id": (message.event_id or "")[:_SHOWN] or None,
                "event_type": (message.event_type or "")[:_SHOWN] or None,
                "messaging.system": "gcp_pubsub",
                "messaging.message.id": message.message_id[:_SHOWN] or None,
                "messaging.destination.name": message.topic,
                "messaging.gcp_pubsub.message.delivery_attempt": message.delivery_attempt,
            },
            start_ns=start_ns,
        )

    def handle_message(self, message: PubsubMessage, deps: Deps | None = None) -> OutcomeStatus:
        """Run one delivery; raises :class:`RetryDelivery` when it must be redelivered."""
        deps = deps or self.deps_factory()
        started = time.perf_counter()
        start_ns = time.time_ns()
        try:
            event = self.parse(message.data, message.attributes)
        except Exception as exc:
            with self.delivery_span(deps, message, None, start_ns):
                if isinstance(exc, InvalidEventError):
                    return self._reject(deps, message, str(exc), started)
                return self._crashed(deps, message, "parser", exc, started)
        with self.delivery_span(deps, message, event, start_ns):
            return self._deliver(deps, message, event, started)

    def _deliver(
        self, deps: Deps, message: PubsubMessage, event: E, started: float
    ) -> OutcomeStatus:
        """Maximum age, receipt, handler, classification (the delivery's span is open)."""
        event_time = message.event_time
        try:
            max_age = self.max_age_for(deps.settings)
        except SightOpsError as exc:  # no age configured for this consumer: fix, then replay
            return self._retry(deps, message, exc, started)
        if max_age is not None and event_time is not None:
            age = deps.clock() - event_time
            if age > max_age:
                return self._log(
                    deps,
                    message,
                    "stale",
                    started,
                    logging.INFO,
                    reason=f"event is {age.total_seconds():.0f}s old; maximum is "
                    f"{max_age.total_seconds():.0f}s",
                )

        self._wait_until_due(deps, event)
        try:
            key = self.dedupe_key(event, message) if self.dedupe_key else message.event_id
        except Exception as exc:
            return self._crashed(deps, message, "dedupe key", exc, started)
        try:
            return self._run(deps, message, event, storable(key), started)
        except RetryDelivery:
            raise
        except Exception as exc:  # classify everything else: retry unless known permanent
            from shared.db import is_data_error

            if is_data_error(exc):
                return self._data_error(deps, message, exc, started)
            return self._retry(deps, message, exc, started)

    def _wait_until_due(self, deps: Deps, event: E) -> None:
        """Hold a delivery that is due later, outside any transaction or lock. The wait is
        bounded: a delivery due further away runs early, which its handler must allow."""
        if self.not_before is None:
            return
        try:
            due = self.not_before(event)
        except Exception:  # a broken hook must not lose the delivery: run it now
            logger.exception("not_before of %s failed; handling the delivery now", self.consumer)
            return
        if due is not None:
            wait = (due - deps.clock()).total_seconds()
            if wait > 0:
                time.sleep(min(wait, MAX_DUE_WAIT_S))

    def _run(
        self, deps: Deps, message: PubsubMessage, event: E, key: str, started: float
    ) -> OutcomeStatus:
        # Hot path: BEGIN, receipt INSERT, the handler's own statements, COMMIT. The
        # receipt is written as 'handled' up front and corrected only when it was not.
        # A concurrent duplicate blocks on that uncommitted row (bounded by the engine's
        # lock_timeout) and then sees it: that is the exactly-once guarantee.
        from sqlalchemy import text

        from shared.db import pool_usage, transaction

        try:
            with transaction(deps.engine) as conn:
                waited = time.perf_counter()
                # rowcount, not RETURNING: a RETURNING result left open keeps pg8000's portal
                # (and its snapshot) alive while the handler runs, which stalls
                # CREATE INDEX CONCURRENTLY in a migration run by that handler.
                fresh = conn.execute(
                    text(
                        "INSERT INTO ops.event_receipts (consumer, event_id, event_type, outcome)"
                        " VALUES (:c, :k, :t, 'handled') ON CONFLICT DO NOTHING"
                    ),
                    {"c": self.consumer, "k": key, "t": storable_text(message.event_type)},
                ).rowcount
                deps.metrics.timing(
                    "dedupe_wait_ms", (time.perf_counter() - waited) * 1000, consumer=self.consumer
                )
                deps.metrics.gauge("db_pool_checked_out", pool_usage(deps.engine)["checked_out"])
                if not fresh:
                    return self._log(
                        deps,
                        message,
                        "duplicate",
                        started,
                        logging.INFO,
                        reason=f"already handled as {key}",
                    )
                trace = current_trace()
                ctx = Context(
                    self.consumer,
                    deps,
                    message,
                    conn,
                    key,
                    release_id=trace.release_id if trace else None,
                    trace_id=trace.trace_id if trace else None,
                )
                outcome = self.fn(event, ctx)
                outcome = outcome or Outcome.handled()
                if outcome.status != "handled":
                    self._set_receipt(conn, key, outcome.status)
        except SightOpsError as exc:
            if exc.retryable:
                raise
            # Not retryable (PermanentError, SecretError, ConfigError, an InvalidEventError
            # raised by the handler): a retry cannot fix it. Effects were rolled back with
            # the transaction; keep the receipt so the message is not handled again, then
            # acknowledge.
            with transaction(deps.engine) as conn:
                conn.execute(
                    text(
                        "INSERT INTO ops.event_receipts (consumer, event_id, event_type, outcome)"
                        " VALUES (:c, :k, :t, 'failed')"
                        " ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'failed'"
                    ),
                    {"c": self.consumer, "k": key, "t": storable_text(message.event_type)},
                )
            return self._log(
                deps,
                message,
                "failed",
                started,
                logging.ERROR,
                reason=str(exc),
                error=type(exc).__name__,
            )
        return self._log(
            deps,
            message,
            outcome.status,
            started,
            logging.INFO if outcome.status == "handled" else logging.DEBUG,
            reason=outcome.reason,
            **outcome.fields,
        )

    def _set_receipt(self, conn: Connection, key: str, outcome: str) -> None:
        from sqlalchemy import text

        conn.execute(
            text(
                "UPDATE ops.event_receipts SET outcome = :o WHERE consumer = :c AND event_id = :k"
            ),
            {"o": outcome, "c": self.consumer, "k": key},
        )

    def _retry(
        self, deps: Deps, message: PubsubMessage, exc: Exception, started: float
    ) -> OutcomeStatus:
        from shared.db import is_transient as db_is_transient

        known = (
            isinstance(exc, TransientError)
            or (isinstance(exc, SightOpsError) and exc.retryable)
            or db_is_transient(exc)
        )
        fields: dict[str, Any] = {"error": type(exc).__name__}
        if not known:
            fields["traceback"] = traceback.format_exc(limit=8)
        self._log(
            deps,
            message,
            "retry",
            started,
            logging.WARNING if known else logging.ERROR,
            reason=str(exc),
            **fields,
        )
        raise RetryDelivery() from None

    def _data_error(
        self, deps: Deps, message: PubsubMessage, exc: Exception, started: float
    ) -> OutcomeStatus:
        """The handler's values were refused as data (SQLSTATE class 22, text that cannot
        be encoded): every redelivery sends the same values and fails the same way. The
        handler's effects were rolled back; keep the message, with no receipt, so it can
        be replayed once the cause is fixed, and say loudly why (the parser let it in)."""
        return self._reject_loudly(
            deps, message, f"data error: {_describe_data_error(exc)}", exc, started, full=False
        )

    def _crashed(
        self, deps: Deps, message: PubsubMessage, what: str, exc: Exception, started: float
    ) -> OutcomeStatus:
        """A parser or dedupe key that raises something other than InvalidEventError is a
        bug, but a deterministic one: every redelivery would crash the same way. Keep the
        message (it is the reproduction) and say loudly why."""
        if isinstance(exc, SightOpsError) and exc.retryable:
            return self._retry(deps, message, exc, started)
        return self._reject_loudly(deps, message, f"{what} crashed", exc, started)

    def _reject_loudly(
        self,
        deps: Deps,
        message: PubsubMessage,
        reason: str,
        exc: Exception,
        started: float,
        *,
        full: bool = True,
    ) -> OutcomeStatus:
        """Keep the message as rejected, logged at ERROR with the traceback (called from
        the ``except`` block): ``reason: <type>: <exception>``, or ``reason`` alone
        (``full=False``) when it already describes the exception."""
        if full:
            reason = f"{reason}: {type(exc).__name__}: {exc}"
        return self._reject(
            deps,
            message,
            reason,
            started,
            level=logging.ERROR,
            error=type(exc).__name__,
            traceback=traceback.format_exc(limit=8),
        )

    def _reject(
        self,
        deps: Deps,
        message: PubsubMessage,
        reason: str,
        started: float,
        *,
        level: int = logging.WARNING,
        **fields: Any,
    ) -> OutcomeStatus:
        """Keep the unhandleable message with its reason, then acknowledge it.

        The payload is capped (``HOUSEKEEPING__REJECTED_PAYLOAD_MAX_BYTES``): its head is
        kept, and the reason ends with the original size and the sha256 of the whole."""
        from sqlalchemy import text

        from shared.db import transaction
        from shared.dlq import with_origin

        payload = cap_payload(message.data, deps.settings.housekeeping.rejected_payload_max_bytes)
        if payload.capped:
            fields = {"payload_bytes": payload.size, "payload_sha256": payload.sha256, **fields}
        try:
            with transaction(deps.engine) as conn:
                conn.execute(
                    text(
                        "INSERT INTO ops.rejected_events (consumer, event_id, event_type,"
                        " reason, payload, attributes)"
                        " VALUES (:c, :id, :t, :r, :p, CAST(:a AS jsonb))"
                    ),
                    {
                        "c": self.consumer,
                        "id": storable_text(message.event_id),
                        "t": storable_text(message.event_type),
                        "r": storable(reason[:1800] + payload.note()),
                        "p": payload.data,
                        # where it came from, so `sightops dlq replay` can send it back
                        "a": storable_json(
                            with_origin(message.attributes, message.topic, message.subscription)
                        ),
                    },
                )
        except Exception as exc:
            # Could not keep it: better redelivered (and dead-lettered) than lost.
            return self._retry(deps, message, exc, started)
        return self._log(deps, message, "rejected", started, level, reason=reason, **fields)

    def _log(
        self,
        deps: Deps,
        message: PubsubMessage,
        outcome: OutcomeStatus,
        started: float,
        level: int,
        reason: str | None = None,
        **fields: Any,
    ) -> OutcomeStatus:
        duration_ms = (time.perf_counter() - started) * 1000
        deps.metrics.incr("events", consumer=self.consumer, outcome=outcome)
        deps.metrics.timing("handler_ms", duration_ms, consumer=self.consumer)
        extra: dict[str, Any] = {
            LABELS_KEY: {
                "consumer": self.consumer,
                "outcome": outcome,
                "event_type": message.event_type or (message.topic or "unknown"),
            },
            "event_id": message.event_id or None,
            "message_id": message.message_id or None,
            "duration_ms": round(duration_ms, 2),
        }
        if message.delivery_attempt:
            extra["delivery_attempt"] = message.delivery_attempt
        if reason:
            extra["reason"] = redact(reason)
        span = current_trace()
        if span is not None:
            add_trace(extra)
            set_outcome(outcome)
        else:
            trace = cloud_trace(message.trace, deps.settings.gcp_project)
            if trace:
                extra[TRACE_KEY] = trace
        extra.update({k: v for k, v in fields.items() if k not in extra})
        summary = (
            f"{self.consumer}: {outcome} {message.event_type or 'message'} "
            f"{message.event_id or 'without id'}"
        )
        if reason:
            summary += f": {redact(reason)}"
        logger.log(level, summary, extra=extra)
        return outcome


def _describe_data_error(exc: BaseException) -> str:
    """``SQLSTATE 22021: invalid byte sequence …`` without the statement and its
    parameters (SQLAlchemy's text carries both), or the encoder's own message."""
    from shared.db import sqlstate

    state = sqlstate(exc)
    if state is None:
        return f"{type(exc).__name__}: {exc}"
    orig = getattr(exc, "orig", None) or exc
    fields = orig.args[0] if orig.args and isinstance(orig.args[0], dict) else {}
    return f"SQLSTATE {state}: {fields.get('M', type(exc).__name__)}"


class DeployedHandler(Protocol[E_inv]):
    """What ``pubsub_handler`` returns: a plain function functions-framework can serve,
    with the :class:`EventHandler` behind it reachable for tests and benchmarks."""

    handler: EventHandler[E_inv]
    __name__: str

    def __call__(self, cloud_event: Any) -> None: ...


def pubsub_handler(
    consumer: str,
    parse: Parser[E],
    *,
    dedupe_key: Callable[[E, PubsubMessage], str] | None = None,
    max_age: MaxAge = FROM_SETTINGS,
    deps: Callable[[], Deps] = process_deps,
    not_before: Callable[[E], datetime | None] | None = None,
) -> Callable[[HandlerFn[E]], DeployedHandler[E]]:
    """Turn ``fn(event, ctx)`` into a registered functions-framework CloudEvent function.

    ``max_age`` defaults to ``Settings.max_event_age(consumer)``, read from the deps'
    settings at each delivery (never at import); ``None`` disables the check.
    ``not_before(event)``: when the delivery is due; one due later waits (bounded)."""

    if isinstance(max_age, _FromSettings) and consumer not in EVENT_CONSUMERS:
        raise ConfigError(
            f"pubsub_handler({consumer!r}): no maximum event age in Settings for it;"
            " add it to shared/settings.py or pass max_age="
        )

    def wrap(fn: HandlerFn[E]) -> DeployedHandler[E]:
        import flask
        import functions_framework

        handler = EventHandler(consumer, parse, fn, max_age, dedupe_key, deps, not_before)
        handler.__name__ = fn.__name__

        def entry(cloud_event: Any) -> None:
            if flask.has_request_context():  # the guard's sign that our code was reached
                setattr(flask.g, _DELIVERY, cloud_event)
            handler(cloud_event)

        entry.__name__ = fn.__name__
        entry.__qualname__ = fn.__qualname__
        entry.__doc__ = fn.__doc__
        entry.handler = handler  # type: ignore[attr-defined]
        registered: Any = functions_framework.cloud_event(entry)
        _guard_conversion(handler, fn.__name__)
        registered.handler = handler
        return cast("DeployedHandler[E]", registered)

    return wrap


def _guard_conversion(handler: EventHandler[Any], target: str) -> None:
    """Keep what functions-framework cannot turn into a CloudEvent.

    functions-framework converts the request before our code runs and answers 500 (or
    400) to a body it cannot convert: not UTF-8, nested past the recursion limit, a push
    body that is JSON but no envelope, a structured CloudEvent that is not one. Pub/Sub
    would redeliver such a message until it is dead-lettered, with no reason logged by us.
    While functions-framework loads a function's source it is inside the new app's
    context; for the app serving ``target`` (a module can declare several functions) we
    register an error handler that reads the envelope itself when it can (a push message
    without ``data`` is still a message) and otherwise keeps the raw body as rejected.

    Only what failed *before* our entry ran is a conversion failure: an exception that
    escapes the entry itself is our own bug, answered 503 (:func:`_escaped`), never kept.
    """
    import flask

    if not flask.has_app_context() or flask.current_app.name != target:
        return

    def convert_failed(exc: Exception) -> Any:
        if isinstance(exc, HTTPException) and exc.code != 400:
            return exc  # our own answers (503: redeliver), and Flask's routing errors
        started = time.perf_counter()
        delivery = flask.g.get(_DELIVERY)
        if delivery is not None:
            # Not a conversion failure: our entry ran and something escaped the runtime's
            # own classification (a bug of ours). Never keep the message for our bug.
            return _escaped(handler, delivery, exc, started)
        deps = handler.deps_factory()
        raw = flask.request.get_data()
        try:
            message = _message_from_raw(raw, flask.request.path)
            if message is None:
                what = "the request" if isinstance(exc, HTTPException) else type(exc).__name__
                salvaged = salvage_cloudevent(_RawDelivery(raw))
                with handler.delivery_span(deps, salvaged):
                    handler._reject(
                        deps,
                        salvaged,
                        "delivery could not be converted into a CloudEvent "
                        f"({what}); kept as received",
                        started,
                    )
            else:
                handler.handle_message(message, deps)
        except RetryDelivery as retry:
            return retry
        return "OK", 200

    flask.current_app.register_error_handler(Exception, convert_failed)


#: Name of the ``flask.g`` attribute holding the CloudEvent our entry was called with.
_DELIVERY = "sightops_delivery"


def _escaped(handler: EventHandler[Any], delivery: Any, exc: Exception, started: float) -> Any:
    """An exception that escaped our entry: logged as the runtime's retry line (ERROR,
    with the traceback) and answered 503, so Pub/Sub redelivers and, if it keeps
    failing, dead-letters the message with its failures logged."""
    try:
        deps = handler.deps_factory()
        salvaged = salvage_cloudevent(delivery)
        with handler.delivery_span(deps, salvaged):
            handler._retry(deps, salvaged, exc, started)
    except RetryDelivery as retry:
        return retry
    except Exception:  # not even the deps or the log line: still redeliver
        logger.exception("%s: retry after an error that escaped the runtime", handler.consumer)
    return RetryDelivery()


@dataclass(frozen=True)
class _RawDelivery:
    """The request body, in the shape :func:`salvage_cloudevent` reads."""

    data: bytes


def _message_from_raw(raw: bytes, path: str) -> PubsubMessage | None:
    """A push envelope functions-framework refused but we can read, else None."""
    try:
        envelope = json.loads(raw)
    except (ValueError, RecursionError):
        return None
    if not isinstance(envelope, Mapping):
        return None
    try:
        return message_from_envelope(envelope, source=path, trace=request_traceparent())
    except (InvalidEventError, ValueError, TypeError):
        return None
