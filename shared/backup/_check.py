"""Reading a backup object back: its bytes (size, SHA-256) and its rows (count and
checksum) against the manifest, as findings rather than exceptions."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator

from shared.backup._digest import LineDigest, Tally
from shared.backup._manifest import ObjectEntry
from shared.backup._report import Finding
from shared.backup._store import BlobStore, CountingReader

_READ_CHUNK = 64 * 1024

#: What a damaged gzip stream raises while it is read.
READ_ERRORS = (OSError, EOFError, zlib.error)


class ObjectCheck:
    """Reads one object, yielding its decompressed bytes, and afterwards says how the
    bytes (size, SHA-256) and the rows (count, checksum) compare with the manifest."""

    def __init__(self, store: BlobStore, entry: ObjectEntry) -> None:
        self.store = store
        self.entry = entry
        self.lines = LineDigest()
        self.reader: CountingReader | None = None
        self.error: str | None = None

    def chunks(self) -> Iterator[bytes]:
        with self.store.get_stream(self.entry.name) as raw:
            self.reader = CountingReader(raw)
            try:
                with gzip.GzipFile(fileobj=self.reader, mode="rb") as unzipped:  # type: ignore[call-overload]
                    while chunk := unzipped.read(_READ_CHUNK):
                        self.lines.feed(chunk)
                        yield chunk
            except READ_ERRORS as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                self.reader.drain()  # so size and SHA-256 say what is stored
                raise
            self.reader.drain()

    def run(self) -> None:
        """Read without loading anything (objects after a failed one)."""
        try:
            for _ in self.chunks():
                pass
        except READ_ERRORS:
            pass

    def findings(self, subject: str, expected: Tally | None) -> list[Finding]:
        found: list[Finding] = []
        name = self.entry.name
        if self.error:
            found.append(Finding(subject, f"object {name} cannot be read: {self.error}"))
        if self.reader is not None:
            if self.reader.size != self.entry.size:
                found.append(
                    Finding(
                        subject,
                        f"object {name} has {self.reader.size} bytes, the manifest says"
                        f" {self.entry.size}",
                    )
                )
            if self.reader.sha256 != self.entry.sha256:
                found.append(Finding(subject, f"object {name}: SHA-256 differs from the manifest"))
        if expected is not None and not self.error:
            found.extend(compare(subject, "in the object", expected, self.lines.finish()))
        return found


def compare(subject: str, where: str, expected: Tally, actual: Tally) -> list[Finding]:
    """Count and checksum against the manifest's, as findings (none: identical)."""
    if actual.count != expected.count:
        return [
            Finding(subject, f"{actual.count} rows {where}, the manifest says {expected.count}")
        ]
    if actual.checksum != expected.checksum:
        return [Finding(subject, f"checksum {where} differs from the manifest")]
    return []


def split_lines(chunks: Iterator[bytes]) -> Iterator[bytes]:
    """The ``\\n``-terminated lines of a byte stream (an unterminated last one too)."""
    tail = b""
    for chunk in chunks:
        lines = (tail + chunk).split(b"\n")
        tail = lines.pop()
        yield from lines
    if tail:
        yield tail
