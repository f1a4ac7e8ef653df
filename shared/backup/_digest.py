"""The per-table (per-label, per-type) checksum: an order-independent digest of rows.

Each row's exact bytes (a line of COPY text, a node's canonical JSON) are hashed with
SHA-256 and the hashes are added modulo 2^256 (a multiset hash, "AdHash"). The sum does
not depend on the order rows arrive in, so the export needs no ``ORDER BY`` (a plain
sequential scan, no sort) and a restored table is compared however its rows are laid out;
a row lost, added, duplicated or changed in any byte changes the sum (docs/backups.md,
"Checksums").
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict

ALGORITHM = "sha256-sum-mod-2^256"
_MASK = (1 << 256) - 1


class Tally(BaseModel):
    """What a manifest records per table, label or relationship type."""

    model_config = ConfigDict(frozen=True)

    count: int
    checksum: str


class MultisetDigest:
    """Count and order-independent checksum of a stream of items."""

    __slots__ = ("count", "total")

    def __init__(self) -> None:
        self.count = 0
        self.total = 0

    def add(self, item: bytes) -> None:
        self.total = (self.total + int.from_bytes(hashlib.sha256(item).digest(), "big")) & _MASK
        self.count += 1

    def add_digest(self, digest: bytes) -> None:
        """Add an item already hashed (a node's digest, counted under each of its labels)."""
        self.total = (self.total + int.from_bytes(digest, "big")) & _MASK
        self.count += 1

    @property
    def checksum(self) -> str:
        return f"{self.total:064x}"

    def tally(self) -> Tally:
        return Tally(count=self.count, checksum=self.checksum)


class LineDigest:
    """Splits a byte stream into ``\\n``-terminated lines and digests each (COPY text:
    one row per line, a newline inside a value is written ``\\n``)."""

    __slots__ = ("_tail", "digest")

    def __init__(self) -> None:
        self.digest = MultisetDigest()
        self._tail = b""

    def feed(self, data: bytes) -> None:
        if self._tail:
            data = self._tail + data
        if data.endswith(b"\n"):  # the usual case: pg8000 hands over one row at a time
            self._tail = b""
            lines = data[:-1].split(b"\n")
        else:
            lines = data.split(b"\n")
            self._tail = lines.pop()
        add = self.digest.add
        for line in lines:
            add(line)

    def finish(self) -> Tally:
        """The tally; an unterminated last line counts as a row too (a truncated
        stream then differs from the manifest rather than hiding its last bytes)."""
        if self._tail:
            self.digest.add(self._tail)
            self._tail = b""
        return self.digest.tally()
