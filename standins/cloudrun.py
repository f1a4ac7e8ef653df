"""Cloud Run Admin API v2 stand-in: services, revisions and long-running operations.

Speaks the REST wire format that ``google.cloud.run_v2`` (``transport="rest"``) sends and
expects -- proto3 JSON with camelCase field names, int64 values as strings, fields at
their default value omitted, enums as names or (when the client sends
``$alt=json;enum-encoding=int``, which the official REST transport always does) as
numbers. Request bodies are accepted with enums as names or numbers.

Implemented (``{svc}`` = ``projects/P/locations/L/services/S``):

- ``GET    /v2/{svc}``                                  -> Service
- ``PATCH  /v2/{svc}``  (UpdateService)                 -> Operation (long-running)
- ``GET    /v2/{svc}/revisions`` (pageSize, pageToken)  -> ListRevisionsResponse
- ``GET    /v2/{svc}/revisions/R``                      -> Revision
- ``GET    /v2/projects/P/locations/L/operations/O``    -> Operation (the LRO poll)
- ``POST   /v2/projects/P/locations/L/operations/O:wait`` -> Operation (completes it)
- ``DELETE /v2/projects/P/locations/L/operations/O``    -> Empty
- ``GET    /v2/projects/P/locations/L/operations``      -> ListOperationsResponse

Serving (when ``serve_base`` is set, docs/standins.md "Serving revisions"): the service
URI ``{serve_base}/_serve/P/L/S`` and each tag URL ``{serve_base}/_serve/P/L/TAG---S``
are answered here by forwarding to ``upstream`` (the Sight API stand-in), choosing the
revision by the traffic in effect (weighted, seeded) or by the tag, with the headers
``X-Standin-Revision`` / ``X-Standin-Image`` / ``X-Standin-Service``. With a recorder
(:meth:`CloudRunState.record_to`: the Cloud Monitoring stand-in's state, the Cloud Logging
one's, or both through :class:`Recorders`), every answer of a revision is recorded as
Cloud Run would count and log it: status and measured latency.

Admin API under ``/_admin/`` (JSON); the same operations are methods of
:class:`CloudRunState`. See ``docs/standins.md``.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import re
import string
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal, Protocol

from flask import Flask, Response, request

from standins._common import (
    JSON,
    RPC_CODES,
    Clock,
    FaultInjection,
    FaultRule,
    FaultsAndLog,
    SegmentConverter,
    StandinError,
    add_fault_admin_routes,
    admin_json,
    decode_enum,
    encode_enums,
    google_error,
    install_google_http_errors,
    install_request_hooks,
    json_response,
    parse_time,
    prune_defaults,
    rfc3339,
    utcnow,
    wants_int_enums,
)

logger = logging.getLogger("standins.cloudrun")

SERVICE_TYPE_URL = "type.googleapis.com/google.cloud.run.v2.Service"

LATEST = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
REVISION = "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION"
_TRAFFIC_PREFIX = "TRAFFIC_TARGET_ALLOCATION_TYPE_"

# Enum tables (name -> number), from the google.cloud.run.v2 / google.api protos.
TRAFFIC_TYPES: dict[str, int] = {
    "TRAFFIC_TARGET_ALLOCATION_TYPE_UNSPECIFIED": 0,
    LATEST: 1,
    REVISION: 2,
}
_CONDITION_STATES = {
    "STATE_UNSPECIFIED": 0,
    "CONDITION_PENDING": 1,
    "CONDITION_RECONCILING": 2,
    "CONDITION_FAILED": 3,
    "CONDITION_SUCCEEDED": 4,
}
_SEVERITIES = {"SEVERITY_UNSPECIFIED": 0, "ERROR": 1, "WARNING": 2, "INFO": 3}
_COMMON_REASONS = {
    "COMMON_REASON_UNDEFINED": 0,
    "UNKNOWN": 1,
    "REVISION_FAILED": 3,
    "PROGRESS_DEADLINE_EXCEEDED": 4,
    "CONTAINER_MISSING": 6,
    "CONTAINER_PERMISSION_DENIED": 7,
    "CONTAINER_IMAGE_UNAUTHORIZED": 8,
    "CONTAINER_IMAGE_AUTHORIZATION_CHECK_FAILED": 9,
    "ENCRYPTION_KEY_PERMISSION_DENIED": 10,
    "ENCRYPTION_KEY_CHECK_FAILED": 11,
    "SECRETS_ACCESS_CHECK_FAILED": 12,
    "WAITING_FOR_OPERATION": 13,
    "IMMEDIATE_RETRY": 14,
    "POSTPONED_RETRY": 15,
    "INTERNAL": 16,
}
_REVISION_REASONS = {
    "REVISION_REASON_UNDEFINED": 0,
    "PENDING": 1,
    "RESERVE": 2,
    "RETIRED": 3,
    "RETIRING": 4,
    "RECREATING": 5,
    "HEALTH_CHECK_CONTAINER_ERROR": 6,
    "CUSTOMIZED_PATH_RESPONSE_PENDING": 7,
    "MIN_INSTANCES_NOT_PROVISIONED": 8,
    "ACTIVE_REVISION_LIMIT_REACHED": 9,
    "NO_DEPLOYMENT": 10,
    "HEALTH_CHECK_SKIPPED": 11,
    "MIN_INSTANCES_WARMING": 12,
}
_LAUNCH_STAGES = {
    "LAUNCH_STAGE_UNSPECIFIED": 0,
    "UNIMPLEMENTED": 6,
    "PRELAUNCH": 7,
    "EARLY_ACCESS": 1,
    "ALPHA": 2,
    "BETA": 3,
    "GA": 4,
    "DEPRECATED": 5,
}
_INGRESS = {
    "INGRESS_TRAFFIC_UNSPECIFIED": 0,
    "INGRESS_TRAFFIC_ALL": 1,
    "INGRESS_TRAFFIC_INTERNAL_ONLY": 2,
    "INGRESS_TRAFFIC_INTERNAL_LOAD_BALANCER": 3,
    "INGRESS_TRAFFIC_NONE": 4,
}
# JSON key -> enum table, for ``$alt=json;enum-encoding=int`` answers. ``type`` is only
# converted for traffic types: a Condition's ``type`` is a free string ("Ready").
ENUM_TABLES: dict[str, dict[str, int]] = {
    "type": TRAFFIC_TYPES,
    "state": _CONDITION_STATES,
    "severity": _SEVERITIES,
    "reason": _COMMON_REASONS,
    "revisionReason": _REVISION_REASONS,
    "launchStage": _LAUNCH_STAGES,
    "ingress": _INGRESS,
}

UnknownRevisionMode = Literal["reject", "fail_operation"]

#: Path prefix of the served revisions (the service URI and the tag URLs).
SERVE_PREFIX = "/_serve/"
#: Headers that are about one connection, never forwarded (RFC 9110, 7.6.1).
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)

_FAILED_CONTAINER_MESSAGE = (
    "The user-provided container failed to start and listen on the port defined "
    "provided by the PORT=8080 environment variable within the allocated timeout."
)


@dataclass(frozen=True)
class TrafficEntry:
    """One ``traffic[]`` / ``trafficStatuses[]`` entry; ``type`` is the full enum name."""

    type: str
    revision: str = ""
    percent: int = 0
    tag: str = ""

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> TrafficEntry:
        if not isinstance(raw, Mapping):
            raise StandinError(400, "traffic entries must be objects")
        kind = decode_enum(raw.get("type", 0), TRAFFIC_TYPES, _TRAFFIC_PREFIX)
        try:
            percent = int(raw.get("percent", 0))
        except (TypeError, ValueError) as exc:
            raise StandinError(400, f"Invalid traffic percent: {raw.get('percent')!r}") from exc
        return cls(kind, str(raw.get("revision", "")), percent, str(raw.get("tag", "")))

    def to_json(self) -> JSON:
        return {
            "type": self.type,
            "revision": self.revision,
            "percent": self.percent,
            "tag": self.tag,
        }


@dataclass
class _Revision:
    project: str
    location: str
    service: str
    name: str
    seq: int
    uid: str
    images: list[str]
    create_time: datetime
    update_time: datetime
    ready: bool = True
    message: str = ""

    @property
    def service_key(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/services/{self.service}"

    @property
    def full_name(self) -> str:
        return f"{self.service_key}/revisions/{self.name}"


@dataclass
class _Service:
    project: str
    location: str
    name: str
    uid: str
    create_time: datetime
    update_time: datetime
    images: list[str]
    creator: str
    generation: int = 1
    template_revision: str = ""
    traffic: list[TrafficEntry] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    annotations: dict[str, str] = field(default_factory=dict)
    description: str = ""
    client: str = ""
    client_version: str = ""
    last_modifier: str = ""
    # status
    observed_generation: int = 1
    traffic_statuses: list[TrafficEntry] = field(default_factory=list)
    latest_ready: str = ""
    latest_created: str = ""
    status_time: datetime | None = None
    revision_seq: int = 0

    @property
    def key(self) -> str:
        return f"projects/{self.project}/locations/{self.location}/services/{self.name}"


@dataclass
class _PendingStatus:
    generation: int
    traffic_statuses: list[TrafficEntry]
    latest_ready: str
    latest_created: str


@dataclass
class _Operation:
    name: str
    service_key: str
    polls_needed: int
    metadata: JSON
    pending: _PendingStatus | None
    error: tuple[int, str] | None = None
    polls: int = 0
    done: bool = False
    response: JSON | None = None


def _etag(uid: str, generation: int) -> str:
    digest = hashlib.sha256(f"{uid}:{generation}".encode()).digest()[:15]
    return base64.urlsafe_b64encode(digest).decode()


def _not_found(kind: str, name: str, location: str, project: str) -> StandinError:
    # Cloud Run's own wording for a missing resource.
    return StandinError(
        404,
        f"Resource '{name}' of kind '{kind}' in region '{location}' in project "
        f"'{project}' does not exist.",
    )


def _page_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _page_offset(token: str) -> int:
    if not token:
        return 0
    try:
        prefix, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        offset = int(number)
    except (ValueError, UnicodeDecodeError) as exc:
        raise StandinError(400, "Invalid page token.") from exc
    if prefix != "o" or offset < 0:
        raise StandinError(400, "Invalid page token.")
    return offset


@dataclass
class _Interleaved:
    """An action to run just before a matching request (:meth:`CloudRunState.interleave`)."""

    method: str | None
    pattern: re.Pattern[str]
    skip: int
    action: Callable[[], object]


class RequestRecorder(Protocol):
    """Where served requests are counted (``standins.monitoring.MonitoringState``) or
    logged (``standins.logging.LoggingState``)."""

    def record(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        status_code: int,
        latency_ms: float,
    ) -> None: ...


class Recorders:
    """Several recorders as one, each told of every request in turn: Cloud Run both
    counts a request in its metrics and writes its request log entry, so ``all`` feeds
    the Monitoring and the Logging stand-ins from the same router."""

    def __init__(self, *recorders: RequestRecorder) -> None:
        self.recorders = recorders

    def record(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        status_code: int,
        latency_ms: float,
    ) -> None:
        for recorder in self.recorders:
            recorder.record(project, location, service, revision, status_code, latency_ms)


class CloudRunState(FaultInjection):
    """Services, revisions and operations of the stand-in; every method is thread-safe.

    ``operation_polls``: how many ``GetOperation`` calls an UpdateService operation
    answers before ``done: true`` (the N-th poll is done); 0 = the PATCH answer is
    already done. ``latest_status_includes_revision``: whether a ``LATEST`` entry of
    ``trafficStatuses`` names the revision it resolves to (off by default: consumers
    should resolve LATEST through ``latestReadyRevision``). ``unknown_revision_mode``:
    a traffic update naming a revision that does not exist is answered ``400
    INVALID_ARGUMENT`` (``"reject"``) or accepted and the operation fails with code 13
    (``"fail_operation"``, what Cloud Run has been seen to do).
    """

    def __init__(
        self,
        *,
        operation_polls: int = 1,
        latest_status_includes_revision: bool = False,
        unknown_revision_mode: UnknownRevisionMode = "reject",
        new_revisions_ready: bool = True,
        project_number: str = "123456789012",
        clock: Clock = utcnow,
        seed: int | None = None,
        serve_base: str | None = None,
        upstream: str | None = None,
        route_seed: int | None = None,
        monitoring: RequestRecorder | None = None,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self._rng = random.Random(seed)
        self.log = FaultsAndLog(self._lock, clock)
        self.operation_polls = operation_polls
        self.latest_status_includes_revision = latest_status_includes_revision
        self.unknown_revision_mode: UnknownRevisionMode = unknown_revision_mode
        self.new_revisions_ready = new_revisions_ready
        self.project_number = project_number
        self._services: dict[str, _Service] = {}
        self._revisions: dict[str, dict[str, _Revision]] = {}
        self._operations: dict[str, _Operation] = {}
        self._patches: dict[str, int] = {}
        self._applied: dict[str, int] = {}
        self._interleaved: list[_Interleaved] = []
        self.serve_base = serve_base.rstrip("/") if serve_base else None
        self.upstream = upstream.rstrip("/") if upstream else None
        self._route_rng = random.Random(route_seed)
        self._routed: dict[str, dict[str, int]] = {}
        self.monitoring = monitoring

    def record_to(self, monitoring: RequestRecorder | None) -> None:
        """Record every request a revision answers into ``monitoring`` (None: stop; several
        recorders: :class:`Recorders`)."""
        with self._lock:
            self.monitoring = monitoring

    def record_served(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        status_code: int,
        latency_ms: float,
    ) -> None:
        """One request answered by ``revision``, as Cloud Run's request metrics count it."""
        recorder = self.monitoring
        if recorder is not None:
            recorder.record(project, location, service, revision, status_code, latency_ms)

    # ------------------------------------------------------------------ config / reset

    def configure(
        self,
        *,
        operation_polls: int | None = None,
        latest_status_includes_revision: bool | None = None,
        unknown_revision_mode: UnknownRevisionMode | None = None,
        new_revisions_ready: bool | None = None,
        project_number: str | None = None,
        serve_base: str | None = None,
        upstream: str | None = None,
        route_seed: int | None = None,
    ) -> None:
        with self._lock:
            if serve_base is not None:
                self.serve_base = serve_base.rstrip("/") or None
            if upstream is not None:
                self.upstream = upstream.rstrip("/") or None
            if route_seed is not None:
                self._route_rng = random.Random(route_seed)
            if operation_polls is not None:
                if operation_polls < 0:
                    raise ValueError("operation_polls must be >= 0")
                self.operation_polls = operation_polls
            if latest_status_includes_revision is not None:
                self.latest_status_includes_revision = latest_status_includes_revision
            if unknown_revision_mode is not None:
                if unknown_revision_mode not in ("reject", "fail_operation"):
                    raise ValueError(f"unknown_revision_mode: {unknown_revision_mode!r}")
                self.unknown_revision_mode = unknown_revision_mode
            if new_revisions_ready is not None:
                self.new_revisions_ready = new_revisions_ready
            if project_number is not None:
                self.project_number = project_number

    def config(self) -> JSON:
        with self._lock:
            return {
                "operation_polls": self.operation_polls,
                "latest_status_includes_revision": self.latest_status_includes_revision,
                "unknown_revision_mode": self.unknown_revision_mode,
                "new_revisions_ready": self.new_revisions_ready,
                "project_number": self.project_number,
                "serve_base": self.serve_base,
                "upstream": self.upstream,
                "recording": self.monitoring is not None,
            }

    def reset(self) -> None:
        """Forget every service, revision, operation, fault and logged request."""
        with self._lock:
            self._services.clear()
            self._revisions.clear()
            self._operations.clear()
            self._patches.clear()
            self._applied.clear()
            self._interleaved.clear()
            self._routed.clear()
            self.log.reset()

    # ------------------------------------------------------------------ faults / log

    def patch_count(self, project: str, location: str, service: str) -> int:
        """PATCH requests received for the service (including rejected and faulted ones)."""
        with self._lock:
            return self._patches.get(self._key(project, location, service), 0)

    def patch_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._patches)

    def applied_update_counts(self) -> dict[str, int]:
        """UpdateService calls that were accepted (got an operation), per service."""
        with self._lock:
            return dict(self._applied)

    def count_patch(self, path: str) -> None:
        marker = "/v2/"
        if path.startswith(marker) and "/services/" in path:
            key = path[len(marker) :].split("/revisions", maxsplit=1)[0]
            if key.count("/") == 5:
                with self._lock:
                    self._patches[key] = self._patches.get(key, 0) + 1

    def interleave(
        self,
        action: Callable[[], object],
        *,
        method: str | None = None,
        path_regex: str = ".*",
        skip: int = 0,
    ) -> None:
        """Run ``action`` (e.g. a human's ``set_traffic`` or a deploy) just before the API
        request that matches ``method`` + ``path_regex`` after ``skip`` matching ones, then
        answer that request normally: a concurrent writer landing between a client's
        read and its write, at a point the test chooses. Runs once."""
        with self._lock:
            self._interleaved.append(
                _Interleaved(
                    method.upper() if method else None, re.compile(path_regex), skip, action
                )
            )

    def run_interleaved(self, method: str, path: str) -> None:
        """Called by the app before each API request (see :meth:`interleave`). The action
        runs outside the state lock, so it may sleep (a slow answer) or call any method."""
        due: _Interleaved | None = None
        with self._lock:
            for item in list(self._interleaved):
                if item.method not in (None, method.upper()) or not item.pattern.search(path):
                    continue
                if item.skip > 0:
                    item.skip -= 1
                    continue
                self._interleaved.remove(item)
                due = item
                break
        if due is not None:
            due.action()

    # ------------------------------------------------------------------ seeding

    def _uuid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    @staticmethod
    def _key(project: str, location: str, service: str) -> str:
        return f"projects/{project}/locations/{location}/services/{service}"

    def _new_revision_name(self, svc: _Service) -> tuple[str, int]:
        seq = svc.revision_seq + 1
        suffix = "".join(self._rng.choices(string.ascii_lowercase + string.digits, k=3))
        return f"{svc.name}-{seq:05d}-{suffix}", seq

    def _add_revision(
        self,
        svc: _Service,
        name: str | None,
        images: list[str],
        ready: bool,
        create_time: datetime | None,
        message: str = "",
    ) -> _Revision:
        auto_name, seq = self._new_revision_name(svc)
        name = name or auto_name
        revisions = self._revisions.setdefault(svc.key, {})
        if name in revisions:
            raise StandinError(409, f"Revision named '{name}' already exists.", "ALREADY_EXISTS")
        now = self._clock()
        rev = _Revision(
            project=svc.project,
            location=svc.location,
            service=svc.name,
            name=name,
            seq=seq,
            uid=self._uuid(),
            images=list(images),
            create_time=create_time or now,
            update_time=create_time or now,
            ready=ready,
            message=message or ("" if ready else _FAILED_CONTAINER_MESSAGE),
        )
        revisions[name] = rev
        svc.revision_seq = seq
        svc.latest_created = name
        return rev

    def create_service(
        self,
        project: str,
        location: str,
        service: str,
        image: str | Sequence[str],
        *,
        revision: str | None = None,
        create_time: str | datetime | None = None,
        creator: str = "deployer@example.com",
        labels: Mapping[str, str] | None = None,
    ) -> JSON:
        """Create a service with one Ready revision serving 100 % (traffic: LATEST)."""
        images = [image] if isinstance(image, str) else list(image)
        key = self._key(project, location, service)
        created = parse_time(create_time) or self._clock()
        with self._lock:
            if key in self._services:
                raise StandinError(409, f"Resource '{service}' already exists.", "ALREADY_EXISTS")
            svc = _Service(
                project=project,
                location=location,
                name=service,
                uid=self._uuid(),
                create_time=created,
                update_time=created,
                images=images,
                creator=creator,
                last_modifier=creator,
                template_revision=revision or "",
                traffic=[TrafficEntry(LATEST, percent=100)],
                labels=dict(labels or {}),
                status_time=created,
            )
            self._services[key] = svc
            self._add_revision(svc, revision, images, True, created)
            self._reconcile_now(svc)
            return self._service_json(svc)

    def create_revision(
        self,
        project: str,
        location: str,
        service: str,
        *,
        image: str | Sequence[str] | None = None,
        revision: str | None = None,
        ready: bool = True,
        message: str = "",
        create_time: str | datetime | None = None,
        no_traffic: bool = False,
        tag: str | None = None,
        promote: bool = False,
    ) -> JSON:
        """Simulate a deploy: a new revision from a new template, reconciled at once.

        - default: traffic spec unchanged (a ``LATEST`` entry follows the new revision
          if it is Ready; pinned ``REVISION`` entries stay where they are);
        - ``no_traffic``: like ``gcloud run deploy --no-traffic`` -- ``LATEST`` entries
          are first pinned to the revision they served;
        - ``tag``: the new revision gets that tag (0 %), the tag moves off any other entry;
        - ``promote``: afterwards traffic is 100 % ``LATEST`` (tags kept at 0 %), like
          ``gcloud run services update-traffic --to-latest``.

        Returns the Revision JSON.
        """
        with self._lock:
            svc = self._get(project, location, service)
            images = (
                list(svc.images)
                if image is None
                else [image]
                if isinstance(image, str)
                else list(image)
            )
            previous_ready = svc.latest_ready
            traffic = list(svc.traffic)
            if no_traffic:
                traffic = [
                    replace(t, type=REVISION, revision=previous_ready) if t.type == LATEST else t
                    for t in traffic
                ]
            rev = self._add_revision(svc, revision, images, ready, parse_time(create_time), message)
            if tag:
                traffic = self._move_tag(traffic, tag)
                traffic.append(TrafficEntry(REVISION, rev.name, 0, tag))
            if promote:
                tagged = [
                    TrafficEntry(REVISION, self._resolve_name(svc, t), 0, t.tag)
                    for t in traffic
                    if t.tag
                ]
                traffic = [TrafficEntry(LATEST, percent=100), *tagged]
            self._check_traffic(svc, traffic, set())
            svc.images = images
            svc.template_revision = revision or ""
            svc.traffic = traffic
            self._bump(svc)
            self._reconcile_now(svc)
            return self._revision_json(rev)

    def set_traffic(
        self,
        project: str,
        location: str,
        service: str,
        traffic: Iterable[TrafficEntry | Mapping[str, Any]],
    ) -> JSON:
        """Replace the traffic spec and reconcile at once (no operation). Returns the Service."""
        entries = [t if isinstance(t, TrafficEntry) else TrafficEntry.from_json(t) for t in traffic]
        with self._lock:
            svc = self._get(project, location, service)
            self._check_traffic(svc, entries, set())
            svc.traffic = entries or [TrafficEntry(LATEST, percent=100)]
            self._bump(svc)
            self._reconcile_now(svc)
            return self._service_json(svc)

    def set_revision_ready(
        self,
        project: str,
        location: str,
        service: str,
        revision: str,
        ready: bool,
        message: str = "",
    ) -> JSON:
        """Flip a revision's Ready condition (``latestReadyRevision`` follows)."""
        with self._lock:
            svc = self._get(project, location, service)
            rev = self._get_revision(svc, revision)
            rev.ready = ready
            rev.message = message or ("" if ready else _FAILED_CONTAINER_MESSAGE)
            rev.update_time = self._clock()
            self._reconcile_now(svc)
            return self._revision_json(rev)

    def settle(self) -> int:
        """Complete every pending operation now. Returns how many were completed."""
        with self._lock:
            pending = [op for op in self._operations.values() if not op.done]
            for op in pending:
                self._complete(op)
            return len(pending)

    # ------------------------------------------------------------------ reads

    def get_service(self, project: str, location: str, service: str) -> JSON:
        with self._lock:
            return self._service_json(self._get(project, location, service))

    def get_revision(self, project: str, location: str, service: str, revision: str) -> JSON:
        with self._lock:
            svc = self._get(project, location, service)
            return self._revision_json(self._get_revision(svc, revision))

    def list_revisions(
        self, project: str, location: str, service: str, page_size: int = 0, page_token: str = ""
    ) -> JSON:
        """Revisions in no particular order (stable across pages, NOT by create time)."""
        with self._lock:
            if service == "-":
                prefix = f"projects/{project}/locations/{location}/services/"
                revisions = [
                    rev
                    for key, revs in self._revisions.items()
                    if key.startswith(prefix)
                    for rev in revs.values()
                ]
            else:
                svc = self._get(project, location, service)
                revisions = list(self._revisions.get(svc.key, {}).values())
            revisions.sort(key=lambda r: hashlib.sha256(r.uid.encode()).hexdigest())
            size = page_size if page_size > 0 else 100
            start = _page_offset(page_token)
            page = revisions[start : start + size]
            out: JSON = {"revisions": [self._revision_json(r) for r in page]}
            if start + size < len(revisions):
                out["nextPageToken"] = _page_token(start + size)
            return out

    def get_operation(self, project: str, location: str, operation: str) -> JSON:
        """The operation as a poll sees it (counts as a poll)."""
        with self._lock:
            op = self._get_operation(project, location, operation)
            if not op.done:
                op.polls += 1
                if op.polls >= op.polls_needed:
                    self._complete(op)
            return self._operation_json(op)

    def wait_operation(self, project: str, location: str, operation: str) -> JSON:
        with self._lock:
            op = self._get_operation(project, location, operation)
            if not op.done:
                self._complete(op)
            return self._operation_json(op)

    def delete_operation(self, project: str, location: str, operation: str) -> None:
        with self._lock:
            op = self._get_operation(project, location, operation)
            del self._operations[op.name]

    def list_operations(self, project: str, location: str) -> JSON:
        prefix = f"projects/{project}/locations/{location}/operations/"
        with self._lock:
            return {
                "operations": [
                    self._operation_json(op)
                    for name, op in self._operations.items()
                    if name.startswith(prefix)
                ]
            }

    def services(self) -> list[JSON]:
        with self._lock:
            return [self._service_json(s) for s in self._services.values()]

    # ------------------------------------------------------------------ UpdateService

    def update_service(
        self,
        project: str,
        location: str,
        service: str,
        body: Any,
        *,
        update_mask: str = "",
        validate_only: bool = False,
    ) -> JSON:
        """UpdateService: check the etag, validate, apply the spec, return an Operation."""
        if not isinstance(body, Mapping):
            raise StandinError(400, "Invalid JSON payload: the body must be a Service object.")
        with self._lock:
            svc = self._get(project, location, service)
            name = body.get("name")
            if name and name != svc.key:
                raise StandinError(400, f"Service name '{name}' does not match the URL.")
            sent_etag = body.get("etag") or ""
            current_etag = _etag(svc.uid, svc.generation)
            if sent_etag and sent_etag != current_etag:
                # AIP-154: an etag mismatch is ABORTED, which Google's REST front end
                # maps to HTTP 409 Conflict.
                raise StandinError(
                    409,
                    f"The etag '{sent_etag}' does not match the current etag of service "
                    f"'{svc.key}': it changed since it was read. Read it again and retry.",
                    "ABORTED",
                )
            mask = {p.strip() for p in update_mask.split(",") if p.strip()}

            def in_mask(field_name: str) -> bool:
                return not mask or any(
                    p == field_name or p.startswith(f"{field_name}.") for p in mask
                )

            traffic = list(svc.traffic)
            if in_mask("traffic"):
                raw = body.get("traffic") or []
                if not isinstance(raw, list):
                    raise StandinError(400, "traffic must be a list")
                traffic = [TrafficEntry.from_json(t) for t in raw] or [
                    TrafficEntry(LATEST, percent=100)
                ]

            images = list(svc.images)
            template_revision = svc.template_revision
            template = body.get("template")
            if in_mask("template") and isinstance(template, Mapping):
                containers = template.get("containers") or []
                sent_images = [
                    str(c.get("image", "")) for c in containers if isinstance(c, Mapping)
                ]
                if sent_images:
                    images = sent_images
                template_revision = str(template.get("revision", ""))
            template_changed = images != svc.images or (
                template_revision != svc.template_revision and bool(template_revision)
            )
            new_revision: str | None = None
            if template_changed:
                existing = self._revisions.get(svc.key, {})
                if template_revision and template_revision in existing:
                    raise StandinError(
                        409,
                        f"Revision named '{template_revision}' with different configuration "
                        "already exists.",
                        "ALREADY_EXISTS",
                    )
                new_revision = template_revision or self._new_revision_name(svc)[0]

            missing = self._check_traffic(
                svc, traffic, {new_revision} if new_revision else set(), collect_missing=True
            )
            if missing and self.unknown_revision_mode == "reject":
                raise StandinError(
                    400,
                    f"Revision '{missing[0]}' does not exist or is deleted. Update all "
                    "traffic to route to currently available revisions.",
                )

            op_name = f"projects/{project}/locations/{location}/operations/{self._uuid()}"
            if validate_only:
                preview = self._service_json(svc)
                preview["traffic"] = [t.to_json() for t in traffic]
                op = _Operation(
                    op_name, svc.key, 0, {}, None, done=True, response=prune_defaults(preview)
                )
                op.metadata = op.response or {}
                self._operations[op_name] = op
                return self._operation_json(op)

            if missing:  # unknown_revision_mode == "fail_operation"
                op = _Operation(
                    op_name,
                    svc.key,
                    self.operation_polls,
                    self._service_json(svc),
                    None,
                    error=(
                        RPC_CODES["INTERNAL"],
                        f"Revision '{missing[0]}' does not exist or is deleted. Update all "
                        "traffic to route to currently available revisions.",
                    ),
                )
                self._operations[op_name] = op
                if op.polls_needed == 0:
                    self._complete(op)
                return self._operation_json(op)

            # Apply the spec now; the status follows when the operation completes.
            svc.traffic = traffic
            svc.images = images
            svc.template_revision = template_revision
            for attr, key in (("labels", "labels"), ("annotations", "annotations")):
                if in_mask(key) and isinstance(body.get(key), Mapping):
                    setattr(svc, attr, {str(k): str(v) for k, v in body[key].items()})
            if in_mask("description") and "description" in body:
                svc.description = str(body.get("description") or "")
            svc.client = str(body.get("client", svc.client) or "")
            svc.client_version = str(body.get("clientVersion", svc.client_version) or "")
            if new_revision is not None:
                self._add_revision(svc, new_revision, images, self.new_revisions_ready, None)
            self._bump(svc)
            latest_ready = self._latest_ready_name(svc)
            pending = _PendingStatus(
                generation=svc.generation,
                traffic_statuses=self._resolve(traffic, latest_ready),
                latest_ready=latest_ready,
                latest_created=svc.latest_created,
            )
            op = _Operation(op_name, svc.key, self.operation_polls, {}, pending)
            self._operations[op_name] = op
            self._applied[svc.key] = self._applied.get(svc.key, 0) + 1
            op.metadata = self._service_json(svc)
            if op.polls_needed == 0:
                self._complete(op)
            return self._operation_json(op)

    # ------------------------------------------------------------------ serving

    def route(self, project: str, location: str, name: str) -> tuple[str, str, str]:
        """Which revision answers a request to ``name`` (``S`` or ``TAG---S``): by the
        tag, or by the traffic in effect (``trafficStatuses``), weighted by percent with
        the seeded routing RNG. Returns ``(service, revision, image)``; 404 for an unknown
        service or tag, 503 when no Ready revision can answer (as Cloud Run's front end)."""
        tag, _, service = name.rpartition("---")
        with self._lock:
            svc = self._get(project, location, service)
            if tag:
                entry = next((t for t in svc.traffic_statuses if t.tag == tag), None)
                if entry is None:
                    raise StandinError(404, f"No tag '{tag}' on service '{service}'.")
                revision = self._resolve_name(svc, entry)
            else:
                shares = [
                    (self._resolve_name(svc, t), t.percent)
                    for t in svc.traffic_statuses
                    if t.percent > 0
                ]
                shares = [(r, p) for r, p in shares if r]
                if not shares:
                    raise StandinError(503, f"Service '{service}' routes no traffic.")
                [revision] = self._route_rng.choices(
                    [r for r, _ in shares], weights=[p for _, p in shares]
                )
            rev = self._revisions.get(svc.key, {}).get(revision)
            if rev is None or not rev.ready:
                raise StandinError(503, f"Revision '{revision}' is not ready to serve.")
            counts = self._routed.setdefault(svc.key, {})
            counts[revision] = counts.get(revision, 0) + 1
            return service, revision, rev.images[0] if rev.images else ""

    def routed(self) -> dict[str, dict[str, int]]:
        """Requests served per service (full name) and revision, since the last reset."""
        with self._lock:
            return {key: dict(counts) for key, counts in self._routed.items()}

    # ------------------------------------------------------------------ internals

    def _get(self, project: str, location: str, service: str) -> _Service:
        svc = self._services.get(self._key(project, location, service))
        if svc is None:
            raise _not_found("SERVICE", service, location, project)
        return svc

    def _get_revision(self, svc: _Service, revision: str) -> _Revision:
        rev = self._revisions.get(svc.key, {}).get(revision)
        if rev is None:
            raise _not_found("REVISION", revision, svc.location, svc.project)
        return rev

    def _get_operation(self, project: str, location: str, operation: str) -> _Operation:
        name = f"projects/{project}/locations/{location}/operations/{operation}"
        op = self._operations.get(name)
        if op is None:
            raise StandinError(404, f"Operation '{name}' not found.")
        return op

    def _bump(self, svc: _Service) -> None:
        svc.generation += 1
        svc.update_time = self._clock()

    def _latest_ready_name(self, svc: _Service) -> str:
        ready = [r for r in self._revisions.get(svc.key, {}).values() if r.ready]
        return max(ready, key=lambda r: r.seq).name if ready else ""

    def _resolve_name(self, svc: _Service, entry: TrafficEntry) -> str:
        return entry.revision if entry.type == REVISION else svc.latest_ready

    def _resolve(self, traffic: Sequence[TrafficEntry], latest_ready: str) -> list[TrafficEntry]:
        statuses: list[TrafficEntry] = []
        for entry in traffic:
            if entry.type == LATEST:
                revision = latest_ready if self.latest_status_includes_revision else ""
                statuses.append(replace(entry, revision=revision))
            else:
                statuses.append(entry)
        return statuses

    def _reconcile_now(self, svc: _Service) -> None:
        """Admin changes take effect at once (and supersede pending operations)."""
        svc.latest_ready = self._latest_ready_name(svc)
        svc.traffic_statuses = self._resolve(svc.traffic, svc.latest_ready)
        svc.observed_generation = svc.generation
        svc.status_time = self._clock()

    def _complete(self, op: _Operation) -> None:
        op.done = True
        svc = self._services.get(op.service_key)
        if svc is None:
            op.error = op.error or (RPC_CODES["NOT_FOUND"], "The service was deleted.")
            return
        if op.error is None and op.pending is not None:
            if op.pending.generation > svc.observed_generation:
                svc.traffic_statuses = op.pending.traffic_statuses
                svc.latest_ready = op.pending.latest_ready
                svc.latest_created = op.pending.latest_created
                svc.observed_generation = op.pending.generation
                svc.status_time = self._clock()
            op.response = self._service_json(svc)

    @staticmethod
    def _move_tag(traffic: list[TrafficEntry], tag: str) -> list[TrafficEntry]:
        out: list[TrafficEntry] = []
        for entry in traffic:
            if entry.tag != tag:
                out.append(entry)
            elif entry.percent > 0:
                out.append(replace(entry, tag=""))
        return out

    def _check_traffic(
        self,
        svc: _Service,
        traffic: Sequence[TrafficEntry],
        extra_revisions: set[str],
        *,
        collect_missing: bool = False,
    ) -> list[str]:
        total = 0
        tags: set[str] = set()
        missing: list[str] = []
        known = set(self._revisions.get(svc.key, {})) | extra_revisions
        for entry in traffic:
            if not 0 <= entry.percent <= 100:
                raise StandinError(
                    400, f"Traffic percent must be in [0, 100], got {entry.percent}."
                )
            total += entry.percent
            if entry.type == LATEST and entry.revision:
                raise StandinError(400, "A traffic target of type LATEST must not name a revision.")
            if entry.type == REVISION:
                if not entry.revision:
                    raise StandinError(400, "A traffic target of type REVISION needs a revision.")
                if entry.revision not in known:
                    if not collect_missing:
                        raise StandinError(
                            400, f"Revision '{entry.revision}' does not exist or is deleted."
                        )
                    missing.append(entry.revision)
            elif entry.type != LATEST:
                raise StandinError(400, "Traffic target type must be LATEST or REVISION.")
            if entry.tag:
                if entry.tag in tags:
                    raise StandinError(400, f"Traffic tag '{entry.tag}' is used more than once.")
                tags.add(entry.tag)
        if traffic and total != 100:
            raise StandinError(400, f"Traffic percentages must add up to 100, got {total}.")
        return missing

    def _uri(self, svc: _Service, tag: str = "") -> str:
        if self.serve_base:
            name = f"{tag}---{svc.name}" if tag else svc.name
            return f"{self.serve_base}{SERVE_PREFIX}{svc.project}/{svc.location}/{name}"
        host = f"{svc.name}-{self.project_number}.{svc.location}.run.app"
        return f"https://{tag}---{host}" if tag else f"https://{host}"

    def _service_account(self) -> str:
        return f"{self.project_number}-compute@developer.gserviceaccount.com"

    def _containers(self, images: Sequence[str]) -> list[JSON]:
        containers: list[JSON] = []
        for index, image in enumerate(images):
            container: JSON = {
                "image": image,
                "resources": {
                    "limits": {"cpu": "1000m", "memory": "512Mi"},
                    "cpuIdle": True,
                    "startupCpuBoost": True,
                },
            }
            if index == 0:
                container["ports"] = [{"name": "http1", "containerPort": 8080}]
            containers.append(container)
        return containers

    def _service_json(self, svc: _Service) -> JSON:
        pending = any(not op.done and op.service_key == svc.key for op in self._operations.values())
        reconciling = pending or svc.observed_generation < svc.generation
        status_time = rfc3339(svc.status_time or svc.update_time)
        latest_created = self._revisions.get(svc.key, {}).get(svc.latest_created)
        if reconciling:
            terminal: JSON = {
                "type": "Ready",
                "state": "CONDITION_RECONCILING",
                "lastTransitionTime": status_time,
            }
        elif latest_created is not None and not latest_created.ready:
            terminal = {
                "type": "Ready",
                "state": "CONDITION_FAILED",
                "message": f"Revision '{latest_created.name}' is not ready and cannot serve "
                f"traffic. {latest_created.message}",
                "lastTransitionTime": status_time,
                "severity": "ERROR",
                "reason": "REVISION_FAILED",
            }
        else:
            terminal = {
                "type": "Ready",
                "state": "CONDITION_SUCCEEDED",
                "lastTransitionTime": status_time,
            }
        sub_state = "CONDITION_RECONCILING" if reconciling else "CONDITION_SUCCEEDED"
        config_state = (
            "CONDITION_FAILED"
            if not reconciling and latest_created is not None and not latest_created.ready
            else sub_state
        )
        statuses = [
            {**t.to_json(), "uri": self._uri(svc, t.tag) if t.tag else ""}
            for t in svc.traffic_statuses
        ]
        out: JSON = {
            "name": svc.key,
            "description": svc.description,
            "uid": svc.uid,
            "generation": str(svc.generation),
            "labels": svc.labels,
            "annotations": svc.annotations,
            "createTime": rfc3339(svc.create_time),
            "updateTime": rfc3339(svc.update_time),
            "creator": svc.creator,
            "lastModifier": svc.last_modifier,
            "client": svc.client,
            "clientVersion": svc.client_version,
            "ingress": "INGRESS_TRAFFIC_ALL",
            "launchStage": "GA",
            "template": {
                "revision": svc.template_revision,
                "scaling": {"maxInstanceCount": 100},
                "timeout": "300s",
                "serviceAccount": self._service_account(),
                "containers": self._containers(svc.images),
                "maxInstanceRequestConcurrency": 80,
            },
            "traffic": [t.to_json() for t in svc.traffic],
            "urls": [self._uri(svc)],
            "observedGeneration": str(svc.observed_generation),
            "terminalCondition": terminal,
            "conditions": [
                {"type": "RoutesReady", "state": sub_state, "lastTransitionTime": status_time},
                {
                    "type": "ConfigurationsReady",
                    "state": config_state,
                    "lastTransitionTime": status_time,
                },
            ],
            "latestReadyRevision": f"{svc.key}/revisions/{svc.latest_ready}"
            if svc.latest_ready
            else "",
            "latestCreatedRevision": f"{svc.key}/revisions/{svc.latest_created}"
            if svc.latest_created
            else "",
            "trafficStatuses": statuses,
            "uri": self._uri(svc),
            "reconciling": reconciling,
            "etag": _etag(svc.uid, svc.generation),
        }
        result: JSON = prune_defaults(out)
        return result

    def _revision_json(self, rev: _Revision) -> JSON:
        when = rfc3339(rev.update_time)
        if rev.ready:
            conditions: list[JSON] = [
                {"type": "Ready", "state": "CONDITION_SUCCEEDED", "lastTransitionTime": when},
                {
                    "type": "ContainerHealthy",
                    "state": "CONDITION_SUCCEEDED",
                    "lastTransitionTime": when,
                },
                {
                    "type": "ResourcesAvailable",
                    "state": "CONDITION_SUCCEEDED",
                    "lastTransitionTime": when,
                },
            ]
        else:
            failed: JSON = {
                "state": "CONDITION_FAILED",
                "message": rev.message,
                "lastTransitionTime": when,
                "severity": "ERROR",
                "revisionReason": "HEALTH_CHECK_CONTAINER_ERROR",
            }
            conditions = [
                {"type": "Ready", **failed},
                {"type": "ContainerHealthy", **failed},
                {
                    "type": "ResourcesAvailable",
                    "state": "CONDITION_SUCCEEDED",
                    "lastTransitionTime": when,
                },
            ]
        log_filter = (
            f'resource.type = "cloud_run_revision" resource.labels.service_name = '
            f'"{rev.service}" resource.labels.revision_name = "{rev.name}"'
        )
        out: JSON = {
            "name": rev.full_name,
            "uid": rev.uid,
            "generation": "1",
            "createTime": rfc3339(rev.create_time),
            "updateTime": rfc3339(rev.update_time),
            "launchStage": "GA",
            "service": rev.service_key,
            "scaling": {"maxInstanceCount": 100},
            "timeout": "300s",
            "serviceAccount": self._service_account(),
            "containers": self._containers(rev.images),
            "maxInstanceRequestConcurrency": 80,
            "reconciling": False,
            "conditions": conditions,
            "observedGeneration": "1",
            "logUri": "https://console.cloud.google.com/logs/viewer?project="
            f"{rev.project}&advancedFilter={log_filter.replace(' ', '%20')}",
            "etag": _etag(rev.uid, 1),
        }
        result: JSON = prune_defaults(out)
        return result

    def _operation_json(self, op: _Operation) -> JSON:
        out: JSON = {
            "name": op.name,
            "metadata": {"@type": SERVICE_TYPE_URL, **op.metadata},
            "done": op.done,
        }
        if op.done and op.error is not None:
            out["error"] = {"code": op.error[0], "message": op.error[1]}
        elif op.done and op.response is not None:
            out["response"] = {"@type": SERVICE_TYPE_URL, **op.response}
        if not op.done:
            # proto3 JSON: ``done: false`` is a default value and is not sent.
            del out["done"]
        return out


# ---------------------------------------------------------------------------- app


def _api_json(payload: JSON, status: int = 200) -> Response:
    if wants_int_enums():
        payload = encode_enums(payload, ENUM_TABLES)
    return json_response(payload, status)


def _fault_response(rule: FaultRule) -> Response:
    message = rule.body or {
        409: "The request was aborted because of a conflict; please retry.",
        429: "Quota exceeded for quota metric 'Write requests' of service 'run.googleapis.com'.",
        503: "The service is currently unavailable.",
    }.get(rule.status, "Injected fault.")
    return google_error(rule.status, message, retry_after=rule.retry_after)


class _Forwarder:
    """Forwards a served request to the upstream (the Sight API stand-in)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def _http(self) -> Any:
        import httpx

        with self._lock:
            if self._client is None:
                self._client = httpx.Client(timeout=30.0, follow_redirects=False)
            return self._client

    def forward(self, st: CloudRunState) -> Response:
        parts = request.path[len(SERVE_PREFIX) :].split("/", 3)
        if len(parts) < 3 or not all(parts[:3]):
            return _plain(404, "Not Found")
        project, location, name = parts[:3]
        rest = "/" + (parts[3] if len(parts) > 3 else "")
        try:
            service, revision, image = st.route(project, location, name)
        except StandinError as exc:
            return _plain(exc.code, exc.message)
        if not st.upstream:
            st.record_served(project, location, service, revision, 503, 0.0)
            return _plain(503, "The stand-in has no upstream to serve revisions from.")
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP}
        headers.update(
            {
                "X-Standin-Service": service,
                "X-Standin-Revision": revision,
                "X-Standin-Image": image,
            }
        )
        import httpx

        started = time.perf_counter()
        try:
            answer = self._http().request(
                request.method,
                st.upstream + rest,
                params=list(request.args.items(multi=True)),
                content=request.get_data(),
                headers=headers,
            )
        except httpx.HTTPError as exc:
            # a dead revision is a 5xx to the client, and Cloud Run counts it so
            elapsed_ms = (time.perf_counter() - started) * 1000
            st.record_served(project, location, service, revision, 502, elapsed_ms)
            return _plain(502, f"upstream failed: {type(exc).__name__}")
        elapsed_ms = (time.perf_counter() - started) * 1000
        st.record_served(project, location, service, revision, answer.status_code, elapsed_ms)
        out = Response(answer.content, answer.status_code)
        for key, value in answer.headers.items():
            if key.lower() not in _HOP_BY_HOP:
                out.headers[key] = value
        out.headers["X-Standin-Revision"] = revision
        return out


def _plain(status: int, text: str) -> Response:
    return Response(text + "\n", status, content_type="text/plain; charset=utf-8")


def _bool_arg(name: str) -> bool:
    return request.args.get(name, "").lower() in ("1", "true")


def create_app(state: CloudRunState | None = None) -> Flask:
    """The Cloud Run Admin API v2 stand-in as a Flask app (``app.extensions["standin"]``)."""
    st = state or CloudRunState()
    app = Flask("standins.cloudrun")
    app.url_map.converters["segment"] = SegmentConverter
    app.extensions["standin"] = st
    forwarder = _Forwarder()

    @app.before_request
    def _serve() -> Response | None:
        # First: served traffic is not an API request (no API faults, no API log).
        if not request.path.startswith(SERVE_PREFIX):
            return None
        return forwarder.forward(st)

    @app.before_request
    def _count_patches() -> None:
        # Registered before the fault hook: a PATCH answered by an injected fault
        # was still received.
        if request.method == "PATCH":
            st.count_patch(request.path)
        if not request.path.startswith("/_admin/"):
            st.run_interleaved(request.method, request.path)

    install_request_hooks(app, st.log, _fault_response, logger)
    install_google_http_errors(app)

    svc_path = "/v2/projects/<segment:p>/locations/<segment:loc>/services/<segment:s>"
    ops_path = "/v2/projects/<segment:p>/locations/<segment:loc>/operations"

    @app.get(svc_path)
    def get_service(p: str, loc: str, s: str) -> Response:
        return _api_json(st.get_service(p, loc, s))

    @app.patch(svc_path)
    def update_service(p: str, loc: str, s: str) -> Response:
        body = request.get_json(force=True, silent=True)
        op = st.update_service(
            p,
            loc,
            s,
            body,
            update_mask=request.args.get("updateMask", ""),
            validate_only=_bool_arg("validateOnly"),
        )
        return _api_json(op)

    @app.get(f"{svc_path}/revisions")
    def list_revisions(p: str, loc: str, s: str) -> Response:
        try:
            size = int(request.args.get("pageSize", "0") or 0)
        except ValueError as exc:
            raise StandinError(400, "Invalid pageSize.") from exc
        return _api_json(st.list_revisions(p, loc, s, size, request.args.get("pageToken", "")))

    @app.get(f"{svc_path}/revisions/<segment:r>")
    def get_revision(p: str, loc: str, s: str, r: str) -> Response:
        return _api_json(st.get_revision(p, loc, s, r))

    @app.get(f"{ops_path}/<segment:op>")
    def get_operation(p: str, loc: str, op: str) -> Response:
        return _api_json(st.get_operation(p, loc, op))

    @app.post(f"{ops_path}/<segment:op>:wait")
    def wait_operation(p: str, loc: str, op: str) -> Response:
        return _api_json(st.wait_operation(p, loc, op))

    @app.delete(f"{ops_path}/<segment:op>")
    def delete_operation(p: str, loc: str, op: str) -> Response:
        st.delete_operation(p, loc, op)
        return _api_json({})

    @app.get(ops_path)
    def list_operations(p: str, loc: str) -> Response:
        return _api_json(st.list_operations(p, loc))

    # ----------------------------------------------------------------- admin

    def where(payload: Mapping[str, Any]) -> tuple[str, str, str]:
        try:
            return str(payload["project"]), str(payload["location"]), str(payload["service"])
        except KeyError as exc:
            raise StandinError(400, f"missing {exc.args[0]!r}") from exc

    @app.post("/_admin/services")
    def admin_create_service() -> Response:
        body = admin_json()
        p, loc, s = where(body)
        if "image" not in body:
            raise StandinError(400, "missing 'image'")
        return json_response(
            st.create_service(
                p,
                loc,
                s,
                body["image"],
                revision=body.get("revision"),
                create_time=body.get("create_time"),
                creator=body.get("creator", "deployer@example.com"),
                labels=body.get("labels"),
            ),
            201,
        )

    @app.get("/_admin/services")
    def admin_services() -> Response:
        return json_response({"services": st.services()})

    @app.post("/_admin/revisions")
    def admin_create_revision() -> Response:
        body = admin_json()
        p, loc, s = where(body)
        return json_response(
            st.create_revision(
                p,
                loc,
                s,
                image=body.get("image"),
                revision=body.get("revision"),
                ready=bool(body.get("ready", True)),
                message=str(body.get("message", "")),
                create_time=body.get("create_time"),
                no_traffic=bool(body.get("no_traffic", False)),
                tag=body.get("tag"),
                promote=bool(body.get("promote", False)),
            ),
            201,
        )

    @app.post("/_admin/revision-ready")
    def admin_revision_ready() -> Response:
        body = admin_json()
        p, loc, s = where(body)
        return json_response(
            st.set_revision_ready(
                p, loc, s, str(body["revision"]), bool(body["ready"]), str(body.get("message", ""))
            )
        )

    @app.post("/_admin/traffic")
    def admin_traffic() -> Response:
        body = admin_json()
        p, loc, s = where(body)
        return json_response(st.set_traffic(p, loc, s, body.get("traffic") or []))

    add_fault_admin_routes(app, st)

    @app.get("/_admin/patch-counts")
    def admin_patch_counts() -> Response:
        return json_response({"received": st.patch_counts(), "applied": st.applied_update_counts()})

    @app.get("/_admin/routed")
    def admin_routed() -> Response:
        return json_response({"routed": st.routed()})

    @app.get("/_admin/config")
    def admin_get_config() -> Response:
        return json_response(st.config())

    @app.post("/_admin/config")
    def admin_config() -> Response:
        body = admin_json()
        try:
            st.configure(
                operation_polls=body.get("operation_polls"),
                latest_status_includes_revision=body.get("latest_status_includes_revision"),
                unknown_revision_mode=body.get("unknown_revision_mode"),
                new_revisions_ready=body.get("new_revisions_ready"),
                project_number=body.get("project_number"),
                serve_base=body.get("serve_base"),
                upstream=body.get("upstream"),
                route_seed=body.get("route_seed"),
            )
        except ValueError as exc:
            raise StandinError(400, str(exc)) from exc
        return json_response(st.config())

    @app.post("/_admin/settle")
    def admin_settle() -> Response:
        return json_response({"completed": st.settle()})

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return json_response({})

    return app


def seed_from_json(state: CloudRunState, payload: Any) -> None:
    """Seed services from ``{"services": [{project, location, service, image, revisions: [...]}]}``.

    Each entry of ``revisions`` takes the keyword arguments of
    :meth:`CloudRunState.create_revision` (``image``, ``revision``, ``ready``, ``tag``,
    ``no_traffic``, ``promote``, ``create_time``); ``traffic`` (optional) is applied last.
    """
    if not isinstance(payload, Mapping) or not isinstance(payload.get("services"), list):
        raise TypeError('a Cloud Run seed is {"services": [...]}')
    for entry in payload["services"]:
        p, loc, s = str(entry["project"]), str(entry["location"]), str(entry["service"])
        state.create_service(
            p,
            loc,
            s,
            entry["image"],
            revision=entry.get("revision"),
            create_time=entry.get("create_time"),
        )
        for rev in entry.get("revisions", []):
            state.create_revision(p, loc, s, **rev)
        if entry.get("traffic"):
            state.set_traffic(p, loc, s, entry["traffic"])
