"""OpenTelemetry for sight-ops: one trace per release, from build to Slack (docs/release.md).

Every delivery (a Pub/Sub message, an HTTP request) is one span, named
``<consumer> <event type>``. Its parent is, in this order:

1. the ``traceparent`` Pub/Sub attribute (W3C trace context, set by :class:`Publisher` on
   everything published during a delivery): the trace goes on;
2. the release the message belongs to (its ``release_id`` attribute, else derived from
   the event: a Cloud Build notification's ``_SERVICE`` and commit): a root span in the
   release's trace, whose id is ``shared.release.release_trace_id`` -- so a build
   message, which carries no trace context, still joins its release's trace;
3. the request's ``traceparent`` / ``X-Cloud-Trace-Context`` header;
4. nothing: a new trace.

While a span is open, :func:`current` says which trace and release it is: log lines
(``shared.log``), ``ops.actions`` rows (``write_action``) and published messages
(``shared.pubsub``) read it from there, so no handler passes ids around.

OpenTelemetry is imported by the first span (``Deps.tracing``), never by ``import main``.
Exporters: ``gcp`` (Cloud Trace, batched and flushed at the end of each delivery), ``local``
(JSON lines appended to one file, one span a line, shared by every process of
``make dev``; :func:`read_spans` reads it back), ``none`` (spans are made, not kept).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from shared.log import SAMPLED_KEY, SPAN_KEY, TRACE_KEY
from shared.release import (
    RELEASE_ATTRIBUTE,
    TRACEPARENT_ATTRIBUTE,
    TRACESTATE_ATTRIBUTE,
    is_release_id,
    release_id,
    release_trace_id,
)

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
    from opentelemetry.sdk.trace.export import SpanExportResult
    from opentelemetry.trace import Span

    from shared.settings import Settings

logger = logging.getLogger("sightops.trace")

Exporter = Literal["gcp", "local", "none"]
SpanKindName = Literal["consumer", "server", "producer", "client", "internal"]
AttributeValue = str | bool | int | float

#: Outcomes that mark a delivery's span as an error (docs/architecture.md, the runtime).
ERROR_OUTCOMES = frozenset({"retry", "failed", "rejected", "internal", "unavailable"})

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_HEX40 = re.compile(r"^[0-9a-fA-F]{12,40}$")


# ---- the current span, as the rest of the code sees it -------------------------------


@dataclass(frozen=True)
class TraceContext:
    """The span of the current delivery: what logs, actions and published messages carry."""

    trace_id: str  # 32 lowercase hex digits
    span_id: str  # 16 lowercase hex digits
    sampled: bool
    project: str
    release_id: str | None = None
    tracestate: str | None = None

    @property
    def traceparent(self) -> str:
        """W3C ``traceparent`` naming this span as the parent."""
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    @property
    def cloud_trace(self) -> str:
        """Cloud Logging's ``logging.googleapis.com/trace`` value."""
        return f"projects/{self.project}/traces/{self.trace_id}"

    def log_fields(self) -> dict[str, Any]:
        """Cloud Logging's special fields tying a log line to this span."""
        return {TRACE_KEY: self.cloud_trace, SPAN_KEY: self.span_id, SAMPLED_KEY: self.sampled}


_CURRENT: ContextVar[TraceContext | None] = ContextVar("sightops_trace", default=None)
_ACTIVE_SPAN: ContextVar[Span | None] = ContextVar("sightops_span", default=None)
#: The trace id the next root span must have (read by :class:`_ReleaseIdGenerator`).
_FORCED_TRACE_ID: ContextVar[int | None] = ContextVar("sightops_forced_trace", default=None)


def current() -> TraceContext | None:
    """The span of the delivery running in this context, if any."""
    return _CURRENT.get()


def set_outcome(outcome: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
    """Record a delivery's outcome (and more ``attributes``) on its span; the outcomes
    that are failures set an error status."""
    span = _ACTIVE_SPAN.get()
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("outcome", outcome)
    for key, value in (attributes or {}).items():
        span.set_attribute(key, value)
    if outcome in ERROR_OUTCOMES:
        span.set_status(Status(StatusCode.ERROR, outcome))


def outgoing_attributes(attributes: Mapping[str, str] | None) -> dict[str, str]:
    """``attributes`` of a message published now, with the current release and trace.

    ``release_id`` is added when the message names none. ``traceparent`` (and
    ``tracestate``) when the message names none and belongs to the same release as the
    current span (or to none): a message of *another* release is left to join that
    release's trace at its consumer (rule 2 above), never this one."""
    out = dict(attributes or {})
    trace = _CURRENT.get()
    if trace is None:
        return out
    release = out.get(RELEASE_ATTRIBUTE) or None
    if release is None and trace.release_id:
        out[RELEASE_ATTRIBUTE] = release = trace.release_id
    if TRACEPARENT_ATTRIBUTE not in out and release in (None, trace.release_id):
        out[TRACEPARENT_ATTRIBUTE] = trace.traceparent
        if trace.tracestate:
            out[TRACESTATE_ATTRIBUTE] = trace.tracestate
    return out


# ---- ids ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Traceparent:
    trace_id: str
    span_id: str  # all zeros: a trace id without a parent span (X-Cloud-Trace-Context)
    sampled: bool


def parse_traceparent(value: str | None) -> Traceparent | None:
    """A valid W3C ``traceparent``, else None (never raises: the value is untrusted)."""
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.match(value.strip().lower())
    if not match:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or int(trace_id, 16) == 0:
        return None
    return Traceparent(trace_id, span_id, bool(int(flags, 16) & 1))


def release_of(event: object, attributes: Mapping[str, str]) -> str | None:
    """The release a message belongs to: its ``release_id`` attribute, else what the
    event says (our events' ``release_id``; a build's ``_SERVICE`` and commit, from its
    substitutions or, failing that, its source). Only a well-formed id counts."""
    given = attributes.get(RELEASE_ATTRIBUTE)
    if given and is_release_id(given):
        return given
    for candidate in (event, getattr(event, "data", None)):
        if candidate is None:
            continue
        explicit = getattr(candidate, "release_id", None)
        if isinstance(explicit, str) and is_release_id(explicit):
            return explicit
        service = getattr(candidate, "service", None)
        commit = getattr(candidate, "commit_sha", None) or _source_commit(candidate)
        if isinstance(service, str) and isinstance(commit, str) and _HEX40.match(commit):
            found = release_id(service, commit)
            if is_release_id(found):
                return found
    return None


def _source_commit(build: object) -> str | None:
    """A Cloud Build resource's commit from ``sourceProvenance`` or ``source``."""
    for holder, keys in (
        (getattr(build, "source_provenance", None), ("resolvedRepoSource", "resolvedGitSource")),
        (getattr(build, "source", None), ("repoSource", "gitSource")),
    ):
        if not isinstance(holder, Mapping):
            continue
        for key in keys:
            section = holder.get(key)
            if isinstance(section, Mapping):
                value = section.get("commitSha") or section.get("revision")
                if isinstance(value, str) and _HEX40.match(value):
                    return value
    return None


def exporter_for(settings: Settings) -> Exporter:
    """``TRACE__EXPORTER``, else ``gcp`` in production, ``none`` in tests, ``local``."""
    if settings.trace.exporter is not None:
        return settings.trace.exporter
    return {"production": "gcp", "test": "none"}.get(settings.environment, "local")  # type: ignore[return-value]


def local_file_for(settings: Settings) -> Path:
    """``TRACE__LOCAL_FILE``, else ``$SIGHTOPS_STATE/spans.jsonl`` (``<repo>/.local``)."""
    if settings.trace.local_file is not None:
        return settings.trace.local_file
    state = os.environ.get("SIGHTOPS_STATE")
    root = Path(state) if state else Path(__file__).resolve().parents[1] / ".local"
    return root / "spans.jsonl"


# ---- the provider ---------------------------------------------------------------------


class Tracing:
    """One TracerProvider with its exporter (``Deps.tracing``: one per process)."""

    def __init__(self, settings: Settings, *, service: str | None = None) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

        self.project = settings.gcp_project
        self.exporter: Exporter = exporter_for(settings)
        self._flush_ms = settings.trace.flush_timeout_ms
        self._batched = False
        name = service or os.environ.get("K_SERVICE") or "sight-ops"
        self.provider: TracerProvider = TracerProvider(
            sampler=ParentBased(TraceIdRatioBased(settings.trace.sample_ratio)),
            resource=Resource.create({"service.name": name}),
            id_generator=_release_id_generator(),
            shutdown_on_exit=False,
        )
        try:
            self._add_exporter(settings)
        except Exception as exc:  # tracing must never stop a delivery
            logger.error(  # noqa: TRY400 (no traceback: one line that says what to fix)
                "trace exporter %s unavailable (%s: %s): spans are not exported",
                self.exporter,
                type(exc).__name__,
                exc,
            )
        self._tracer = self.provider.get_tracer("sightops")

    def _add_exporter(self, settings: Settings) -> None:
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

        if self.exporter == "local":
            path = local_file_for(settings)
            self.provider.add_span_processor(SimpleSpanProcessor(_local_exporter(path)))
        elif self.exporter == "gcp":
            self.provider.add_span_processor(BatchSpanProcessor(gcp_exporter(settings)))
            self._batched = True

    @contextmanager
    def span(
        self,
        name: str,
        *,
        kind: SpanKindName = "internal",
        traceparent: str | None = None,
        tracestate: str | None = None,
        release: str | None = None,
        fallback: str | None = None,
        attributes: Mapping[str, AttributeValue | None] | None = None,
        start_ns: int | None = None,
        new_trace: bool = True,
    ) -> Iterator[TraceContext]:
        """A span made current for the block: parent chosen as the module doc says
        (``traceparent`` > ``release`` > ``fallback``); with none of them, a new trace
        (``new_trace``) or a child of the current span."""
        from opentelemetry import context as otel_context
        from opentelemetry import trace as otel_trace

        parent, forced = _parent(traceparent, tracestate, release, fallback)
        if parent is None and (new_trace or forced is not None):
            parent = otel_context.Context()
        values = {k: v for k, v in (attributes or {}).items() if v is not None}
        if release:
            values[RELEASE_ATTRIBUTE] = release
        forced_token = _FORCED_TRACE_ID.set(forced)
        try:
            span = self._tracer.start_span(
                name,
                context=parent,
                kind=getattr(otel_trace.SpanKind, kind.upper()),
                attributes=values,
                start_time=start_ns,
            )
        finally:
            _FORCED_TRACE_ID.reset(forced_token)
        context = span.get_span_context()
        state = context.trace_state.to_header() if context.trace_state else None
        trace = TraceContext(
            trace_id=otel_trace.format_trace_id(context.trace_id),
            span_id=otel_trace.format_span_id(context.span_id),
            sampled=context.trace_flags.sampled,
            project=self.project,
            release_id=release,
            tracestate=state or None,
        )
        otel_token = otel_context.attach(otel_trace.set_span_in_context(span))
        tokens = (_CURRENT.set(trace), _ACTIVE_SPAN.set(span))
        try:
            yield trace
        except BaseException as exc:
            if span.is_recording() and not _has_status(span):
                span.set_status(otel_trace.Status(otel_trace.StatusCode.ERROR, type(exc).__name__))
            raise
        finally:
            _ACTIVE_SPAN.reset(tokens[1])
            _CURRENT.reset(tokens[0])
            otel_context.detach(otel_token)
            span.end()
            if self._batched:
                self.provider.force_flush(self._flush_ms)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _has_status(span: Span) -> bool:
    status = getattr(span, "status", None)
    return status is not None and not status.is_unset


def _parent(
    traceparent: str | None, tracestate: str | None, release: str | None, fallback: str | None
) -> tuple[Any, int | None]:
    """``(parent context or None, trace id a new root span must have or None)``."""
    incoming = parse_traceparent(traceparent)
    if incoming is not None and int(incoming.span_id, 16):
        return _remote(incoming, tracestate), None
    if release:
        return None, int(release_trace_id(release), 16)
    if incoming is not None:  # a trace id alone
        return None, int(incoming.trace_id, 16)
    header = parse_traceparent(fallback)
    if header is None:
        return None, None
    if int(header.span_id, 16):
        return _remote(header, None), None
    return None, int(header.trace_id, 16)


def _remote(parent: Traceparent, tracestate: str | None) -> Any:
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([tracestate]) if tracestate else TraceState()
    context = SpanContext(
        trace_id=int(parent.trace_id, 16),
        span_id=int(parent.span_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED if parent.sampled else TraceFlags.DEFAULT),
        trace_state=state,
    )
    return otel_trace.set_span_in_context(NonRecordingSpan(context))


def _release_id_generator() -> Any:
    """Random ids, except a root span's trace id when a release (or header) chose it."""
    from opentelemetry.sdk.trace.id_generator import RandomIdGenerator

    class ReleaseIdGenerator(RandomIdGenerator):
        def generate_trace_id(self) -> int:
            forced = _FORCED_TRACE_ID.get()
            return forced if forced else super().generate_trace_id()

        def is_trace_id_random(self) -> bool:
            return False  # a release's trace id is derived, not drawn (W3C "random" flag)

    return ReleaseIdGenerator()


def gcp_exporter(settings: Settings) -> Any:
    """Cloud Trace's exporter: Google's endpoint with Application Default Credentials, or
    ``TRACE__ENDPOINT`` (REST, anonymous) for a local server speaking its wire format."""
    from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

    client = None
    if settings.trace.endpoint:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud.trace_v2 import TraceServiceClient

        client = TraceServiceClient(
            transport="rest",
            client_options={"api_endpoint": settings.trace.endpoint},
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        )
    with warnings.catch_warnings():
        # Deprecated in favour of OTLP to telemetry.googleapis.com (docs/release.md,
        # "Production"); still the exporter the issue asks for, and still supported.
        warnings.simplefilter("ignore", DeprecationWarning)
        return CloudTraceSpanExporter(  # type: ignore[no-untyped-call]
            project_id=settings.gcp_project, client=client
        )


# ---- the local exporter and its reader --------------------------------------------------

_KINDS = {0: "internal", 1: "server", 2: "client", 3: "producer", 4: "consumer"}


def _local_exporter(path: Path) -> Any:
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    class LocalSpanExporter(SpanExporter):
        """Appends one JSON line per span to ``path``: one ``write`` per batch on a file
        opened ``O_APPEND``, so the processes of ``make dev`` share it without
        interleaving lines."""

        def __init__(self) -> None:
            self._lock = threading.Lock()
            self._fd: int | None = None

        def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
            data = "".join(json.dumps(span_record(s), separators=(",", ":")) + "\n" for s in spans)
            try:
                with self._lock:
                    if self._fd is None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                    _write_all(self._fd, data.encode())
            except OSError as exc:
                logger.warning("spans not written to %s: %s", path, exc)
                return SpanExportResult.FAILURE
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            with self._lock:
                if self._fd is not None:
                    os.close(self._fd)
                    self._fd = None

    return LocalSpanExporter()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def span_record(span: ReadableSpan) -> dict[str, Any]:
    """One finished span as a line of the local file (what :class:`SpanRecord` reads)."""
    context = span.context
    parent = span.parent
    start, end = span.start_time or 0, span.end_time or 0
    return {
        "trace_id": f"{context.trace_id:032x}" if context else None,
        "span_id": f"{context.span_id:016x}" if context else None,
        "parent_span_id": f"{parent.span_id:016x}" if parent else None,
        "name": span.name,
        "kind": _KINDS.get(span.kind.value, "internal"),
        "start_ns": start,
        "end_ns": end,
        "duration_ms": round((end - start) / 1e6, 3),
        "status": span.status.status_code.name,
        "service": span.resource.attributes.get("service.name"),
        "sampled": bool(context and context.trace_flags.sampled),
        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
    }


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


@dataclass(frozen=True)
class SpanRecord:
    """A span read back from the local file."""

    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    start: datetime
    end: datetime
    duration_ms: float
    status: str
    service: str | None
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> SpanRecord:
        return cls(
            trace_id=str(raw["trace_id"]),
            span_id=str(raw["span_id"]),
            parent_span_id=raw.get("parent_span_id"),
            name=str(raw["name"]),
            kind=str(raw.get("kind", "internal")),
            start=datetime.fromtimestamp(int(raw["start_ns"]) / 1e9, UTC),
            end=datetime.fromtimestamp(int(raw["end_ns"]) / 1e9, UTC),
            duration_ms=float(raw.get("duration_ms", 0.0)),
            status=str(raw.get("status", "UNSET")),
            service=raw.get("service"),
            attributes=dict(raw.get("attributes") or {}),
        )


def read_spans(path: Path | str, trace_id: str | None = None) -> list[SpanRecord]:
    """The spans in a local span file (of one trace, if given), by start time. A line
    being written by another process, or damaged, is skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return []
    found: list[SpanRecord] = []
    for line in text.splitlines():
        if trace_id is not None and trace_id not in line:
            continue  # cheap pre-filter; the parsed id decides
        try:
            record = SpanRecord.from_json(json.loads(line))
        except (ValueError, KeyError, TypeError):
            continue
        if trace_id is None or record.trace_id == trace_id:
            found.append(record)
    return sorted(found, key=lambda r: r.start)
