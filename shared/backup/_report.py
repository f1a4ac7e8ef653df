"""What a restore found: the verdict of a drill is "no findings"."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Finding:
    """One difference between the backup as its manifest describes it and what was read
    or restored; ``subject`` is a table, label, relationship type, object or schema."""

    subject: str
    problem: str

    def __str__(self) -> str:
        return f"{self.subject}: {self.problem}"


@dataclass
class RestoreReport:
    """One store's restore: where to, what was counted, what differed."""

    store: str
    backup_id: str
    target: str
    findings: list[Finding] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    bytes_read: int = 0
    loaded: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.loaded and not self.findings

    def done(self, started: float) -> RestoreReport:
        self.duration_s = round(time.perf_counter() - started, 3)
        return self

    def summary(self, limit: int = 5) -> str:
        """One line for logs, events and Slack."""
        if self.ok:
            total = sum(self.counts.values())
            return f"{self.store} backup {self.backup_id} restored and identical ({total} items)"
        if not self.findings:
            return f"{self.store} backup {self.backup_id} was not restored"
        shown = "; ".join(str(f) for f in self.findings[:limit])
        more = len(self.findings) - limit
        return f"{self.store} backup {self.backup_id}: {shown}" + (
            f" (and {more} more)" if more > 0 else ""
        )
