"""Cloud Logging API v2 stand-in: ``LoggingServiceV2.ListLogEntries`` over real gRPC, for
Cloud Run's request logs.

The official GAPIC ``LoggingServiceV2Client`` runs against it unmodified through an
insecure channel (``LoggingServiceV2GrpcTransport(channel=grpc.insecure_channel(target))``).
Like the Monitoring stand-in, it is fed by *real* requests: the Cloud Run stand-in's
router (or anyone, through ``POST /_admin/record``) calls :meth:`LoggingState.record` once
per request a revision answers, and each becomes the LogEntry Cloud Run writes: log
``run.googleapis.com/requests`` on resource ``cloud_run_revision`` (``project_id``,
``service_name``, ``revision_name``, ``location``, ``configuration_name``) with
``httpRequest`` (method, URL, status, latency, protocol), ``severity`` (INFO, WARNING for
a 4xx, ERROR for a 5xx), ``timestamp``, ``receiveTimestamp`` and a unique ``insertId``.

What the real API does and this stand-in reproduces (docs/standins.md, "Cloud Logging"):
``resourceNames`` (projects and log views), ``pageSize`` (default 50, at most 1000; a
negative or larger one is ``INVALID_ARGUMENT``), ``pageToken`` (good only for the same
query), ``orderBy`` ``timestamp asc`` (the default) or ``timestamp desc``, and a subset of
the Logging query language (:func:`parse_query`) with ``sample(field, fraction)``,
deterministic per value like the real one. Faults use the stand-ins' fault rules,
matched against the gRPC method path; an optional read quota answers
``RESOURCE_EXHAUSTED`` as the real per-minute quota does. Memory is bounded: the oldest
entries are dropped past ``max_entries``.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
import random
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flask import Flask, Response, request
from google.cloud.logging_v2.types import ListLogEntriesRequest, ListLogEntriesResponse, LogEntry
from google.logging.type import log_severity_pb2
from google.protobuf import json_format

from standins._common import (
    JSON,
    Clock,
    FaultInjection,
    FaultsAndLog,
    StandinError,
    check_served,
    json_response,
    recorder_admin_app,
    utcnow,
)
from standins._filter import FilterTokens
from standins._grpc import (
    US,
    GrpcServer,
    fingerprint,
    invalid,
    one_method,
    read_token,
    serve,
    ts,
    us,
    write_token,
)

logger = logging.getLogger("standins.logging")

SERVICE = "google.logging.v2.LoggingServiceV2"
LIST_LOG_ENTRIES = f"/{SERVICE}/ListLogEntries"
REQUESTS_LOG = "run.googleapis.com/requests"
RESOURCE_TYPE = "cloud_run_revision"
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000
MAX_ENTRIES = 200_000

_Request: Any = ListLogEntriesRequest.pb()
_Response: Any = ListLogEntriesResponse.pb()
_LogEntry: Any = LogEntry.pb()
_SEVERITIES: dict[str, int] = dict(log_severity_pb2.LogSeverity.items())
_RESOURCE_NAME = re.compile(r"projects/([^/]+)(?:/locations/[^/]+/buckets/[^/]+/views/[^/]+)?")
#: ``resource.labels.K`` of a ``cloud_run_revision`` -> the entry's attribute holding it
_LABEL_ATTRIBUTES = {
    "project_id": "project",
    "service_name": "service",
    "revision_name": "revision",
    "location": "location",
    "configuration_name": "service",
}


def request_log_name(project: str) -> str:
    """The request log's ``logName`` (its id URL-encoded, as the API writes it)."""
    return f"projects/{project}/logs/{REQUESTS_LOG.replace('/', '%2F')}"


def _severity(status: int) -> int:
    """Cloud Run's severity of a request entry: ERROR for a 5xx, WARNING for a 4xx."""
    if status >= 500:
        return _SEVERITIES["ERROR"]
    return _SEVERITIES["WARNING"] if status >= 400 else _SEVERITIES["INFO"]


@dataclass(frozen=True, slots=True)
class _Entry:
    """One request entry, kept small (a few hundred bytes; protobuf only on the way out)."""

    seq: int
    at: int  # timestamp, microseconds since the epoch
    received: int  # receiveTimestamp
    insert_id: str
    project: str
    location: str
    service: str
    revision: str
    status: int
    latency: int | None  # microseconds; None: the entry has no latency
    method: str
    url: str

    @property
    def key(self) -> tuple[int, int]:
        return self.at, self.seq

    def to_pb(self) -> Any:
        entry = _LogEntry(
            log_name=request_log_name(self.project),
            insert_id=self.insert_id,
            severity=_severity(self.status),
        )
        entry.resource.type = RESOURCE_TYPE
        entry.resource.labels.update(
            {label: getattr(self, name) for label, name in _LABEL_ATTRIBUTES.items()}
        )
        entry.timestamp.CopyFrom(ts(self.at))
        entry.receive_timestamp.CopyFrom(ts(self.received))
        http = entry.http_request
        http.request_method = self.method
        http.request_url = self.url
        http.status = self.status
        http.protocol = "HTTP/1.1"
        if self.latency is not None:
            http.latency.seconds, micros = divmod(self.latency, US)
            http.latency.nanos = micros * 1000
        return entry


def _entry_key(entry: _Entry) -> tuple[int, int]:
    return entry.key


def _entry_time(entry: _Entry) -> int:
    return entry.at


# --------------------------------------------------------------------------- filters

Predicate = Callable[[_Entry], bool]
_Bound = tuple[str, int]  # a top-level ``timestamp op ns``: narrows the scan

_STRING_FIELDS: dict[str, Callable[[_Entry], str]] = {
    "logName": lambda e: request_log_name(e.project),
    "insertId": lambda e: e.insert_id,
    "resource.type": lambda _e: RESOURCE_TYPE,
    "httpRequest.requestMethod": lambda e: e.method,
    "httpRequest.requestUrl": lambda e: e.url,
}
_NUMBER_FIELDS: dict[str, Callable[[_Entry], int]] = {
    "timestamp": lambda e: e.at * 1000,  # times compare in nanoseconds, as the API's
    "receiveTimestamp": lambda e: e.received * 1000,
    "httpRequest.status": lambda e: e.status,
    "severity": lambda e: _severity(e.status),
}
_LABEL = re.compile(r"resource\.labels\.([A-Za-z0-9_]+)")
_FRACTION = re.compile(r"\.(\d+)")
_ORDERING: dict[str, Callable[[Any, Any], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
}


def _string_field(name: str) -> Callable[[_Entry], str] | None:
    label = _LABEL.fullmatch(name)
    if label is None:
        return _STRING_FIELDS.get(name)
    attribute = _LABEL_ATTRIBUTES.get(label.group(1))
    if attribute is None:
        return lambda _e: ""  # a label the resource does not have: absent, empty
    return lambda e: str(getattr(e, attribute))


def _time_value(text: str) -> int:
    """An RFC 3339 time in nanoseconds since the epoch (to the nanosecond, as written)."""
    digits = ""

    def cut(match: re.Match[str]) -> str:
        nonlocal digits
        digits = match.group(1)[:9].ljust(9, "0")
        return ""

    whole = _FRACTION.sub(cut, text.replace("Z", "+00:00"), count=1)
    try:
        moment = datetime.fromisoformat(whole)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not an RFC 3339 time") from exc
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone (write Z or an offset)")
    return us(moment) * 1000 + int(digits or "0")


def sample_hash(value: str) -> float:
    """Where ``sample(field, f)`` puts a value in [0, 1): the entry is in the sample when
    this is below ``f`` (deterministic per value, like the real function)."""
    digest = hashlib.sha256(value.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Query:
    """A parsed filter: the predicate and the time range its top-level conjuncts allow."""

    predicate: Predicate
    earliest: int | None = None  # nanoseconds; entries before it cannot match
    latest: int | None = None  # nor entries after it


class _QueryParser(FilterTokens):
    """The Logging query language, as far as the stand-in serves it: comparisons
    ``field op value`` (``=``, ``!=``, ``:``, ``<``, ``<=``, ``>``, ``>=``) on the fields of
    a request entry, ``sample(field, fraction)``, ``NOT``, ``OR``, ``AND`` (or none: terms
    side by side are a conjunction), parentheses. As in the real language, ``NOT`` binds
    tightest, then ``OR``, then ``AND``; string comparisons ignore case."""

    def parse(self) -> Query:
        if not self.tokens:
            return Query(lambda _e: True)
        parts = self._terms()
        if self._peek()[0] != "end":
            raise ValueError(f"unexpected {self._peek()[1]!r}")
        earliest: int | None = None
        latest: int | None = None
        for _predicate, bound in parts:
            if bound is None:
                continue
            op, value = bound
            if op in (">", ">=", "="):
                earliest = value if earliest is None else max(earliest, value)
            if op in ("<", "<=", "="):
                latest = value if latest is None else min(latest, value)
        return Query(_all([p for p, _b in parts]), earliest, latest)

    def _terms(self) -> list[tuple[Predicate, _Bound | None]]:
        """A conjunction: disjunctions joined by ``AND`` or side by side."""
        parts = [self._disjunction()]
        while self._accept("word", "AND") or self._starts_term():
            parts.append(self._disjunction())
        return parts

    def _starts_term(self) -> bool:
        """A term follows with no operator before it: an implicit ``AND``."""
        kind, text = self._peek()
        return (kind == "word" and text != "OR") or (kind, text) == ("punct", "(")

    def _disjunction(self) -> tuple[Predicate, _Bound | None]:
        parts = [self._unary()]
        while self._accept("word", "OR"):
            parts.append(self._unary())
        if len(parts) == 1:
            return parts[0]
        predicates = [p for p, _b in parts]
        return (lambda e: any(p(e) for p in predicates)), None

    def _unary(self) -> tuple[Predicate, _Bound | None]:
        if self._accept("word", "NOT"):
            inner, _bound = self._unary()
            return (lambda e: not inner(e)), None
        if self._accept("punct", "("):
            inner_parts = self._terms()
            self._take("punct", ")")
            return _all([p for p, _b in inner_parts]), None
        if self._peek() == ("word", "sample"):
            return self._sample(), None
        return self._comparison()

    def _sample(self) -> Predicate:
        self._take("word", "sample")
        self._take("punct", "(")
        name = self._take("word")
        field = _string_field(name)
        if field is None:
            raise ValueError(f"sample() of an unknown field {name!r}")
        self._take("punct", ",")
        fraction = float(self._take("number"))
        self._take("punct", ")")
        if not 0.0 <= fraction <= 1.0:
            raise ValueError(f"sample() takes a fraction in [0, 1], not {fraction:g}")
        return lambda e: sample_hash(field(e)) < fraction

    def _value(self) -> str:
        kind, token = self._peek()
        if kind == "string":
            self.pos += 1
            return str(json.loads(token))
        if kind == "number" or (kind == "word" and token not in ("AND", "OR", "NOT")):
            self.pos += 1
            return token
        raise ValueError(f"expected a value, found {token!r}")

    def _comparison(self) -> tuple[Predicate, _Bound | None]:
        name = self._take("word")
        op = self._take("op")
        text = self._value()
        strings = _string_field(name)
        if strings is not None:
            return _compare_strings(strings, op, text.casefold()), None
        numbers = _NUMBER_FIELDS.get(name)
        if numbers is None:
            raise ValueError(f"the stand-in does not serve the field {name!r}")
        if op == ":":
            raise ValueError(f"{name} cannot take ':'")
        if name in ("timestamp", "receiveTimestamp"):
            value = _time_value(text)
        elif name == "severity":
            value = _SEVERITIES.get(text.upper(), -1) if not text.isdigit() else int(text)
            if value < 0:
                raise ValueError(f"{text!r} is not a severity")
        else:
            try:
                value = int(text)
            except ValueError as exc:
                raise ValueError(f"{name} takes a whole number, not {text!r}") from exc
        compare = _ORDERING[op]
        bound = (op, value) if name == "timestamp" and op != "!=" else None
        return (lambda e: compare(numbers(e), value)), bound


def _all(predicates: list[Predicate]) -> Predicate:
    if len(predicates) == 1:
        return predicates[0]
    return lambda e: all(p(e) for p in predicates)


def _compare_strings(field: Callable[[_Entry], str], op: str, value: str) -> Predicate:
    if op == ":":
        return lambda e: value in field(e).casefold()
    compare = _ORDERING[op]
    return lambda e: compare(field(e).casefold(), value)


def parse_query(text: str) -> Query:
    """A filter as a :class:`Query`, or INVALID_ARGUMENT naming the problem."""
    try:
        return _QueryParser(text).parse()
    except ValueError as exc:
        raise StandinError(400, f'Invalid filter "{text}": {exc}') from exc


# --------------------------------------------------------------------------- the state


class LoggingState(FaultInjection):
    """Cloud Run request entries recorded from real requests; every method is
    thread-safe.

    ``max_entries`` bounds memory (the oldest entries are dropped; ``dropped`` counts
    them); ``visibility_delay_s`` hides entries received less than that long ago (Cloud
    Logging shows request logs within seconds: 0 by default); ``list_quota_per_minute``
    answers ``RESOURCE_EXHAUSTED`` past that many ListLogEntries calls in 60 s (the real
    API's read quota; None: no quota). ``seed`` makes the insertIds, and with them
    ``sample()``, reproducible.
    """

    def __init__(
        self,
        *,
        clock: Clock = utcnow,
        max_entries: int = MAX_ENTRIES,
        visibility_delay_s: float = 0.0,
        list_quota_per_minute: int | None = None,
        project_number: str = "123456789012",
        seed: int | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.log = FaultsAndLog(self._lock, clock)
        self._entries: list[_Entry] = []  # by (timestamp, seq)
        self._seq = 0
        self._salt = random.Random(seed).getrandbits(24)
        self._calls: deque[int] = deque()
        self.dropped = 0
        self.project_number = project_number
        self.max_entries = max_entries
        self.visibility_delay_s = visibility_delay_s
        self.list_quota_per_minute = list_quota_per_minute
        self.configure()

    def configure(
        self,
        *,
        max_entries: int | None = None,
        visibility_delay_s: float | None = None,
        list_quota_per_minute: int | None = None,
        no_quota: bool = False,
    ) -> JSON:
        """Change the settings given (``no_quota``: lift the read quota); the current
        settings as JSON."""
        with self._lock:
            if max_entries is not None:
                self.max_entries = max_entries
            if visibility_delay_s is not None:
                self.visibility_delay_s = visibility_delay_s
            if list_quota_per_minute is not None or no_quota:
                self.list_quota_per_minute = None if no_quota else list_quota_per_minute
            if self.max_entries < 1 or self.visibility_delay_s < 0:
                raise ValueError("max_entries must be >= 1 and visibility_delay_s >= 0")
            if self.list_quota_per_minute is not None and self.list_quota_per_minute < 1:
                raise ValueError("list_quota_per_minute must be >= 1")
            self._trim()
            return {
                "max_entries": self.max_entries,
                "visibility_delay_s": self.visibility_delay_s,
                "list_quota_per_minute": self.list_quota_per_minute,
                "entries": len(self._entries),
                "dropped": self.dropped,
            }

    # ----------------------------------------------------------------- ingestion

    def record(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        status_code: int,
        latency_ms: float | None,
        at: datetime | None = None,
        *,
        method: str = "GET",
        url: str | None = None,
    ) -> None:
        """One request served by ``revision``: its request entry, stamped ``at``
        (default: now) and received now (``latency_ms`` None: an entry without latency,
        as Cloud Run writes for a request that never completed)."""
        check_served(status_code, latency_ms)
        with self._lock:
            now = us(self._clock())
            moment = us(at) if at is not None else now
            self._seq += 1
            entry = _Entry(
                seq=self._seq,
                at=moment,
                received=max(now, moment),
                insert_id=f"{moment // US:08x}{self._salt:06x}{self._seq:010x}",
                project=project,
                location=location,
                service=service,
                revision=revision,
                status=int(status_code),
                latency=None if latency_ms is None else round(latency_ms * 1000),
                method=method,
                url=url or f"https://{service}-{self.project_number}.{location}.run.app/",
            )
            if not self._entries or self._entries[-1].key <= entry.key:
                self._entries.append(entry)
            else:
                bisect.insort(self._entries, entry, key=_entry_key)
            self._trim()

    def _trim(self) -> None:
        excess = len(self._entries) - self.max_entries
        if excess > 0:
            del self._entries[:excess]
            self.dropped += excess

    def reset(self) -> None:
        with self._lock:
            self._entries.clear()
            self._calls.clear()
            self.dropped = 0
            self.log.reset()

    def entries(self, service: str | None = None, revision: str | None = None) -> list[JSON]:
        """The entries kept (oldest first) in the API's JSON -- for tests and curl."""
        with self._lock:
            kept = list(self._entries)
        return [
            json_format.MessageToDict(e.to_pb())
            for e in kept
            if (service is None or e.service == service)
            and (revision is None or e.revision == revision)
        ]

    # ----------------------------------------------------------------- ListLogEntries

    def _charge_quota(self) -> None:
        with self._lock:
            quota = self.list_quota_per_minute
            if quota is None:
                return
            now = us(self._clock())
            while self._calls and self._calls[0] <= now - 60 * US:
                self._calls.popleft()
            if len(self._calls) >= quota:
                raise StandinError(
                    429,
                    "Quota exceeded for quota metric 'Read requests' and limit 'Read "
                    f"requests per minute' of service 'logging.googleapis.com' for consumer "
                    f"'project_number:{self.project_number}'.",
                )
            self._calls.append(now)

    def list_log_entries(self, req: Any) -> Any:
        """A ``ListLogEntriesRequest`` (protobuf) -> ``ListLogEntriesResponse``."""
        projects = _projects(req.resource_names)
        if req.page_size < 0 or req.page_size > MAX_PAGE_SIZE:
            raise invalid("pageSize", str(req.page_size), f"must be 0..{MAX_PAGE_SIZE}")
        size = req.page_size or DEFAULT_PAGE_SIZE
        descending = _descending(req.order_by)
        query = parse_query(req.filter)
        query_id = fingerprint(req)
        after = read_token(req.page_token, query_id)
        self._charge_quota()
        with self._lock:
            visible_until = us(self._clock()) - round(self.visibility_delay_s * US)
            entries = self._entries
            low = 0 if query.earliest is None else _left(entries, query.earliest // 1000)
            high = len(entries) if query.latest is None else _right(entries, query.latest // 1000)
            if after is not None and not descending:
                low = max(low, bisect.bisect_right(entries, after, key=_entry_key))
            elif after is not None:
                high = min(high, bisect.bisect_left(entries, after, key=_entry_key))
            candidates = entries[low:high]
        if descending:
            candidates.reverse()
        found: list[_Entry] = []
        more = False
        for entry in candidates:
            if entry.project not in projects or entry.received > visible_until:
                continue
            if not query.predicate(entry):
                continue
            if len(found) == size:
                more = True
                break
            found.append(entry)
        response = _Response()
        response.entries.extend(e.to_pb() for e in found)
        if more:
            response.next_page_token = write_token(found[-1].at, found[-1].seq, query_id)
        return response


def _left(entries: list[_Entry], moment: int) -> int:
    return bisect.bisect_left(entries, moment, key=_entry_time)


def _right(entries: list[_Entry], moment: int) -> int:
    return bisect.bisect_right(entries, moment, key=_entry_time)


def _projects(names: Any) -> set[str]:
    """The projects of ``resourceNames``: ``projects/P`` or a log view of P."""
    if not names:
        raise invalid("resourceNames", "", "at least one resource name is required")
    out: set[str] = set()
    for name in names:
        match = _RESOURCE_NAME.fullmatch(name)
        if match is None:
            raise invalid(
                "resourceNames",
                name,
                "expected projects/P or projects/P/locations/L/buckets/B/views/V",
            )
        out.add(match.group(1))
    return out


def _descending(order_by: str) -> bool:
    words = order_by.split()
    if words in ([], ["timestamp"], ["timestamp", "asc"]):
        return False
    if words == ["timestamp", "desc"]:
        return True
    raise invalid("orderBy", order_by, 'must be "timestamp asc" or "timestamp desc"')


# --------------------------------------------------------------------------- gRPC


def grpc_handler(state: LoggingState) -> Any:
    """The ``google.logging.v2.LoggingServiceV2`` handler (only ListLogEntries; every
    other method answers UNIMPLEMENTED, as gRPC does for an unknown method)."""
    return one_method(
        SERVICE, "ListLogEntries", state.list_log_entries, (_Request, _Response), state.log, logger
    )


def serve_grpc(state: LoggingState, host: str = "127.0.0.1", port: int = 0) -> GrpcServer:
    """Serve LoggingServiceV2 on ``host:port`` (0 = any free port), insecure."""
    return serve(grpc_handler(state), host, port, "standin-logging")


# --------------------------------------------------------------------------- admin app


def _config_from_admin(body: Mapping[str, Any]) -> dict[str, Any]:
    settings: dict[str, Any] = {}
    if "max_entries" in body:
        settings["max_entries"] = int(body["max_entries"])
    if "visibility_delay_s" in body:
        settings["visibility_delay_s"] = float(body["visibility_delay_s"])
    if "list_quota_per_minute" in body:
        quota = body["list_quota_per_minute"]
        if quota is None:
            settings["no_quota"] = True
        else:
            settings["list_quota_per_minute"] = int(quota)
    return settings


def create_app(state: LoggingState | None = None) -> Flask:
    """The admin API (JSON under ``/_admin/``); the API itself is :func:`serve_grpc`'s."""
    st = state or LoggingState()
    app = recorder_admin_app("standins.logging", st, st.record, _config_from_admin)

    @app.get("/_admin/entries")
    def admin_entries() -> Response:
        found = st.entries(request.args.get("service"), request.args.get("revision"))
        return json_response({"entries": found, "dropped": st.dropped})

    return app


__all__ = [
    "LIST_LOG_ENTRIES",
    "MAX_PAGE_SIZE",
    "REQUESTS_LOG",
    "GrpcServer",
    "LoggingState",
    "Query",
    "create_app",
    "grpc_handler",
    "parse_query",
    "request_log_name",
    "sample_hash",
    "serve_grpc",
]
