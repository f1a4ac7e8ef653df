"""Typed inputs and outputs of the rollback decision (plain data, no I/O).

Everything the decision needs is gathered first (Cloud Run state, what we know about each
revision's health, recent breaking migrations, recent automatic rollbacks), so that
:func:`shared.rollback.decide` is a pure function that table-driven tests can call.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Literal

from shared.events import EventType

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Health = Literal["unknown", "good", "bad"]
TrafficType = Literal["LATEST", "REVISION"]
TriggerKind = Literal["smoke", "alert", "manual"]


def describe_split(serving: Mapping[str, int]) -> str:
    """``r1 90%, r2 10%`` (by name), for reasons and errors; ``nothing`` when empty."""
    return ", ".join(f"{name} {pct}%" for name, pct in sorted(serving.items())) or "nothing"


@dataclass(frozen=True)
class RevisionInfo:
    """One Cloud Run revision: short name, creation time, Ready condition."""

    name: str
    create_time: datetime
    ready: bool
    image: str | None = None


@dataclass(frozen=True)
class TrafficItem:
    """One ``traffic[]`` or ``traffic_statuses[]`` entry (revision short name or "")."""

    type: TrafficType
    revision: str = ""
    percent: int = 0
    tag: str = ""


@dataclass(frozen=True)
class ServiceState:
    """What Cloud Run says about a service, read just before deciding."""

    project: str
    region: str
    service: str
    revisions: tuple[RevisionInfo, ...]
    traffic: tuple[TrafficItem, ...]
    traffic_statuses: tuple[TrafficItem, ...]
    latest_ready_revision: str | None = None
    etag: str = ""
    #: Cloud Run's last-modified time of the service: the traffic now in effect has been
    #: configured since then at the latest (None: not known).
    update_time: datetime | None = None

    @property
    def name(self) -> str:
        return f"projects/{self.project}/locations/{self.region}/services/{self.service}"

    def revision(self, name: str) -> RevisionInfo | None:
        return next((r for r in self.revisions if r.name == name), None)

    def serving(self) -> dict[str, int]:
        """Percent of traffic per revision actually in effect.

        ``traffic_statuses`` is what Cloud Run routes; a ``LATEST`` status may carry no
        revision name, so it resolves through ``latest_ready_revision``. Falls back to
        the spec only when no status has been reported yet.
        """
        entries = self.traffic_statuses or self.traffic
        out: dict[str, int] = {}
        for item in entries:
            name = item.revision or (self.latest_ready_revision if item.type == "LATEST" else None)
            if name and item.percent > 0:
                out[name] = out.get(name, 0) + item.percent
        return out

    def primary(self) -> str | None:
        """The revision with the largest share of traffic (ties: the newest), if any."""
        serving = self.serving()
        if not serving:
            return None

        def key(name: str) -> tuple[int, datetime, str]:
            info = self.revision(name)
            return serving[name], info.create_time if info else _EPOCH, name

        return max(serving, key=key)

    def routing(self) -> tuple[dict[str, int], dict[str, int]]:
        """Who gets user traffic: per revision, by the spec and by the statuses.

        Tags at 0 % are not routing; a ``LATEST`` entry counts for the revision it
        resolves to, so a deploy under ``LATEST`` changes the routing too.
        """

        def per_revision(entries: tuple[TrafficItem, ...]) -> dict[str, int]:
            out: dict[str, int] = {}
            for item in entries:
                name = item.revision or (
                    (self.latest_ready_revision or "?") if item.type == "LATEST" else "?"
                )
                if item.percent > 0:
                    out[name] = out.get(name, 0) + item.percent
            return out

        return per_revision(self.traffic), per_revision(self.traffic_statuses)

    def sole_server(self) -> str | None:
        """The revision serving 100 %, if exactly one does."""
        serving = self.serving()
        return next((name for name, pct in serving.items() if pct >= 100), None)


@dataclass(frozen=True)
class HealthRecord:
    """What ``ops.revisions`` knows about one revision, and when that evidence is from."""

    health: Health
    reason: str | None = None
    evidence_time: datetime | None = None


@dataclass(frozen=True)
class BreakingMigration:
    """A ``migration`` run (any status but skipped) that committed a breaking migration."""

    label: str
    finished_at: datetime


@dataclass(frozen=True)
class Trigger:
    """Why we are deciding: a smoke failure, an auto-rollback alert, or an operator.

    ``revision`` is the accused revision (None: "whatever serves traffic", as for an
    alert without a revision label or a manual rollback). ``evidence_time`` is when the
    failure was observed (event time), used to order health evidence.
    """

    kind: TriggerKind
    service: str
    event_id: str
    evidence_time: datetime
    revision: str | None = None
    target: str | None = None  # manual --to
    force: bool = False  # manual --force: skip the safety checks
    incident_started_at: datetime | None = None


@dataclass(frozen=True)
class Policy:
    """The knobs of RollbackConfig the decision needs."""

    max_per_window: int = 2
    window: timedelta = timedelta(hours=1)
    alert_window: timedelta = timedelta(minutes=30)


class Verdict(StrEnum):
    """What to do. Each maps to one published event type and one ``ops.actions`` kind."""

    ROLLBACK = "rollback"  # move 100 % to ``to_revision``
    SKIP = "skip"  # nothing to do (not serving, superseded, outside window, ...)
    FAIL = "fail"  # should act but cannot (no known-good revision, bad --to, ...)
    FREEZE = "freeze"  # moving back is unsafe (breaking migration): escalate
    ESCALATE = "escalate"  # anti-flap cap reached: escalate without acting

    @property
    def event_type(self) -> EventType:
        return _EVENT_TYPES[self]

    @property
    def action_kind(self) -> str:
        return {"freeze": "freeze", "escalate": "escalation"}.get(self.value, "rollback")

    @property
    def action_status(self) -> str:
        return self.event_type.value.rsplit(".", 1)[1]


_EVENT_TYPES: Mapping[Verdict, EventType] = {
    Verdict.ROLLBACK: EventType.ROLLBACK_SUCCEEDED,
    Verdict.SKIP: EventType.ROLLBACK_SKIPPED,
    Verdict.FAIL: EventType.ROLLBACK_FAILED,
    Verdict.FREEZE: EventType.ROLLBACK_FROZEN,
    Verdict.ESCALATE: EventType.ROLLBACK_FROZEN,
}


@dataclass(frozen=True)
class Decision:
    """The outcome of :func:`decide`: a verdict, the revisions involved, a human reason,
    and which revision (if any) the trigger proves bad."""

    verdict: Verdict
    service: str
    reason: str
    from_revision: str | None = None
    to_revision: str | None = None
    mark_bad: str | None = None
    facts: dict[str, object] = field(default_factory=dict)
