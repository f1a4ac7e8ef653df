"""Where backups go: a small blob-store interface, Cloud Storage behind it in production
and a local directory in unit tests (docs/backups.md, "Objects").

Every write is a stream: the exporters write compressed bytes as they produce them and
never hold an object in memory. :class:`CountingWriter` computes the size, SHA-256 and
CRC32C (what Cloud Storage itself reports) of what passes through it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from google.cloud.storage import Client

#: Upload and download chunk (a multiple of 256 KiB, as resumable uploads require): the
#: most a transfer holds in memory at once.
DEFAULT_CHUNK_BYTES = 8 * 1024 * 1024


class ObjectMissing(PermanentError):
    """The object named does not exist in the store."""


@dataclass(frozen=True)
class BlobInfo:
    """One stored object as the store lists it."""

    name: str
    size: int
    crc32c: str | None = None  # base64 of the big-endian CRC32C, as Cloud Storage shows it
    updated: datetime | None = None


class BlobStore(Protocol):
    """What the exporters, the restore and the drill need of an object store."""

    @property
    def location(self) -> str:
        """Where objects go, for humans and the manifest (``gs://bucket/prefix``)."""
        ...

    def put_stream(self, name: str, content_type: str) -> Any:
        """A context manager yielding a binary writer; the object exists only once the
        block exits without an exception (an aborted write leaves nothing behind)."""
        ...

    def get_stream(self, name: str) -> Any:
        """A context manager yielding a binary reader of the object."""
        ...

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        """Objects whose name starts with ``prefix``, in name order."""
        ...

    def exists(self, name: str) -> bool: ...


class CountingWriter:
    """A write-only binary stream that counts and hashes what it passes on."""

    def __init__(self, out: IO[bytes]) -> None:
        import google_crc32c

        self._out = out
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._crc: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def write(self, data: bytes) -> int:
        self._out.write(data)
        self._sha256.update(data)
        self._crc.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        """Nothing to do: the underlying writer uploads in whole chunks (GCS refuses an
        early flush) and finishes when its block exits."""

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def crc32c(self) -> str:
        digest: bytes = self._crc.digest()
        return base64.b64encode(digest).decode("ascii")


class CountingReader:
    """A binary reader that counts and hashes what it reads."""

    def __init__(self, source: IO[bytes]) -> None:
        import google_crc32c

        self._source = source
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._crc: Any = google_crc32c.Checksum()  # type: ignore[no-untyped-call]

    def read(self, size: int = -1) -> bytes:
        data = self._source.read(size)
        self._sha256.update(data)
        self._crc.update(data)
        self.size += len(data)
        return data

    def readable(self) -> bool:
        return True

    def drain(self, chunk: int = 1024 * 1024) -> None:
        """Read to the end (what a decompressor left unread still counts)."""
        while self.read(chunk):
            pass

    @property
    def sha256(self) -> str:
        return self._sha256.hexdigest()

    @property
    def crc32c(self) -> str:
        digest: bytes = self._crc.digest()
        return base64.b64encode(digest).decode("ascii")


class LocalBlobStore:
    """Objects as files under a directory: unit tests and the benchmark's baseline.

    A write goes to a temporary file renamed into place when it completes, so, as in
    Cloud Storage, an object is either whole or absent."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @property
    def location(self) -> str:
        return self.root.as_uri()

    def _path(self, name: str) -> Path:
        path = (self.root / name).resolve()
        if not path.is_relative_to(self.root.resolve()):
            raise PermanentError(f"object name {name!r} leaves the store")
        return path

    @contextmanager
    def put_stream(self, name: str, content_type: str) -> Iterator[IO[bytes]]:
        del content_type  # a file has none
        path = self._path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @contextmanager
    def get_stream(self, name: str) -> Iterator[IO[bytes]]:
        path = self._path(name)
        try:
            source = path.open("rb")
        except FileNotFoundError:
            raise ObjectMissing(f"object {name} does not exist in {self.location}") from None
        with source:
            yield source

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        if not self.root.exists():
            return
        root = self.root.resolve()
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            name = path.relative_to(root).as_posix()
            if name.startswith(prefix) and not path.name.startswith("."):
                stat = path.stat()
                yield BlobInfo(name, stat.st_size, None, datetime.fromtimestamp(stat.st_mtime, UTC))

    def exists(self, name: str) -> bool:
        return self._path(name).is_file()


class GcsBlobStore:
    """Cloud Storage through the official client (``google-cloud-storage``): resumable
    uploads in ``chunk_bytes`` chunks, each object created only if absent
    (``ifGenerationMatch=0``, so a retried upload can never replace a finished one, and
    the writer needs no delete permission), ranged reads of ``chunk_bytes``."""

    def __init__(
        self,
        bucket: str,
        *,
        client: Client | None = None,
        project: str | None = None,
        endpoint: str | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        self.bucket_name = bucket
        self.chunk_bytes = chunk_bytes
        self._client = client
        self._project = project
        self._endpoint = endpoint

    @property
    def location(self) -> str:
        return f"gs://{self.bucket_name}"

    @property
    def client(self) -> Client:
        if self._client is None:
            self._client = storage_client(self._project, self._endpoint)
        return self._client

    @contextmanager
    def put_stream(self, name: str, content_type: str) -> Iterator[IO[bytes]]:
        blob = self.client.bucket(self.bucket_name).blob(name, chunk_size=self.chunk_bytes)
        with (
            _gcs_errors(name),
            blob.open("wb", content_type=content_type, if_generation_match=0) as out,
        ):
            yield out

    @contextmanager
    def get_stream(self, name: str) -> Iterator[IO[bytes]]:
        from google.api_core.exceptions import NotFound

        blob = self.client.bucket(self.bucket_name).blob(name, chunk_size=self.chunk_bytes)
        try:
            with _gcs_errors(name):
                blob.reload()
        except NotFound:
            raise ObjectMissing(f"object {name} does not exist in {self.location}") from None
        with _gcs_errors(name), blob.open("rb", chunk_size=self.chunk_bytes) as source:
            yield source

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        with _gcs_errors(prefix):
            for blob in self.client.list_blobs(self.bucket_name, prefix=prefix):
                yield BlobInfo(blob.name, int(blob.size or 0), blob.crc32c, blob.updated)

    def exists(self, name: str) -> bool:
        with _gcs_errors(name):
            return bool(self.client.bucket(self.bucket_name).blob(name).exists())


@contextmanager
def _gcs_errors(name: str) -> Iterator[None]:
    """Cloud Storage outages (5xx, 429, connection errors) become :class:`TransientError`."""
    from google.api_core import exceptions as api

    try:
        yield
    except (api.ServerError, api.TooManyRequests, ConnectionError) as exc:
        raise TransientError(f"cloud storage unavailable ({name}): {type(exc).__name__}") from exc


def storage_client(project: str | None = None, endpoint: str | None = None) -> Client:
    """The official client; ``endpoint`` (the local stand-in) gets anonymous credentials."""
    from google.cloud import storage

    if endpoint:
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(
            project=project or "sight-local",
            credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            client_options={"api_endpoint": endpoint},
        )
    return storage.Client(project=project)


def put_bytes(store: BlobStore, name: str, data: bytes, content_type: str) -> BlobInfo:
    """Write a small object (the manifest) whole."""
    with store.put_stream(name, content_type) as raw:
        counter = CountingWriter(raw)
        counter.write(data)
    return BlobInfo(name, counter.size, counter.crc32c)


def get_bytes(store: BlobStore, name: str, limit: int = 64 * 1024 * 1024) -> bytes:
    """Read a small object (the manifest) whole; refuses one larger than ``limit``."""
    with store.get_stream(name) as source:
        data: bytes = source.read(limit + 1)
    if len(data) > limit:
        raise PermanentError(f"object {name} is larger than {limit} bytes")
    return data
