"""The console's reads of the ledger: read-only SQL on the tables sight-ops already
writes (docs/schema.md), one ``READ ONLY`` transaction per page (docs/console.md).

``ops.actions`` is the story of every release (rows carry ``release_id`` since alembic
0004); ``ops.revisions`` the health of each revision; ``ops.rollback_decisions`` the
traffic moves with what was serving before and after; ``ops.rejected_events`` the
messages that could never be handled; ``ops.canaries`` (alembic 0005) the canary steps,
read only where the table exists, so the console runs on a database from before it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

#: Kinds whose latest row says what a service's traffic is doing now.
DECISION_KINDS = ("release", "rollback", "freeze", "escalation", "canary")


@contextmanager
def read_only(engine: Engine) -> Iterator[Connection]:
    """One transaction that cannot write (PostgreSQL refuses any write in it), with the
    database errors classified like every other read (``shared.db.transaction``)."""
    from shared.db import transaction

    with transaction(engine) as conn:
        conn.execute(text("SET TRANSACTION READ ONLY"))
        yield conn


def has_table(conn: Connection, name: str) -> bool:
    """True when ``name`` (``schema.table``) exists: the console tolerates a database
    migrated before a table was added."""
    return conn.execute(text("SELECT to_regclass(:n) IS NOT NULL"), {"n": name}).scalar() is True


# ---- releases ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRow:
    """One release as the list shows it: what happened to it, in one word, and when."""

    release_id: str
    service: str | None
    first_at: datetime
    last_at: datetime
    actions: int
    release_status: str | None  # deployed / promoted / failed (the latest release row)
    migration_status: str | None
    rolled_back: bool
    frozen: bool
    escalated: bool
    canary_status: str | None
    revision: str | None

    @property
    def state(self) -> str:
        """The one word for the release: the most telling thing that happened to it."""
        if self.frozen:
            return "frozen"
        if self.escalated:
            return "escalated"
        if self.rolled_back:
            return "rolled back"
        if self.canary_status in {"held", "frozen"}:
            return f"canary {self.canary_status}"
        if self.release_status:
            return self.release_status
        if self.canary_status:
            return f"canary {self.canary_status}"
        if self.migration_status == "failed":
            return "migration failed"
        return "in progress" if self.migration_status else "seen"


_RELEASES = """
SELECT a.release_id,
       (array_agg(a.service ORDER BY a.started_at DESC, a.id DESC)
          FILTER (WHERE a.service IS NOT NULL))[1] AS service,
       min(a.started_at) AS first_at,
       max(a.started_at) AS last_at,
       count(*) AS actions,
       (array_agg(a.status ORDER BY a.started_at DESC, a.id DESC)
          FILTER (WHERE a.kind = 'release'))[1] AS release_status,
       (array_agg(a.detail->>'revision' ORDER BY a.started_at DESC, a.id DESC)
          FILTER (WHERE a.kind = 'release'))[1] AS revision,
       (array_agg(a.status ORDER BY a.started_at DESC, a.id DESC)
          FILTER (WHERE a.kind = 'migration'))[1] AS migration_status,
       coalesce(bool_or(a.kind = 'rollback' AND a.status = 'succeeded'
                        AND coalesce(a.detail->>'dry_run', 'false') <> 'true'), false)
          AS rolled_back,
       coalesce(bool_or(a.kind = 'freeze'), false) AS frozen,
       coalesce(bool_or(a.kind = 'escalation'), false) AS escalated,
       (array_agg(a.status ORDER BY a.started_at DESC, a.id DESC)
          FILTER (WHERE a.kind = 'canary'))[1] AS canary_status
  FROM ops.actions a
 WHERE a.release_id IS NOT NULL
   AND a.started_at >= :since AND a.started_at < :until
   {service}
 GROUP BY a.release_id
 ORDER BY min(a.started_at) DESC, a.release_id
 LIMIT :limit
"""


def releases(
    conn: Connection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    limit: int = 100,
) -> list[ReleaseRow]:
    """Releases with an action in ``[since, until)``, newest first (by their first action)."""
    where = "AND a.release_id LIKE :prefix" if service else ""
    params: dict[str, Any] = {"since": since, "until": until, "limit": limit}
    if service:
        # a release id starts with its service (shared/release.py): `<service>@<commit>`
        params["prefix"] = _like_prefix(service) + "@%"
    rows = conn.execute(text(_RELEASES.format(service=where)), params)
    return [
        ReleaseRow(
            release_id=r.release_id,
            service=r.service,
            first_at=r.first_at,
            last_at=r.last_at,
            actions=int(r.actions),
            release_status=r.release_status,
            migration_status=r.migration_status,
            rolled_back=bool(r.rolled_back),
            frozen=bool(r.frozen),
            escalated=bool(r.escalated),
            canary_status=r.canary_status,
            revision=r.revision,
        )
        for r in rows
    ]


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def services(conn: Connection, limit: int | None = None) -> list[str]:
    """The services the ledger knows (revisions seen, actions taken), by name; with
    ``limit``, the most recently active ones."""
    if limit is None:
        rows = conn.execute(
            text(
                "SELECT service FROM ops.revisions UNION"
                " SELECT DISTINCT service FROM ops.actions WHERE service IS NOT NULL"
                " ORDER BY 1"
            )
        )
        return [str(r.service) for r in rows]
    rows = conn.execute(
        text(
            "SELECT service FROM (SELECT service, max(updated_at) AS at FROM ops.revisions"
            " GROUP BY service UNION ALL SELECT service, max(started_at) FROM ops.actions"
            " WHERE service IS NOT NULL GROUP BY service) s"
            " GROUP BY service ORDER BY max(at) DESC, service LIMIT :n"
        ),
        {"n": limit},
    )
    return sorted(str(r.service) for r in rows)


# ---- one release ------------------------------------------------------------------------


@dataclass(frozen=True)
class ActionRow:
    """One ``ops.actions`` row: a decision or an effect, with its evidence (``detail``)."""

    id: int
    kind: str
    status: str
    service: str | None
    actor: str
    trigger_event_id: str | None
    started_at: datetime
    finished_at: datetime | None
    trace_id: str | None
    detail: dict[str, Any]
    breaking: bool = False


@dataclass(frozen=True)
class DecisionRow:
    """A traffic move of rollback's journal (``ops.rollback_decisions``)."""

    event_id: str
    trigger_kind: str
    actor: str
    from_revision: str | None
    to_revision: str
    status: str
    verdict: str | None
    reason: str
    serving_before: dict[str, Any]
    serving_after: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None


@dataclass(frozen=True)
class CanaryState:
    """The canary of a release (``ops.canaries``): its plan, where it stands, its steps."""

    release_id: str
    service: str
    revision: str
    stable_revision: str | None
    status: str
    percent: int
    steps: list[int]
    started_at: datetime
    updated_at: datetime
    reason: str | None
    evidence: dict[str, Any] | None
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ReleaseStory:
    """Everything the ledger holds about one release."""

    release_id: str
    actions: list[ActionRow]
    decisions: dict[str, DecisionRow]  # by the rollback event id (``detail.event_id``)
    canary: CanaryState | None

    @property
    def service(self) -> str | None:
        return next((a.service for a in reversed(self.actions) if a.service), None)


_ACTION_COLUMNS = (
    "SELECT id, kind, status, service, actor, trigger_event_id, started_at, finished_at,"
    " trace_id, detail, breaking FROM ops.actions"
)


def _action(r: Any) -> ActionRow:
    return ActionRow(
        id=int(r.id),
        kind=r.kind,
        status=r.status,
        service=r.service,
        actor=r.actor,
        trigger_event_id=r.trigger_event_id,
        started_at=r.started_at,
        finished_at=r.finished_at,
        trace_id=r.trace_id,
        detail=dict(r.detail or {}),
        breaking=bool(r.breaking),
    )


def release_story(conn: Connection, release_id: str, *, limit: int = 500) -> ReleaseStory:
    """The release's actions oldest first, the traffic moves they made, its canary."""
    actions = [
        _action(r)
        for r in conn.execute(
            text(_ACTION_COLUMNS + " WHERE release_id = :r ORDER BY started_at, id LIMIT :n"),
            {"r": release_id, "n": limit},
        )
    ]
    event_ids = sorted(
        {
            str(a.detail["event_id"])
            for a in actions
            if a.kind in {"rollback", "freeze", "escalation"} and a.detail.get("event_id")
        }
    )
    decisions: dict[str, DecisionRow] = {}
    if event_ids:
        query = text(
            "SELECT event_id, trigger_kind, actor, from_revision, to_revision, status, verdict,"
            " reason, serving_before, serving_after, created_at, finished_at"
            " FROM ops.rollback_decisions WHERE event_id IN :ids"
        ).bindparams(bindparam("ids", expanding=True))
        for r in conn.execute(query, {"ids": event_ids}):
            decisions[r.event_id] = DecisionRow(
                event_id=r.event_id,
                trigger_kind=r.trigger_kind,
                actor=r.actor,
                from_revision=r.from_revision,
                to_revision=r.to_revision,
                status=r.status,
                verdict=r.verdict,
                reason=r.reason,
                serving_before=dict(r.serving_before or {}),
                serving_after=dict(r.serving_after) if r.serving_after is not None else None,
                created_at=r.created_at,
                finished_at=r.finished_at,
            )
    return ReleaseStory(release_id, actions, decisions, canary_of(conn, release_id))


_CANARY_COLUMNS = (
    "SELECT release_id, service, revision, stable_revision, status, percent, steps,"
    " started_at, updated_at, reason, evidence, history FROM ops.canaries"
)


def _canary(r: Any) -> CanaryState:
    history = r.history if isinstance(r.history, list) else []
    return CanaryState(
        release_id=r.release_id,
        service=r.service,
        revision=r.revision,
        stable_revision=r.stable_revision,
        status=r.status,
        percent=int(r.percent),
        steps=[int(s) for s in (r.steps or [])],
        started_at=r.started_at,
        updated_at=r.updated_at,
        reason=r.reason,
        evidence=dict(r.evidence) if isinstance(r.evidence, Mapping) else None,
        history=[dict(h) for h in history if isinstance(h, Mapping)],
    )


def canary_of(conn: Connection, release_id: str) -> CanaryState | None:
    """The release's canary; None without one, or on a database without ``ops.canaries``."""
    if not has_table(conn, "ops.canaries"):
        return None
    row = conn.execute(text(_CANARY_COLUMNS + " WHERE release_id = :r"), {"r": release_id}).first()
    return _canary(row) if row is not None else None


def active_canaries(conn: Connection) -> dict[str, CanaryState]:
    """The running, held or frozen canary of each service (at most one: alembic 0005)."""
    if not has_table(conn, "ops.canaries"):
        return {}
    rows = conn.execute(
        text(_CANARY_COLUMNS + " WHERE status IN ('running', 'held', 'frozen') ORDER BY service")
    )
    return {r.service: _canary(r) for r in rows}


# ---- services ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RevisionHealth:
    """A revision as the ledger knows it (``ops.revisions``)."""

    revision: str
    health: str
    reason: str | None
    evidence_at: datetime | None
    created_at: datetime | None
    commit_sha: str | None
    build_id: str | None


def revision_health(
    conn: Connection, service_names: Sequence[str]
) -> dict[str, list[RevisionHealth]]:
    """Each service's revisions, newest first."""
    if not service_names:
        return {}
    query = text(
        "SELECT service, revision, health, health_reason, health_evidence_at, created_at,"
        " commit_sha, build_id FROM ops.revisions WHERE service IN :s"
        " ORDER BY service, created_at DESC NULLS LAST, revision DESC"
    ).bindparams(bindparam("s", expanding=True))
    out: dict[str, list[RevisionHealth]] = {s: [] for s in service_names}
    for r in conn.execute(query, {"s": list(service_names)}):
        out.setdefault(r.service, []).append(
            RevisionHealth(
                revision=r.revision,
                health=r.health,
                reason=r.health_reason,
                evidence_at=r.health_evidence_at,
                created_at=r.created_at,
                commit_sha=r.commit_sha,
                build_id=r.build_id,
            )
        )
    return out


@dataclass(frozen=True)
class LatestDecision:
    """The newest release, rollback, freeze, escalation or canary row of a service."""

    kind: str
    status: str
    release_id: str | None
    started_at: datetime
    reason: str | None


def latest_decisions(conn: Connection) -> dict[str, LatestDecision]:
    """Per service, its newest decision: a freeze or escalation there means the service is
    frozen or escalated now (no release, rollback or canary decision came after it)."""
    query = text(
        "SELECT DISTINCT ON (service) service, kind, status, release_id, started_at,"
        " detail->>'reason' AS reason FROM ops.actions"
        " WHERE service IS NOT NULL AND kind IN :kinds"
        " AND coalesce(detail->>'dry_run', 'false') <> 'true'"
        " ORDER BY service, started_at DESC, id DESC"
    ).bindparams(bindparam("kinds", expanding=True))
    return {
        r.service: LatestDecision(r.kind, r.status, r.release_id, r.started_at, r.reason)
        for r in conn.execute(query, {"kinds": list(DECISION_KINDS)})
    }


# ---- rejected messages ------------------------------------------------------------------


def rejected_count(conn: Connection, since: datetime) -> int:
    return int(
        conn.execute(
            text("SELECT count(*) FROM ops.rejected_events WHERE received_at >= :s"), {"s": since}
        ).scalar()
        or 0
    )
