"""What is kept of a rejected message: its payload, capped (docs/schema.md, "Pruning").

A rejected message is stored in ``ops.rejected_events`` so nothing vanishes silently, but a
producer bug can send megabytes per message, many times a minute. The head is what a human
reads to understand the bug; the original size and the sha256 of the whole payload say what
was cut and identify it (the same message rejected twice has the same hash).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class CappedPayload:
    """The bytes to store and, when they are not the whole payload, what was cut."""

    data: bytes
    size: int
    sha256: str | None = None  # set only when capped

    @property
    def capped(self) -> bool:
        return self.sha256 is not None

    def note(self) -> str:
        """Appended to the rejection reason (no migration: the reason column holds it)."""
        if not self.capped:
            return ""
        return (
            f" [payload capped: first {len(self.data)} of {self.size} bytes kept;"
            f" sha256 of the whole payload {self.sha256}]"
        )


def cap_payload(data: bytes, max_bytes: int) -> CappedPayload:
    """``data`` whole if it fits in ``max_bytes``, else its head plus its size and sha256."""
    if len(data) <= max_bytes:
        return CappedPayload(data, len(data))
    return CappedPayload(data[:max_bytes], len(data), hashlib.sha256(data).hexdigest())
