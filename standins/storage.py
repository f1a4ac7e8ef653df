"""Cloud Storage JSON API v1 stand-in: buckets, objects, uploads and downloads over REST.

``google.cloud.storage.Client`` runs against it unmodified, pointed at it either by
``client_options={"api_endpoint": url}`` with ``AnonymousCredentials()`` or by the
``STORAGE_EMULATOR_HOST=url`` environment variable (which the client honours itself):

- buckets: get, insert, list, patch (retention policy, uniform access, labels, lifecycle),
  delete (empty only), ``lockRetentionPolicy``;
- objects: insert by ``uploadType=media``, ``multipart`` and ``resumable`` (chunks, status
  checks, retransmitted bytes ignored, cancel), get (metadata, or ``alt=media``), download
  (``/download/storage/v1/...``, ``Range`` requests), list (``prefix``, ``delimiter``,
  ``startOffset``/``endOffset``, paging), patch/update, delete, ``copyTo``, ``rewriteTo``.

Behaviour as Cloud Storage has it: ``md5Hash`` and ``crc32c`` are base64 of the digests
(CRC32C big-endian), downloads carry them in ``X-Goog-Hash`` so the client verifies what it
reads; a checksum the client sends with an upload is checked (400 on mismatch);
``generation`` is a microsecond timestamp and ``metageneration`` counts metadata changes
(both int64, JSON strings); ``ifGenerationMatch`` & co. answer 412 ``conditionNotMet``
(for resumable uploads they are checked when the upload completes, not when it starts); an
object younger than its bucket's retention period cannot be deleted or overwritten (403);
uniform bucket-level access refuses object ACLs; errors use the JSON API's shape
``{"error": {"errors": [{domain, reason, message}], "code", "message"}}``.

Object bytes live in memory, or (``storage_dir``) in files under a directory of their own,
written as they stream in: a resumable upload never sits in memory whole. Admin API under
``/_admin/`` (JSON); the same operations are methods of :class:`StorageState`. See
``docs/standins.md``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote, unquote, urlencode, urlsplit

import google_crc32c
from flask import Flask, Response, has_request_context, request
from werkzeug.exceptions import HTTPException

from standins._common import (
    JSON,
    Clock,
    FaultInjection,
    FaultRule,
    FaultsAndLog,
    SegmentConverter,
    StandinError,
    add_fault_admin_routes,
    admin_json,
    install_request_hooks,
    request_body,
    utcnow,
)

logger = logging.getLogger("standins.storage")

DEFAULT_PROJECT = "sight-local"
#: Resumable chunks other than the last must be multiples of this (GCS: 256 KiB).
CHUNK_GRANULARITY = 256 * 1024
_IO_CHUNK = 1024 * 1024
_PAGE_MAX = 1000
_MAX_RETENTION_S = 3_155_760_000  # 100 years, Cloud Storage's limit
_UBLA_LOCK_DAYS = 90  # uniform access can be turned off for 90 days after it was turned on
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]$")
_MULTI_REGIONS = {"US", "EU", "ASIA"}
_DUAL_REGIONS = {"NAM4", "EUR4", "ASIA1", "EUR5", "EUR7", "EUR8"}
_OBJECT_WRITABLE = (
    "contentType",
    "cacheControl",
    "contentDisposition",
    "contentEncoding",
    "contentLanguage",
    "customTime",
    "storageClass",
)

# JSON API ``errors[].reason`` by HTTP status
# (cloud.google.com/storage/docs/json_api/v1/status-codes).
_REASONS: dict[int, str] = {
    400: "invalid",
    401: "required",
    403: "forbidden",
    404: "notFound",
    409: "conflict",
    412: "conditionNotMet",
    416: "requestedRangeNotSatisfiable",
    429: "rateLimitExceeded",
    499: "clientClosedRequest",
    500: "backendError",
    501: "notImplemented",
    503: "backendError",
}


class GcsError(StandinError):
    """An error answered in the Cloud Storage JSON API's shape (``errors[].reason``)."""

    def __init__(
        self,
        code: int,
        message: str,
        reason: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(code, message)
        self.reason = reason or _REASONS.get(code, "unknown")
        self.headers = dict(headers or {})


def gcs_error_body(code: int, message: str, reason: str | None = None) -> JSON:
    """``{"error": {"errors": [{domain, reason, message}], "code", "message"}}``."""
    entry = {"domain": "global", "reason": reason or _REASONS.get(code, "unknown")}
    return {"error": {"errors": [{**entry, "message": message}], "code": code, "message": message}}


def _json(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    body = json.dumps(payload, indent=1, ensure_ascii=False) + "\n"
    resp = Response(body, status=status, content_type="application/json; charset=UTF-8")
    for key, value in (headers or {}).items():
        resp.headers[key] = value
    return resp


def _gcs_error(exc: GcsError) -> Response:
    return _json(gcs_error_body(exc.code, exc.message, exc.reason), exc.code, exc.headers)


def _base_url() -> str:
    """Where links (``selfLink``, ``mediaLink``) point: the host the request came to."""
    return request.host_url.rstrip("/") if has_request_context() else "http://localhost"


def gcs_time(moment: datetime) -> str:
    """Cloud Storage's timestamps: UTC, milliseconds, ``Z``."""
    utc = moment.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode("ascii")


def _etag(*fields: int) -> str:
    """An etag as Cloud Storage writes them: base64 of a protobuf message whose varint
    fields 1, 2, ... are the values (``CAE=``: metageneration 1)."""
    out = bytearray()
    for number, field_value in enumerate(fields, 1):
        out.append(number << 3)
        rest = field_value
        while True:
            byte, rest = rest & 0x7F, rest >> 7
            out.append(byte | (0x80 if rest else 0))
            if not rest:
                break
    return _b64(bytes(out))


def crc32c_b64(value: int) -> str:
    """CRC32C as Cloud Storage writes it: base64 of the 4 bytes, big-endian."""
    return _b64(struct.pack(">I", value))


# ----------------------------------------------------------------------------- bytes


class _Spool:
    """The bytes of one upload on their way in, hashed as they are written."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: IO[bytes] = path.open("w+b") if path is not None else io.BytesIO()
        self.size = 0
        self._md5 = hashlib.md5(usedforsecurity=False)
        self._crc = 0

    def write(self, data: bytes) -> None:
        if data:
            self._file.write(data)
            self._md5.update(data)
            self._crc = int(google_crc32c.extend(self._crc, data))
            self.size += len(data)

    def md5(self) -> bytes:
        return self._md5.digest()

    def crc32c(self) -> int:
        return self._crc

    def finish(self) -> bytes | None:
        """Close the spool; the bytes (memory) or ``None`` (they are in :attr:`path`)."""
        data = self._file.getvalue() if isinstance(self._file, io.BytesIO) else None
        self._file.close()
        return data

    def discard(self) -> None:
        self._file.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Store:
    """Object bytes by key: in memory, or one file per object generation in a directory of
    the stand-in's own (created under ``directory``, removed by :meth:`close`)."""

    def __init__(self, directory: Path | None) -> None:
        self._root: Path | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self._root = Path(tempfile.mkdtemp(prefix="gcs-standin-", dir=directory))
            (self._root / "objects").mkdir()
            (self._root / "uploads").mkdir()
        self._memory: dict[str, bytes] = {}

    @property
    def root(self) -> Path | None:
        return self._root

    def spool(self) -> _Spool:
        if self._root is None:
            return _Spool(None)
        return _Spool(self._root / "uploads" / uuid.uuid4().hex)

    def keep(self, spool: _Spool) -> str:
        key = uuid.uuid4().hex
        data = spool.finish()
        if self._root is None:
            self._memory[key] = data or b""
        else:
            assert spool.path is not None
            os.replace(spool.path, self._root / "objects" / key)
        return key

    def put(self, data: bytes) -> str:
        key = uuid.uuid4().hex
        if self._root is None:
            self._memory[key] = bytes(data)
        else:
            (self._root / "objects" / key).write_bytes(data)
        return key

    def open(self, key: str) -> IO[bytes]:
        if self._root is None:
            return io.BytesIO(self._memory[key])
        return (self._root / "objects" / key).open("rb")

    def copy(self, key: str) -> str:
        new = uuid.uuid4().hex
        if self._root is None:
            self._memory[new] = self._memory[key]
        else:
            shutil.copyfile(self._root / "objects" / key, self._root / "objects" / new)
        return new

    def drop(self, key: str) -> None:
        if self._root is None:
            self._memory.pop(key, None)
        else:
            (self._root / "objects" / key).unlink(missing_ok=True)

    def flip(self, key: str, offset: int) -> None:
        """Invert the byte at ``offset`` in place (a bit rot the checksums do not know of)."""
        if self._root is None:
            data = bytearray(self._memory[key])
            data[offset] ^= 0xFF
            self._memory[key] = bytes(data)
            return
        with (self._root / "objects" / key).open("r+b") as fh:
            fh.seek(offset)
            byte = fh.read(1)
            fh.seek(offset)
            fh.write(bytes([byte[0] ^ 0xFF]))

    def clear(self) -> None:
        self._memory.clear()
        if self._root is not None:
            for sub in ("objects", "uploads"):
                shutil.rmtree(self._root / sub, ignore_errors=True)
                (self._root / sub).mkdir()

    def close(self) -> None:
        self._memory.clear()
        if self._root is not None:
            shutil.rmtree(self._root, ignore_errors=True)


# ----------------------------------------------------------------------------- model


@dataclass
class _Object:
    bucket: str
    name: str
    generation: int
    key: str
    size: int
    md5: bytes
    crc32c: int
    content_type: str
    metadata: dict[str, str]
    created: datetime
    updated: datetime
    metageneration: int = 1
    fields: dict[str, str] = field(default_factory=dict)  # cacheControl, contentEncoding, ...


@dataclass
class _Bucket:
    name: str
    project: str
    location: str
    storage_class: str
    created: datetime
    updated: datetime
    uniform_access: bool
    uniform_access_since: datetime | None
    public_access_prevention: str = "inherited"
    retention_period_s: int | None = None
    retention_effective: datetime | None = None
    retention_locked: bool = False
    lifecycle: list[JSON] = field(default_factory=list)
    labels: dict[str, str] = field(default_factory=dict)
    versioning: bool = False
    metageneration: int = 1
    objects: dict[str, _Object] = field(default_factory=dict)


@dataclass
class _Upload:
    upload_id: str
    bucket: str
    name: str
    resource: JSON
    content_type: str
    conditions: dict[str, int]
    total: int | None
    spool: _Spool
    lock: threading.Lock = field(default_factory=threading.Lock)
    result: JSON | None = None


@dataclass(frozen=True)
class Download:
    """An object's bytes to stream out: the open file, the range and the headers."""

    stream: IO[bytes]
    start: int
    length: int
    status: int
    headers: dict[str, str]
    cut_after: int | None


_CONDITIONS = (
    "ifGenerationMatch",
    "ifGenerationNotMatch",
    "ifMetagenerationMatch",
    "ifMetagenerationNotMatch",
)
_SOURCE_CONDITIONS = {
    "ifSourceGenerationMatch": "ifGenerationMatch",
    "ifSourceGenerationNotMatch": "ifGenerationNotMatch",
    "ifSourceMetagenerationMatch": "ifMetagenerationMatch",
    "ifSourceMetagenerationNotMatch": "ifMetagenerationNotMatch",
}


def _int_arg(args: Mapping[str, str], name: str) -> int | None:
    value = args.get(name)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise GcsError(400, f"Invalid value for {name}: {value}") from None


def conditions_from(args: Mapping[str, str], source: bool = False) -> dict[str, int]:
    """The generation preconditions of a request (``ifSource...`` ones with ``source``)."""
    names = _SOURCE_CONDITIONS if source else {c: c for c in _CONDITIONS}
    found: dict[str, int] = {}
    for arg, name in names.items():
        value = _int_arg(args, arg)
        if value is not None:
            found[name] = value
    return found


def _check_conditions(obj: _Object | None, conditions: Mapping[str, int], read: bool) -> None:
    """412 when a precondition does not hold (304 for a read's ``...NotMatch``)."""
    failed = GcsError(412, "At least one of the pre-conditions you specified did not hold.")
    live = obj.generation if obj is not None else 0  # 0: "no live object"
    gen = conditions.get("ifGenerationMatch")
    if gen is not None and live != gen:
        raise failed
    meta = conditions.get("ifMetagenerationMatch")
    if meta is not None and (obj is None or obj.metageneration != meta):
        raise failed
    not_modified = GcsError(304, "Not Modified") if read else failed
    not_gen = conditions.get("ifGenerationNotMatch")
    if not_gen is not None and live == not_gen:
        raise not_modified
    not_meta = conditions.get("ifMetagenerationNotMatch")
    if not_meta is not None and obj is not None and obj.metageneration == not_meta:
        raise not_modified


def _object_name(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise GcsError(400, "Required", "required")
    if len(name.encode("utf-8")) > 1024 or "\r" in name or "\n" in name or name in {".", ".."}:
        raise GcsError(400, f"The specified object name is not valid: {name!r}.")
    return name


def _writable(resource: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(``metadata``, the other writable string fields) of an object resource."""
    raw = resource.get("metadata") or {}
    if not isinstance(raw, dict):
        raise GcsError(400, "Invalid value for metadata: expected an object.")
    metadata = {str(k): str(v) for k, v in raw.items() if v is not None}
    fields = {k: str(resource[k]) for k in _OBJECT_WRITABLE if resource.get(k) is not None}
    return metadata, fields


def _page_token(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode("utf-8")).decode("ascii")


def _after_token(token: str | None) -> str | None:
    if not token:
        return None
    try:
        return base64.urlsafe_b64decode(token.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        raise GcsError(400, "Invalid page token.") from None


def _max_results(args: Mapping[str, str]) -> int:
    value = _int_arg(args, "maxResults")
    if value is None:
        return _PAGE_MAX
    if value < 1:
        raise GcsError(400, f"Invalid value for maxResults: {value}")
    return min(value, _PAGE_MAX)


# ----------------------------------------------------------------------------- state


class StorageState(FaultInjection):
    """Buckets, objects, resumable uploads, faults and the request log; thread-safe.

    ``storage_dir``: keep object bytes in files under a new directory inside it (removed by
    :meth:`close`) instead of in memory -- for uploads of hundreds of MB.
    """

    def __init__(
        self,
        *,
        storage_dir: str | Path | None = None,
        project_number: str = "123456789012",
        clock: Clock = utcnow,
    ) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.project_number = project_number
        self.log = FaultsAndLog(self._lock, clock)
        self._store = _Store(Path(storage_dir) if storage_dir is not None else None)
        self._buckets: dict[str, _Bucket] = {}
        self._uploads: dict[str, _Upload] = {}
        self._last_generation = 0
        self._cuts: list[int] = []

    @property
    def storage_root(self) -> Path | None:
        """The directory holding the object files (``None``: in memory)."""
        return self._store.root

    # ------------------------------------------------------------------ buckets

    def create_bucket(
        self,
        name: str,
        *,
        project: str = DEFAULT_PROJECT,
        location: str = "EUROPE-WEST1",
        retention_period_s: int | None = None,
        uniform_access: bool = True,
        lifecycle: list[JSON] | None = None,
        labels: Mapping[str, str] | None = None,
    ) -> JSON:
        """Create a bucket (as ``buckets.insert``); returns its resource."""
        resource: JSON = {
            "name": name,
            "location": location,
            "iamConfiguration": {"uniformBucketLevelAccess": {"enabled": uniform_access}},
            "labels": dict(labels or {}),
        }
        if retention_period_s is not None:
            resource["retentionPolicy"] = {"retentionPeriod": str(retention_period_s)}
        if lifecycle is not None:
            resource["lifecycle"] = {"rule": lifecycle}
        return self.insert_bucket(project, resource)

    def insert_bucket(self, project: str, resource: Mapping[str, Any]) -> JSON:
        name = resource.get("name")
        if not isinstance(name, str) or not name:
            raise GcsError(400, "Required", "required")
        if not _BUCKET_NAME.match(name) or ".." in name:
            raise GcsError(400, f"Invalid bucket name: '{name}'", "invalid")
        now = self._clock()
        location = str(resource.get("location") or "US").upper()
        iam = resource.get("iamConfiguration") or {}
        ubla = iam.get("uniformBucketLevelAccess") or iam.get("bucketPolicyOnly") or {}
        uniform = bool(ubla.get("enabled", False))
        bucket = _Bucket(
            name=name,
            project=project,
            location=location,
            storage_class=str(resource.get("storageClass") or "STANDARD"),
            created=now,
            updated=now,
            uniform_access=uniform,
            uniform_access_since=now if uniform else None,
            public_access_prevention=str(iam.get("publicAccessPrevention") or "inherited"),
            versioning=bool((resource.get("versioning") or {}).get("enabled", False)),
        )
        self._apply_bucket_fields(bucket, resource, now, creating=True)
        with self._lock:
            if name in self._buckets:
                raise GcsError(
                    409,
                    "Your previous request to create the named bucket succeeded and you "
                    "already own it.",
                )
            self._buckets[name] = bucket
            return self._bucket_json(bucket)

    def _apply_bucket_fields(
        self, bucket: _Bucket, patch: Mapping[str, Any], now: datetime, creating: bool = False
    ) -> None:
        if "retentionPolicy" in patch:
            policy = patch["retentionPolicy"]
            if policy is None or policy == {}:
                if bucket.retention_locked:
                    raise GcsError(
                        403, f"Cannot remove a locked retention policy for bucket '{bucket.name}'."
                    )
                bucket.retention_period_s = None
                bucket.retention_effective = None
            else:
                try:
                    period = int(policy["retentionPeriod"])
                except (KeyError, TypeError, ValueError):
                    raise GcsError(
                        400, "Invalid argument: retentionPolicy.retentionPeriod."
                    ) from None
                if not 0 < period <= _MAX_RETENTION_S:
                    raise GcsError(400, f"Invalid retention period: {period}.")
                if bucket.retention_locked and period < (bucket.retention_period_s or 0):
                    raise GcsError(
                        403,
                        "Cannot reduce retention duration of a locked Retention Policy for "
                        f"bucket '{bucket.name}'.",
                    )
                if creating and policy.get("isLocked"):
                    raise GcsError(400, "Cannot create a bucket with a locked retention policy.")
                bucket.retention_period_s = period
                bucket.retention_effective = now
        if "iamConfiguration" in patch and not creating:
            iam = patch["iamConfiguration"] or {}
            ubla = iam.get("uniformBucketLevelAccess") or iam.get("bucketPolicyOnly")
            if ubla is not None and "enabled" in ubla:
                enabled = bool(ubla["enabled"])
                if enabled != bucket.uniform_access:
                    bucket.uniform_access = enabled
                    bucket.uniform_access_since = now if enabled else None
            if iam.get("publicAccessPrevention"):
                bucket.public_access_prevention = str(iam["publicAccessPrevention"])
        if "lifecycle" in patch:
            rules = (patch["lifecycle"] or {}).get("rule") or []
            if not isinstance(rules, list) or not all(
                isinstance(r, dict) and "action" in r for r in rules
            ):
                raise GcsError(400, "Invalid argument: lifecycle.rule.")
            bucket.lifecycle = [dict(r) for r in rules]
        if "labels" in patch:
            labels = patch["labels"] or {}
            if creating:
                bucket.labels = {str(k): str(v) for k, v in labels.items() if v is not None}
            else:
                for key, value in labels.items():
                    if value is None:
                        bucket.labels.pop(str(key), None)
                    else:
                        bucket.labels[str(key)] = str(value)
        if "versioning" in patch and not creating:
            bucket.versioning = bool((patch["versioning"] or {}).get("enabled", False))
        if "storageClass" in patch and not creating and patch["storageClass"]:
            bucket.storage_class = str(patch["storageClass"])

    def get_bucket(self, name: str, conditions: Mapping[str, int] | None = None) -> JSON:
        with self._lock:
            bucket = self._bucket(name)
            self._check_bucket_conditions(bucket, conditions or {})
            return self._bucket_json(bucket)

    def list_buckets(
        self, project: str, prefix: str = "", page_token: str | None = None, max_results: int = 1000
    ) -> JSON:
        after = _after_token(page_token)
        with self._lock:
            names = sorted(
                b.name
                for b in self._buckets.values()
                if b.project in (project, self.project_number) and b.name.startswith(prefix)
            )
            if after is not None:
                names = [n for n in names if n > after]
            page = names[:max_results]
            answer: JSON = {
                "kind": "storage#buckets",
                "items": [self._bucket_json(self._buckets[n]) for n in page],
            }
            if len(names) > len(page):
                answer["nextPageToken"] = _page_token(page[-1])
            return answer

    def patch_bucket(
        self, name: str, patch: Mapping[str, Any], conditions: Mapping[str, int] | None = None
    ) -> JSON:
        now = self._clock()
        with self._lock:
            bucket = self._bucket(name)
            self._check_bucket_conditions(bucket, conditions or {})
            self._apply_bucket_fields(bucket, patch, now)
            bucket.metageneration += 1
            bucket.updated = now
            return self._bucket_json(bucket)

    def lock_retention_policy(self, name: str, metageneration: int | None) -> JSON:
        with self._lock:
            bucket = self._bucket(name)
            if metageneration is None:
                raise GcsError(400, "Required parameter: ifMetagenerationMatch", "required")
            self._check_bucket_conditions(bucket, {"ifMetagenerationMatch": metageneration})
            if bucket.retention_period_s is None:
                raise GcsError(400, f"Bucket '{name}' has no retention policy to lock.")
            bucket.retention_locked = True
            bucket.metageneration += 1
            bucket.updated = self._clock()
            return self._bucket_json(bucket)

    def delete_bucket(self, name: str) -> None:
        with self._lock:
            bucket = self._bucket(name)
            if bucket.objects:
                raise GcsError(409, "The bucket you tried to delete is not empty.")
            del self._buckets[name]

    def set_retention(self, bucket: str, seconds: int | None, *, locked: bool = False) -> JSON:
        """Set (or remove, ``None``) a bucket's retention policy; ``locked`` locks it."""
        patch = {"retentionPolicy": None if seconds is None else {"retentionPeriod": seconds}}
        resource = self.patch_bucket(bucket, patch)
        if locked:
            resource = self.lock_retention_policy(bucket, int(resource["metageneration"]))
        return resource

    def _bucket(self, name: str) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            raise GcsError(404, "The specified bucket does not exist.")
        return bucket

    @staticmethod
    def _check_bucket_conditions(bucket: _Bucket, conditions: Mapping[str, int]) -> None:
        match = conditions.get("ifMetagenerationMatch")
        not_match = conditions.get("ifMetagenerationNotMatch")
        if (match is not None and bucket.metageneration != match) or (
            not_match is not None and bucket.metageneration == not_match
        ):
            raise GcsError(412, "At least one of the pre-conditions you specified did not hold.")

    def _bucket_json(self, bucket: _Bucket) -> JSON:
        base = _base_url()
        iam: JSON = {
            "bucketPolicyOnly": {"enabled": bucket.uniform_access},
            "uniformBucketLevelAccess": {"enabled": bucket.uniform_access},
            "publicAccessPrevention": bucket.public_access_prevention,
        }
        if bucket.uniform_access_since is not None:
            locked = gcs_time(bucket.uniform_access_since + timedelta(days=_UBLA_LOCK_DAYS))
            iam["bucketPolicyOnly"]["lockedTime"] = locked
            iam["uniformBucketLevelAccess"]["lockedTime"] = locked
        location_type = (
            "multi-region"
            if bucket.location in _MULTI_REGIONS
            else "dual-region"
            if bucket.location in _DUAL_REGIONS
            else "region"
        )
        out: JSON = {
            "kind": "storage#bucket",
            "selfLink": f"{base}/storage/v1/b/{bucket.name}",
            "id": bucket.name,
            "name": bucket.name,
            "projectNumber": self.project_number,
            "metageneration": str(bucket.metageneration),
            "location": bucket.location,
            "storageClass": bucket.storage_class,
            "etag": _etag(bucket.metageneration),
            "timeCreated": gcs_time(bucket.created),
            "updated": gcs_time(bucket.updated),
            "iamConfiguration": iam,
            "locationType": location_type,
            "softDeletePolicy": {
                "retentionDurationSeconds": "604800",
                "effectiveTime": gcs_time(bucket.created),
            },
            "rpo": "DEFAULT",
        }
        if bucket.versioning:
            out["versioning"] = {"enabled": True}
        if bucket.retention_period_s is not None:
            policy: JSON = {"retentionPeriod": str(bucket.retention_period_s)}
            if bucket.retention_effective is not None:
                policy["effectiveTime"] = gcs_time(bucket.retention_effective)
            if bucket.retention_locked:
                policy["isLocked"] = True
            out["retentionPolicy"] = policy
        if bucket.lifecycle:
            out["lifecycle"] = {"rule": [dict(r) for r in bucket.lifecycle]}
        if bucket.labels:
            out["labels"] = dict(bucket.labels)
        return out

    # ------------------------------------------------------------------ objects

    def _next_generation(self) -> int:
        now_us = int(self._clock().timestamp() * 1_000_000)
        self._last_generation = max(self._last_generation + 1, now_us)
        return self._last_generation

    def _live(self, bucket: str, name: str, generation: int | None = None) -> _Object:
        obj = self._bucket(bucket).objects.get(name)
        if obj is None or (generation is not None and obj.generation != generation):
            raise GcsError(404, f"No such object: {bucket}/{name}")
        return obj

    def _check_retention(self, bucket: _Bucket, obj: _Object) -> None:
        if bucket.retention_period_s is None:
            return
        until = obj.created + timedelta(seconds=bucket.retention_period_s)
        if self._clock() < until:
            raise GcsError(
                403,
                f"Object '{bucket.name}/{obj.name}' is subject to bucket's retention policy "
                f"and cannot be deleted, overwritten or archived until {gcs_time(until)}",
            )

    def _commit(
        self,
        bucket_name: str,
        name: str,
        key_or_spool: str | _Spool,
        *,
        size: int,
        md5: bytes,
        crc32c: int,
        resource: Mapping[str, Any],
        content_type: str,
        conditions: Mapping[str, int],
    ) -> JSON:
        """Make the bytes the live object ``name``: preconditions, retention, then swap."""
        with self._lock:
            try:
                metadata, fields = _writable(resource)
                bucket = self._bucket(bucket_name)
                current = bucket.objects.get(name)
                _check_conditions(current, conditions, read=False)
                if current is not None:
                    self._check_retention(bucket, current)
            except GcsError:
                if isinstance(key_or_spool, _Spool):
                    key_or_spool.discard()
                else:
                    self._store.drop(key_or_spool)
                raise
            key = (
                self._store.keep(key_or_spool) if isinstance(key_or_spool, _Spool) else key_or_spool
            )
            now = self._clock()
            obj = _Object(
                bucket=bucket_name,
                name=name,
                generation=self._next_generation(),
                key=key,
                size=size,
                md5=md5,
                crc32c=crc32c,
                content_type=content_type or "application/octet-stream",
                metadata=metadata,
                created=now,
                updated=now,
                fields={k: v for k, v in fields.items() if k != "contentType"},
            )
            bucket.objects[name] = obj
            if current is not None:
                self._store.drop(current.key)
            return self._object_json(obj, bucket)

    def put_object(
        self,
        bucket: str,
        name: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> JSON:
        """Store an object directly (seeding tests); returns its resource."""
        _object_name(name)
        conditions = (
            {} if if_generation_match is None else {"ifGenerationMatch": if_generation_match}
        )
        return self._commit(
            bucket,
            name,
            self._store.put(data),
            size=len(data),
            md5=hashlib.md5(data, usedforsecurity=False).digest(),
            crc32c=int(google_crc32c.value(data)),
            resource={"metadata": dict(metadata or {})},
            content_type=content_type,
            conditions=conditions,
        )

    def get_object(
        self,
        bucket: str,
        name: str,
        generation: int | None = None,
        conditions: Mapping[str, int] | None = None,
    ) -> JSON:
        with self._lock:
            obj = self._live(bucket, name, generation)
            _check_conditions(obj, conditions or {}, read=True)
            return self._object_json(obj, self._buckets[bucket])

    def object_bytes(self, bucket: str, name: str) -> bytes:
        """The stored bytes of a live object (tests, drills)."""
        with self._lock:
            stream = self._store.open(self._live(bucket, name).key)
        with stream:
            return stream.read()

    def objects(self, bucket: str, prefix: str = "") -> list[JSON]:
        """Every live object of ``bucket`` under ``prefix``, by name."""
        with self._lock:
            b = self._bucket(bucket)
            return [
                self._object_json(b.objects[n], b)
                for n in sorted(b.objects)
                if n.startswith(prefix)
            ]

    def buckets(self) -> list[JSON]:
        with self._lock:
            return [self._bucket_json(self._buckets[n]) for n in sorted(self._buckets)]

    def list_objects(self, bucket: str, args: Mapping[str, str]) -> JSON:
        """``objects.list``: names in order, ``prefixes`` folded at the ``delimiter``; a page
        holds at most ``maxResults`` items and prefixes together."""
        if args.get("matchGlob"):
            raise GcsError(501, "matchGlob is not implemented by the stand-in.")
        prefix = args.get("prefix", "")
        delimiter = args.get("delimiter", "")
        start, end = args.get("startOffset"), args.get("endOffset")
        trailing = args.get("includeTrailingDelimiter", "").lower() == "true"
        after = _after_token(args.get("pageToken"))
        limit = _max_results(args)
        with self._lock:
            b = self._bucket(bucket)
            entries: list[tuple[str, bool]] = []  # (key, is_prefix)
            seen: set[str] = set()
            for name in sorted(b.objects):
                if not name.startswith(prefix):
                    continue
                if (start and name < start) or (end and name >= end):
                    continue
                if delimiter:
                    cut = name.find(delimiter, len(prefix))
                    if cut >= 0:
                        folded = name[: cut + len(delimiter)]
                        if folded not in seen:
                            seen.add(folded)
                            entries.append((folded, True))
                        if not (trailing and folded == name):
                            continue
                entries.append((name, False))
            if after is not None:
                entries = [e for e in entries if e[0] > after]
            page = entries[:limit]
            answer: JSON = {"kind": "storage#objects"}
            prefixes = [key for key, is_prefix in page if is_prefix]
            items = [
                self._object_json(b.objects[key], b) for key, is_prefix in page if not is_prefix
            ]
            if len(entries) > len(page):
                answer["nextPageToken"] = _page_token(page[-1][0])
            if prefixes:
                answer["prefixes"] = prefixes
            if items:
                answer["items"] = items
            return answer

    def patch_object(
        self,
        bucket: str,
        name: str,
        patch: Mapping[str, Any],
        conditions: Mapping[str, int] | None = None,
        *,
        replace: bool = False,
    ) -> JSON:
        """``objects.patch`` (``replace``: ``objects.update``) -- metadata only."""
        with self._lock:
            obj = self._live(bucket, name, _int_or_none(patch.get("generation")))
            _check_conditions(obj, conditions or {}, read=False)
            if "metadata" in patch or replace:
                raw = patch.get("metadata") or {}
                if not isinstance(raw, dict):
                    raise GcsError(400, "Invalid value for metadata: expected an object.")
                merged = {} if replace else dict(obj.metadata)
                for key, value in raw.items():
                    if value is None:
                        merged.pop(str(key), None)
                    else:
                        merged[str(key)] = str(value)
                obj.metadata = merged
            for key in _OBJECT_WRITABLE:
                if key not in patch and not replace:
                    continue
                value = patch.get(key)
                if key == "contentType":
                    obj.content_type = str(value or "application/octet-stream")
                elif value is None:
                    obj.fields.pop(key, None)
                else:
                    obj.fields[key] = str(value)
            obj.metageneration += 1
            obj.updated = self._clock()
            return self._object_json(obj, self._buckets[bucket])

    def delete_object(
        self,
        bucket: str,
        name: str,
        generation: int | None = None,
        conditions: Mapping[str, int] | None = None,
    ) -> None:
        with self._lock:
            b = self._bucket(bucket)
            obj = self._live(bucket, name, generation)
            _check_conditions(obj, conditions or {}, read=False)
            self._check_retention(b, obj)
            del b.objects[name]
            self._store.drop(obj.key)

    def copy_object(
        self,
        src_bucket: str,
        src_name: str,
        dst_bucket: str,
        dst_name: str,
        *,
        resource: Mapping[str, Any] | None = None,
        source_generation: int | None = None,
        source_conditions: Mapping[str, int] | None = None,
        conditions: Mapping[str, int] | None = None,
    ) -> JSON:
        """``copyTo`` / ``rewriteTo`` (done in one call): a new object with the source's
        bytes; metadata from ``resource`` when it has any, else the source's."""
        _object_name(dst_name)
        with self._lock:
            src = self._live(src_bucket, src_name, source_generation)
            _check_conditions(src, source_conditions or {}, read=False)
            self._bucket(dst_bucket)
            key = self._store.copy(src.key)
            size, md5, crc, ctype = src.size, src.md5, src.crc32c, src.content_type
            given = dict(resource or {})
            if not any(k in given for k in ("metadata", *_OBJECT_WRITABLE)):
                given = {"metadata": dict(src.metadata), **src.fields}
            ctype = str(given.get("contentType") or ctype)
        return self._commit(
            dst_bucket,
            dst_name,
            key,
            size=size,
            md5=md5,
            crc32c=crc,
            resource=given,
            content_type=ctype,
            conditions=conditions or {},
        )

    def _object_json(self, obj: _Object, bucket: _Bucket) -> JSON:
        base = _base_url()
        quoted = quote(obj.name, safe="")
        out: JSON = {
            "kind": "storage#object",
            "id": f"{obj.bucket}/{obj.name}/{obj.generation}",
            "selfLink": f"{base}/storage/v1/b/{obj.bucket}/o/{quoted}",
            "mediaLink": f"{base}/download/storage/v1/b/{obj.bucket}/o/{quoted}"
            f"?generation={obj.generation}&alt=media",
            "name": obj.name,
            "bucket": obj.bucket,
            "generation": str(obj.generation),
            "metageneration": str(obj.metageneration),
            "contentType": obj.content_type,
            "storageClass": obj.fields.get("storageClass", bucket.storage_class),
            "size": str(obj.size),
            "md5Hash": _b64(obj.md5),
            "crc32c": crc32c_b64(obj.crc32c),
            "etag": _etag(obj.generation, obj.metageneration),
            "timeCreated": gcs_time(obj.created),
            "updated": gcs_time(obj.updated),
            "timeStorageClassUpdated": gcs_time(obj.created),
            "timeFinalized": gcs_time(obj.created),
        }
        for key in ("cacheControl", "contentDisposition", "contentEncoding", "contentLanguage"):
            if key in obj.fields:
                out[key] = obj.fields[key]
        if "customTime" in obj.fields:
            out["customTime"] = obj.fields["customTime"]
        if obj.metadata:
            out["metadata"] = dict(obj.metadata)
        if bucket.retention_period_s is not None:
            until = obj.created + timedelta(seconds=bucket.retention_period_s)
            out["retentionExpirationTime"] = gcs_time(until)
        return out

    # ------------------------------------------------------------------ uploads

    def _check_acl(self, bucket: str, resource: Mapping[str, Any], args: Mapping[str, str]) -> None:
        with self._lock:
            b = self._bucket(bucket)
            if b.uniform_access and (resource.get("acl") or args.get("predefinedAcl")):
                raise GcsError(
                    400,
                    "Cannot insert legacy ACL for an object when uniform bucket-level access "
                    "is enabled. Read more at https://cloud.google.com/storage/docs/uniform-bucket-level-access",
                )

    def upload_stream(
        self,
        bucket: str,
        name: str,
        stream: IO[bytes],
        *,
        resource: Mapping[str, Any],
        content_type: str,
        conditions: Mapping[str, int],
        expected: Mapping[str, str] | None = None,
        args: Mapping[str, str] | None = None,
    ) -> JSON:
        """One-request upload (media or the media part of multipart): streamed to the spool,
        checked against the checksums the client sent (``expected``), then committed."""
        _object_name(name)
        self._check_acl(bucket, resource, args or {})
        spool = self._store.spool()
        try:
            while chunk := stream.read(_IO_CHUNK):
                spool.write(chunk)
            _verify_hashes(spool, expected or {})
        except BaseException:
            spool.discard()
            raise
        return self._commit(
            bucket,
            name,
            spool,
            size=spool.size,
            md5=spool.md5(),
            crc32c=spool.crc32c(),
            resource=resource,
            content_type=content_type,
            conditions=conditions,
        )

    def start_upload(
        self,
        bucket: str,
        name: str,
        *,
        resource: Mapping[str, Any],
        content_type: str,
        conditions: Mapping[str, int],
        total: int | None,
        args: Mapping[str, str] | None = None,
    ) -> str:
        """Open a resumable upload session; returns its ``upload_id``. Preconditions are
        kept and checked when the upload completes, as Cloud Storage does."""
        _object_name(name)
        self._check_acl(bucket, resource, args or {})
        upload = _Upload(
            upload_id=uuid.uuid4().hex,
            bucket=bucket,
            name=name,
            resource=dict(resource),
            content_type=content_type,
            conditions=dict(conditions),
            total=total,
            spool=self._store.spool(),
        )
        with self._lock:
            self._uploads[upload.upload_id] = upload
        return upload.upload_id

    def _upload(self, upload_id: str) -> _Upload:
        with self._lock:
            upload = self._uploads.get(upload_id)
        if upload is None:
            raise GcsError(404, "No such upload session.")
        return upload

    def put_chunk(
        self,
        upload_id: str,
        content_range: str | None,
        stream: IO[bytes],
        length: int,
        x_goog_hash: str | None = None,
    ) -> tuple[int, JSON | None]:
        """One PUT to a resumable session: ``(308, None)`` with more to come -- the range
        persisted is then :meth:`persisted` -- or ``(200, object)`` once complete.

        Bytes at offsets already persisted are skipped (a retransmitted chunk); a chunk that
        starts past them, or a non-final chunk that is not a multiple of 256 KiB, is 400.
        """
        upload = self._upload(upload_id)
        with upload.lock:
            if upload.result is not None:
                return 200, upload.result
            start, end, total = _parse_content_range(content_range, length)
            if total is not None:
                if upload.total is not None and upload.total != total:
                    raise GcsError(400, "The total size of the upload cannot change.")
                upload.total = total
            persisted = upload.spool.size
            if start is not None and end is not None:
                if start > persisted:
                    raise GcsError(
                        400,
                        f"Invalid request. The upload has {persisted} bytes persisted; a chunk "
                        f"cannot start at byte {start}.",
                    )
                final = upload.total is not None and end + 1 >= upload.total
                if not final and (end + 1 - start) % CHUNK_GRANULARITY:
                    raise GcsError(
                        400,
                        f"Invalid request. There were {end + 1 - start} byte(s) in the request "
                        f"body; a non-final chunk must be a multiple of {CHUNK_GRANULARITY}.",
                    )
                skip = persisted - start
                while skip > 0:
                    dropped = stream.read(min(skip, _IO_CHUNK))
                    if not dropped:
                        break
                    skip -= len(dropped)
                while chunk := stream.read(_IO_CHUNK):
                    upload.spool.write(chunk)
            if upload.total is not None and upload.spool.size > upload.total:
                self._abandon(upload)
                raise GcsError(400, "Invalid request. More bytes were sent than the total size.")
            if upload.total is None or upload.spool.size < upload.total:
                return 308, None
            try:
                _verify_hashes(upload.spool, _parse_x_goog_hash(x_goog_hash))
            except GcsError:
                self._abandon(upload)
                raise
            try:
                result = self._commit(
                    upload.bucket,
                    upload.name,
                    upload.spool,
                    size=upload.spool.size,
                    md5=upload.spool.md5(),
                    crc32c=upload.spool.crc32c(),
                    resource=upload.resource,
                    content_type=upload.content_type,
                    conditions=upload.conditions,
                )
            except GcsError:
                with self._lock:
                    self._uploads.pop(upload.upload_id, None)
                raise
            upload.result = result
            return 200, result

    def persisted(self, upload_id: str) -> int:
        return self._upload(upload_id).spool.size

    def cancel_upload(self, upload_id: str) -> None:
        upload = self._upload(upload_id)
        with upload.lock:
            self._abandon(upload)

    def _abandon(self, upload: _Upload) -> None:
        with self._lock:
            self._uploads.pop(upload.upload_id, None)
        if upload.result is None:
            upload.spool.discard()

    def open_uploads(self) -> list[JSON]:
        """Resumable sessions not completed or cancelled (``bytes``: persisted so far)."""
        with self._lock:
            return [
                {"upload_id": u.upload_id, "bucket": u.bucket, "name": u.name,
                 "bytes": u.spool.size, "total": u.total}
                for u in self._uploads.values()
                if u.result is None
            ]  # fmt: skip

    # ------------------------------------------------------------------ downloads

    def open_download(
        self,
        bucket: str,
        name: str,
        generation: int | None,
        conditions: Mapping[str, int],
        range_header: str | None,
    ) -> Download:
        """The bytes (or the requested range) of a live object, with Cloud Storage's
        headers: ``X-Goog-Hash`` (crc32c and md5 of the whole object, also on a 206),
        ``X-Goog-Generation``, ``X-Goog-Stored-Content-Length``, ..."""
        with self._lock:
            obj = self._live(bucket, name, generation)
            _check_conditions(obj, conditions, read=True)
            span = _parse_range(range_header, obj.size)
            cut = self._cuts.pop(0) if self._cuts else None
            stream = self._store.open(obj.key)
        headers = {
            "Content-Type": obj.content_type,
            "X-Goog-Generation": str(obj.generation),
            "X-Goog-Metageneration": str(obj.metageneration),
            "X-Goog-Stored-Content-Encoding": obj.fields.get("contentEncoding", "identity"),
            "X-Goog-Stored-Content-Length": str(obj.size),
            "X-Goog-Storage-Class": obj.fields.get("storageClass", "STANDARD"),
            "X-Goog-Hash": f"crc32c={crc32c_b64(obj.crc32c)},md5={_b64(obj.md5)}",
            "ETag": _etag(obj.generation, obj.metageneration),
            "Last-Modified": obj.updated.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT"),
            "Cache-Control": obj.fields.get("cacheControl", "no-cache, no-store, max-age=0"),
        }
        if "contentDisposition" in obj.fields:
            headers["Content-Disposition"] = obj.fields["contentDisposition"]
        if span is None:
            return Download(stream, 0, obj.size, 200, headers, cut)
        first, last = span
        headers["Content-Range"] = f"bytes {first}-{last}/{obj.size}"
        return Download(stream, first, last - first + 1, 206, headers, cut)

    # ------------------------------------------------------------------ drills and faults

    def corrupt(self, bucket: str, name: str, offset: int = 0) -> None:
        """Invert one stored byte of a live object; its recorded md5/crc32c stay as they
        were, so a client that verifies downloads raises ``DataCorruption``."""
        with self._lock:
            obj = self._live(bucket, name)
            if not 0 <= offset < obj.size:
                raise ValueError(f"offset {offset} is outside the object ({obj.size} bytes)")
            self._store.flip(obj.key, offset)

    def backdate(self, bucket: str, name: str, seconds: float) -> JSON:
        """Make a live object ``seconds`` older (creation and update time) -- to test
        retention expiry, age checks and pruning without waiting."""
        with self._lock:
            obj = self._live(bucket, name)
            obj.created -= timedelta(seconds=seconds)
            obj.updated -= timedelta(seconds=seconds)
            return self._object_json(obj, self._buckets[bucket])

    def interrupt_next_download(self, after_bytes: int, count: int = 1) -> None:
        """The next ``count`` downloads drop the connection after ``after_bytes`` bytes
        (the client resumes with a ``Range`` request for the rest)."""
        if after_bytes < 0 or count < 1:
            raise ValueError("after_bytes must be >= 0 and count >= 1")
        with self._lock:
            self._cuts.extend([after_bytes] * count)

    def reset(self) -> None:
        """Forget every bucket, object, upload, fault and logged request."""
        with self._lock:
            for upload in self._uploads.values():
                if upload.result is None:
                    upload.spool.discard()
            self._uploads.clear()
            self._buckets.clear()
            self._cuts.clear()
            self._store.clear()
            self.log.reset()

    def close(self) -> None:
        """Release the storage directory (files included). The state is unusable after."""
        with self._lock:
            for upload in self._uploads.values():
                if upload.result is None:
                    upload.spool.discard()
            self._uploads.clear()
            self._buckets.clear()
            self._store.close()


def _int_or_none(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        raise GcsError(400, f"Invalid value for generation: {value}") from None


def _verify_hashes(spool: _Spool, expected: Mapping[str, str]) -> None:
    """400 when a checksum the client sent does not match the bytes received."""
    crc = expected.get("crc32c")
    if crc is not None and crc != crc32c_b64(spool.crc32c()):
        raise GcsError(
            400,
            f'Provided CRC32C "{crc}" doesn\'t match calculated CRC32C '
            f'"{crc32c_b64(spool.crc32c())}".',
        )
    md5 = expected.get("md5Hash") or expected.get("md5")
    if md5 is not None and md5 != _b64(spool.md5()):
        raise GcsError(
            400,
            f'Provided MD5 hash "{md5}" doesn\'t match calculated MD5 hash "{_b64(spool.md5())}".',
        )


def _parse_x_goog_hash(header: str | None) -> dict[str, str]:
    """``crc32c=AAAAAA==,md5=...`` -> ``{"crc32c": ..., "md5": ...}``."""
    found: dict[str, str] = {}
    for part in (header or "").split(","):
        key, sep, value = part.strip().partition("=")
        if sep and key in ("crc32c", "md5"):
            found[key] = value
    return found


_CONTENT_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")


def _parse_content_range(
    header: str | None, length: int
) -> tuple[int | None, int | None, int | None]:
    """``bytes A-B/T``, ``bytes A-B/*``, ``bytes */T``, ``bytes */*`` -> (A, B, T)."""
    if header is None:
        if length == 0:
            return None, None, None
        raise GcsError(400, "Invalid request. A resumable chunk needs a Content-Range header.")
    match = _CONTENT_RANGE.match(header.strip())
    if match is None:
        raise GcsError(400, f"Invalid Content-Range header: {header!r}")
    total = int(match.group(3)) if match.group(3) != "*" else None
    if match.group(1) is None:
        if length:
            raise GcsError(400, "Invalid request. A status check carries no bytes.")
        return None, None, total
    start, end = int(match.group(1)), int(match.group(2))
    if end < start or end - start + 1 != length:
        raise GcsError(
            400,
            f"Invalid request. There were {length} byte(s) in the request body; the "
            f"Content-Range {header!r} announces {end - start + 1}.",
        )
    return start, end, total


def _parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """A single ``bytes=`` range -> (first, last) within the object; ``None``: the whole
    object; 416 when it cannot be satisfied."""
    if not header:
        return None
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if match is None or (not match.group(1) and not match.group(2)):
        return None  # not a single byte range: Cloud Storage serves the whole object
    unsatisfiable = GcsError(
        416,
        "The requested range cannot be satisfied.",
        headers={"Content-Range": f"bytes */{size}"},
    )
    if not match.group(1):
        suffix = int(match.group(2))
        if size == 0 or suffix == 0:
            raise unsatisfiable
        return max(size - suffix, 0), size - 1
    first = int(match.group(1))
    last = int(match.group(2)) if match.group(2) else size - 1
    if first >= size or last < first:
        raise unsatisfiable
    return first, min(last, size - 1)


# ----------------------------------------------------------------------------- HTTP


def _fault_response(rule: FaultRule) -> Response:
    message = rule.body or {
        429: "The rate of change requests to the object exceeds the rate limit. Please "
        "reduce the rate of create, update, and delete requests.",
        500: "We encountered an internal error. Please try again.",
        503: "We encountered an internal error. Please try again.",
    }.get(rule.status, "Injected fault.")
    headers = {"Retry-After": str(rule.retry_after)} if rule.retry_after is not None else None
    return _json(gcs_error_body(rule.status, message), rule.status, headers)


def _logged_body() -> Any:
    """Upload bodies are logged as their size: they may be hundreds of MB."""
    if request.path.startswith("/upload/") and not (
        request.method == "POST" and request.args.get("uploadType") == "resumable"
    ):
        return {"bytes": request.content_length}
    return request_body()


def _raw_segments(prefix_len: int) -> list[str]:
    """The path segments after the first ``prefix_len``, still percent-encoded: an object
    name is one segment with its ``/`` as ``%2F`` (from the raw request target when the
    server gives it, as werkzeug does)."""
    raw = request.environ.get("RAW_URI") or request.environ.get("REQUEST_URI")
    path = urlsplit(raw).path if raw else quote(request.path)
    return path.split("/")[prefix_len:]


def _split_verb(segments: list[str]) -> tuple[str, str | None, str | None, str | None]:
    """``NAME[/copyTo|rewriteTo/b/DB/o/DNAME]`` -> (name, verb, dst bucket, dst name)."""
    for i, seg in enumerate(segments):
        if (
            seg in ("copyTo", "rewriteTo")
            and i > 0
            and len(segments) > i + 4
            and segments[i + 1] == "b"
            and segments[i + 3] == "o"
        ):
            return (
                unquote("/".join(segments[:i])),
                seg,
                unquote(segments[i + 2]),
                unquote("/".join(segments[i + 4 :])),
            )
    return unquote("/".join(segments)), None, None, None


def _select(value: Any, spec: str) -> Any:
    """Apply a ``fields`` selector (``items(name,size),nextPageToken``, ``a/b``)."""

    def parse(text: str, pos: int) -> tuple[dict[str, Any], int]:
        tree: dict[str, Any] = {}
        while pos < len(text) and text[pos] != ")":
            match = re.compile(r"[A-Za-z0-9_*/]+").match(text, pos)
            if match is None:
                raise GcsError(400, f"Invalid field selection {spec}")
            path, pos = match.group(0).split("/"), match.end()
            sub: dict[str, Any] | None = None
            if pos < len(text) and text[pos] == "(":
                sub, pos = parse(text, pos + 1)
                pos += 1
            node = tree
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = sub
            if pos < len(text) and text[pos] == ",":
                pos += 1
        return tree, pos

    def apply(item: Any, tree: dict[str, Any] | None) -> Any:
        if tree is None or "*" in tree:
            return item
        if isinstance(item, list):
            return [apply(x, tree) for x in item]
        if isinstance(item, dict):
            return {k: apply(item[k], sub) for k, sub in tree.items() if k in item}
        return item

    tree, _ = parse(spec.replace(" ", ""), 0)
    return apply(value, tree)


def _answer(payload: JSON, status: int = 200) -> Response:
    spec = request.args.get("fields")
    return _json(_select(payload, spec) if spec else payload, status)


def _body_json() -> JSON:
    raw = request.get_data(cache=True)
    if not raw:
        return {}
    try:
        payload = json.loads(raw)
    except ValueError:
        raise GcsError(400, "Parse Error", "parseError") from None
    if not isinstance(payload, dict):
        raise GcsError(400, "Invalid JSON payload: expected an object.", "parseError")
    return payload


def _multipart(body: bytes, content_type: str) -> tuple[JSON, bytes, str]:
    """(metadata, media bytes, media content type) of a ``multipart/related`` body."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if match is None or not content_type.lower().startswith("multipart/related"):
        raise GcsError(
            400, "Invalid multipart request: expected multipart/related with a boundary."
        )
    delimiter = b"--" + match.group(1).encode("latin-1")
    parts = body.split(delimiter)
    # ["", part1, part2, "--" + epilogue]
    if len(parts) < 4 or not parts[-1].startswith(b"--"):
        raise GcsError(400, "Invalid multipart request: expected a metadata and a media part.")

    def split(part: bytes) -> tuple[dict[str, str], bytes]:
        part = part.removeprefix(b"\r\n").removesuffix(b"\r\n")
        head, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise GcsError(400, "Invalid multipart request: a part has no headers.")
        headers: dict[str, str] = {}
        for line in head.decode("latin-1").split("\r\n"):
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        return headers, content

    _, meta_raw = split(parts[1])
    media_headers, media = split(parts[2])
    try:
        metadata = json.loads(meta_raw)
    except ValueError:
        raise GcsError(400, "Invalid multipart request: the metadata part is not JSON.") from None
    if not isinstance(metadata, dict):
        raise GcsError(400, "Invalid multipart request: the metadata part is not an object.")
    return metadata, media, media_headers.get("content-type", "application/octet-stream")


def _stream_download(download: Download) -> Iterator[bytes]:
    """Yield the range; with a cut, stop early: fewer bytes than ``Content-Length`` and a
    closed connection (werkzeug closes every one), which the client sees as a broken read."""
    remaining = download.length
    budget = download.cut_after if download.cut_after is not None else remaining
    with download.stream as fh:
        fh.seek(download.start)
        while remaining > 0 and budget > 0:
            chunk = fh.read(min(_IO_CHUNK, remaining, budget))
            if not chunk:
                break
            remaining -= len(chunk)
            budget -= len(chunk)
            yield chunk


def _download_response(download: Download) -> Response:
    resp = Response(_stream_download(download), status=download.status, direct_passthrough=True)
    for key, value in download.headers.items():
        resp.headers[key] = value
    resp.headers["Content-Length"] = str(download.length)
    return resp


def create_app(state: StorageState | None = None) -> Flask:
    """The Cloud Storage JSON API stand-in as a Flask app (``app.extensions["standin"]``)."""
    st = state or StorageState()
    app = Flask("standins.storage")
    app.url_map.converters["segment"] = SegmentConverter
    app.url_map.merge_slashes = False  # object names may hold "//" (encoded as %2F%2F)
    app.url_map.strict_slashes = False
    app.extensions["standin"] = st
    install_request_hooks(app, st.log, _fault_response, logger, record_body=_logged_body)

    @app.errorhandler(GcsError)
    def _gcs(exc: GcsError) -> Response:
        if exc.code == 304:
            return Response(status=304)
        return _gcs_error(exc)

    @app.errorhandler(StandinError)
    def _standin(exc: StandinError) -> Response:
        return _json(gcs_error_body(exc.code, exc.message), exc.code)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException) -> Response:
        code = exc.code or 500
        return _json(gcs_error_body(code, exc.description or exc.name), code)

    # ------------------------------------------------------------------ buckets

    @app.get("/storage/v1/b")
    def list_buckets() -> Response:
        project = request.args.get("project")
        if not project:
            raise GcsError(400, "Required parameter: project", "required")
        return _answer(
            st.list_buckets(
                project,
                request.args.get("prefix", ""),
                request.args.get("pageToken"),
                _max_results(request.args),
            )
        )

    @app.post("/storage/v1/b")
    def insert_bucket() -> Response:
        project = request.args.get("project")
        if not project:
            raise GcsError(400, "Required parameter: project", "required")
        return _answer(st.insert_bucket(project, _body_json()))

    @app.get("/storage/v1/b/<segment:bucket>")
    def get_bucket(bucket: str) -> Response:
        return _answer(st.get_bucket(bucket, conditions_from(request.args)))

    @app.route("/storage/v1/b/<segment:bucket>", methods=["PATCH", "PUT"])
    def patch_bucket(bucket: str) -> Response:
        return _answer(st.patch_bucket(bucket, _body_json(), conditions_from(request.args)))

    @app.delete("/storage/v1/b/<segment:bucket>")
    def delete_bucket(bucket: str) -> Response:
        st.delete_bucket(bucket)
        return Response(status=204)

    @app.post("/storage/v1/b/<segment:bucket>/lockRetentionPolicy")
    def lock_retention(bucket: str) -> Response:
        return _answer(
            st.lock_retention_policy(bucket, _int_arg(request.args, "ifMetagenerationMatch"))
        )

    # ------------------------------------------------------------------ objects

    @app.get("/storage/v1/b/<segment:bucket>/o")
    def list_objects(bucket: str) -> Response:
        return _answer(st.list_objects(bucket, request.args))

    def _download(bucket: str, name: str) -> Response:
        return _download_response(
            st.open_download(
                bucket,
                name,
                _int_arg(request.args, "generation"),
                conditions_from(request.args),
                request.headers.get("Range"),
            )
        )

    @app.route(
        "/storage/v1/b/<segment:bucket>/o/<path:_rest>",
        methods=["GET", "PATCH", "PUT", "DELETE", "POST"],
    )
    def object_call(bucket: str, _rest: str) -> Response:
        name, verb, dst_bucket, dst_name = _split_verb(_raw_segments(6))
        args = request.args
        if verb is not None:
            if request.method != "POST" or dst_bucket is None or dst_name is None:
                raise GcsError(405, "Method not allowed.")
            copied = st.copy_object(
                bucket,
                name,
                dst_bucket,
                dst_name,
                resource=_body_json(),
                source_generation=_int_arg(args, "sourceGeneration"),
                source_conditions=conditions_from(args, source=True),
                conditions=conditions_from(args),
            )
            if verb == "copyTo":
                return _answer(copied)
            return _answer(
                {
                    "kind": "storage#rewriteResponse",
                    "totalBytesRewritten": copied["size"],
                    "objectSize": copied["size"],
                    "done": True,
                    "resource": copied,
                }
            )
        if request.method == "GET":
            if args.get("alt") == "media":
                return _download(bucket, name)
            return _answer(
                st.get_object(bucket, name, _int_arg(args, "generation"), conditions_from(args))
            )
        if request.method in ("PATCH", "PUT"):
            return _answer(
                st.patch_object(
                    bucket,
                    name,
                    _body_json(),
                    conditions_from(args),
                    replace=request.method == "PUT",
                )
            )
        if request.method == "DELETE":
            st.delete_object(bucket, name, _int_arg(args, "generation"), conditions_from(args))
            return Response(status=204)
        raise GcsError(405, "Method not allowed.")

    @app.get("/download/storage/v1/b/<segment:bucket>/o/<path:_rest>")
    def download(bucket: str, _rest: str) -> Response:
        name, _, _, _ = _split_verb(_raw_segments(7))
        return _download(bucket, name)

    # ------------------------------------------------------------------ uploads

    @app.post("/upload/storage/v1/b/<segment:bucket>/o")
    def upload(bucket: str) -> Response:
        args = request.args
        kind = args.get("uploadType", "media")
        conditions = conditions_from(args)
        if kind == "media":
            return _answer(
                st.upload_stream(
                    bucket,
                    _object_name(args.get("name")),
                    request.stream,
                    resource={},
                    content_type=request.content_type or "application/octet-stream",
                    conditions=conditions,
                    expected=_parse_x_goog_hash(request.headers.get("X-Goog-Hash")),
                    args=args,
                )
            )
        if kind == "multipart":
            metadata, media, media_type = _multipart(
                request.get_data(cache=False), request.content_type or ""
            )
            name = args.get("name") or metadata.get("name")
            return _answer(
                st.upload_stream(
                    bucket,
                    _object_name(name),
                    io.BytesIO(media),
                    resource=metadata,
                    content_type=str(metadata.get("contentType") or media_type),
                    conditions=conditions,
                    expected={k: str(metadata[k]) for k in ("crc32c", "md5Hash") if k in metadata},
                    args=args,
                )
            )
        if kind == "resumable":
            metadata = _body_json()
            name = _object_name(args.get("name") or metadata.get("name"))
            total = request.headers.get("X-Upload-Content-Length")
            upload_id = st.start_upload(
                bucket,
                name,
                resource=metadata,
                content_type=str(
                    metadata.get("contentType")
                    or request.headers.get("X-Upload-Content-Type")
                    or "application/octet-stream"
                ),
                conditions=conditions,
                total=int(total) if total and total.isdigit() else None,
                args=args,
            )
            query = urlencode({"uploadType": "resumable", "name": name, "upload_id": upload_id})
            location = f"{request.host_url.rstrip('/')}/upload/storage/v1/b/{bucket}/o?{query}"
            resp = Response(b"", status=200)
            resp.headers["Location"] = location
            resp.headers["X-GUploader-UploadID"] = upload_id
            return resp
        raise GcsError(400, f"Invalid upload type: {kind}")

    @app.put("/upload/storage/v1/b/<segment:bucket>/o")
    def upload_chunk(bucket: str) -> Response:
        upload_id = request.args.get("upload_id")
        if not upload_id:
            raise GcsError(400, "Required parameter: upload_id", "required")
        status, result = st.put_chunk(
            upload_id,
            request.headers.get("Content-Range"),
            request.stream,
            request.content_length or 0,
            request.headers.get("X-Goog-Hash"),
        )
        if result is not None:
            return _answer(result, status)
        resp = Response(b"", status=308)
        persisted = st.persisted(upload_id)
        if persisted:
            resp.headers["Range"] = f"bytes=0-{persisted - 1}"
        return resp

    @app.delete("/upload/storage/v1/b/<segment:bucket>/o")
    def cancel_upload(bucket: str) -> Response:
        upload_id = request.args.get("upload_id")
        if not upload_id:
            raise GcsError(400, "Required parameter: upload_id", "required")
        st.cancel_upload(upload_id)
        return Response(b"", status=499)

    # ------------------------------------------------------------------ admin

    @app.post("/_admin/buckets")
    def admin_create_bucket() -> Response:
        body = admin_json()
        try:
            name = str(body["name"])
            retention = body.get("retention_period_s")
            resource = st.create_bucket(
                name,
                project=str(body.get("project") or DEFAULT_PROJECT),
                location=str(body.get("location") or "EUROPE-WEST1"),
                retention_period_s=int(retention) if retention is not None else None,
                uniform_access=bool(body.get("uniform_access", True)),
                lifecycle=body.get("lifecycle"),
                labels=body.get("labels"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GcsError(400, f"bad bucket: {exc}") from exc
        return _json(resource, 201)

    @app.get("/_admin/buckets")
    def admin_buckets() -> Response:
        return _json({"buckets": st.buckets()})

    @app.post("/_admin/retention")
    def admin_retention() -> Response:
        body = admin_json()
        try:
            seconds = body.get("retention_period_s")
            resource = st.set_retention(
                str(body["bucket"]),
                int(seconds) if seconds is not None else None,
                locked=bool(body.get("locked", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise GcsError(400, f"bad retention: {exc}") from exc
        return _json(resource)

    @app.get("/_admin/objects")
    def admin_objects() -> Response:
        bucket = request.args.get("bucket")
        if not bucket:
            raise GcsError(400, "bucket is required")
        return _json({"objects": st.objects(bucket, request.args.get("prefix", ""))})

    @app.post("/_admin/corrupt")
    def admin_corrupt() -> Response:
        body = admin_json()
        try:
            st.corrupt(str(body["bucket"]), str(body["name"]), int(body.get("offset", 0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise GcsError(400, f"bad corruption: {exc}") from exc
        return _json({})

    @app.post("/_admin/backdate")
    def admin_backdate() -> Response:
        body = admin_json()
        try:
            resource = st.backdate(str(body["bucket"]), str(body["name"]), float(body["seconds"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise GcsError(400, f"bad backdate: {exc}") from exc
        return _json(resource)

    @app.post("/_admin/interrupt-download")
    def admin_interrupt() -> Response:
        body = admin_json()
        try:
            st.interrupt_next_download(int(body["after_bytes"]), int(body.get("count", 1)))
        except (KeyError, TypeError, ValueError) as exc:
            raise GcsError(400, f"bad interruption: {exc}") from exc
        return _json({})

    @app.get("/_admin/uploads")
    def admin_uploads() -> Response:
        return _json({"uploads": st.open_uploads()})

    add_fault_admin_routes(app, st)

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return _json({})

    return app
