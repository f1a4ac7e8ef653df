"""sight-ops' own events (``smoke-tests``, ``ops-events``, ``kpi-refresh``).

One model per event type, used by producers and consumers alike, so the wire format
cannot drift between them. On the wire, message data is the payload alone (JSON) and
the envelope travels in Pub/Sub attributes (``type``, ``id``, ``time``, ``source``,
``schema_version``, ``service`` when one applies), so subscriptions can filter and
handlers can route, deduplicate and age-check without decoding the data.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType
from typing import Any, Generic, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.clock import Clock, utcnow
from shared.events._cloudbuild import BuildId, CommitSha, ServiceName
from shared.events._common import (
    AwareUtcDatetime,
    EventModel,
    FreeJson,
    Identifier,
    describe_validation_error,
    format_time,
    invalid,
    load_json_object,
    quote,
    validate,
)

_WHAT = "ops event"

#: Longest SQL statement carried in a lint finding; the full text is in the migration.
MAX_STATEMENT_CHARS = 500


class EventType(StrEnum):
    """Every event type sight-ops produces; the value is the ``type`` attribute."""

    SMOKE_PASSED = "sight.ops.smoke.passed"
    SMOKE_FAILED = "sight.ops.smoke.failed"
    MIGRATION_SUCCEEDED = "sight.ops.migration.succeeded"
    MIGRATION_FAILED = "sight.ops.migration.failed"
    MIGRATION_SKIPPED = "sight.ops.migration.skipped"
    ROLLBACK_SUCCEEDED = "sight.ops.rollback.succeeded"
    ROLLBACK_SKIPPED = "sight.ops.rollback.skipped"
    ROLLBACK_FAILED = "sight.ops.rollback.failed"
    ROLLBACK_FROZEN = "sight.ops.rollback.frozen"
    KPI_REFRESH_REQUESTED = "sight.ops.kpi.refresh_requested"
    RELEASE_DEPLOYED = "sight.ops.release.deployed"
    RELEASE_PROMOTED = "sight.ops.release.promoted"
    RELEASE_FAILED = "sight.ops.release.failed"
    REPORT_REQUESTED = "sight.ops.report.requested"
    REPORT_WEEKLY = "sight.ops.report.weekly"
    CANARY_REQUESTED = "sight.ops.canary.requested"
    CANARY_TICK = "sight.ops.canary.tick"
    CANARY_STARTED = "sight.ops.canary.started"
    CANARY_STEPPED = "sight.ops.canary.stepped"
    CANARY_PROMOTED = "sight.ops.canary.promoted"
    CANARY_ROLLED_BACK = "sight.ops.canary.rolled_back"
    CANARY_HELD = "sight.ops.canary.held"
    CANARY_STOPPED = "sight.ops.canary.stopped"
    MAINTAIN_REQUESTED = "sight.ops.maintain.requested"
    MAINTAIN_COMPLETED = "sight.ops.maintain.completed"
    BACKUP_REQUESTED = "sight.ops.backup.requested"
    BACKUP_VERIFIED = "sight.ops.backup.verified"
    BACKUP_FAILED = "sight.ops.backup.failed"


def _canonical_uuid(value: str) -> str:
    """Lowercase hyphenated form, so dedup keys never differ by spelling."""
    try:
        return str(uuid.UUID(value))
    except (ValueError, AttributeError, TypeError):
        raise ValueError("must be a UUID") from None


class OpsPayload(EventModel):
    """Base of every payload; ties a model to the event types that carry it."""


# --- smoke ---------------------------------------------------------------------------


class SmokeCheck(EventModel):
    """One probe of the smoke runner (an HTTP request and its verdict)."""

    name: str
    ok: bool
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None


class SmokeResult(OpsPayload):
    """``sight.ops.smoke.passed|failed``: the verdict on one revision at one URL.

    ``service``, ``build_id`` and ``commit_sha`` must have the shape of what they name
    (shared/events/_cloudbuild.py): a message carrying anything else is rejected.
    """

    service: ServiceName
    region: Identifier
    revision: Identifier
    url: str
    build_id: BuildId | None = None
    commit_sha: CommitSha | None = None
    checks: list[SmokeCheck] = Field(default_factory=list)
    started_at: AwareUtcDatetime
    finished_at: AwareUtcDatetime

    @property
    def failed_checks(self) -> list[SmokeCheck]:
        """The checks that did not pass, in run order (what a human needs to see)."""
        return [check for check in self.checks if not check.ok]


# --- migration -----------------------------------------------------------------------


class PostgresRevisions(EventModel):
    """Alembic revision before and after (``from``/``to`` on the wire); None = empty db."""

    from_: str | None = Field(default=None, alias="from")
    to: str | None = None

    @property
    def changed(self) -> bool:
        """False when nothing was pending."""
        return self.from_ != self.to


class GraphVersions(EventModel):
    """Neo4j schema version before and after (``from``/``to`` on the wire)."""

    from_: int | None = Field(default=None, alias="from")
    to: int | None = None

    @property
    def changed(self) -> bool:
        """False when nothing was pending."""
        return self.from_ != self.to


LintSeverity = Literal["unsafe", "destructive", "info"]


class LintFinding(EventModel):
    """One lint result on pending migration SQL.

    ``unsafe`` blocks unless ``allowed``; ``destructive`` marks the release breaking;
    ``info`` is shown only. ``statement`` is truncated to keep messages small.
    """

    rule: str
    severity: LintSeverity
    migration: str
    statement: str = ""
    message: str
    allowed: bool = False

    @field_validator("statement")
    @classmethod
    def _truncate(cls, value: str) -> str:
        if len(value) > MAX_STATEMENT_CHARS:
            return value[: MAX_STATEMENT_CHARS - 1] + "…"
        return value


class MigrationResult(OpsPayload):
    """``sight.ops.migration.succeeded|failed|skipped`` for one build.

    ``breaking`` is what rollback reads: a destructive migration was applied, so older
    revisions may not run against the schema any more. ``succeeded`` starts the deploy
    (``build_id``, ``commit_sha`` and ``service`` become its substitutions), so each must
    have the shape of what it names, or the message is rejected.
    """

    build_id: BuildId
    commit_sha: CommitSha | None = None
    service: ServiceName | None = None
    postgres: PostgresRevisions = Field(default_factory=PostgresRevisions)
    graph: GraphVersions = Field(default_factory=GraphVersions)
    breaking: bool = False
    lint_findings: list[LintFinding] = Field(default_factory=list)
    duration_ms: int = Field(default=0, ge=0)
    error: str | None = None
    reason: str | None = None


# --- rollback ------------------------------------------------------------------------


class RollbackResult(OpsPayload):
    """``sight.ops.rollback.succeeded|skipped|failed|frozen`` for one service."""

    service: str
    from_revision: str | None = None
    to_revision: str | None = None
    reason: str
    trigger_event_id: str | None = None
    dry_run: bool = False
    manual: bool = False


# --- release (sightops deploy) -------------------------------------------------------


class ReleaseResult(OpsPayload):
    """``sight.ops.release.deployed|promoted|failed``: one release of one service, as
    ``sightops deploy`` drove it (docs/deploy.md).

    ``deployed``: a revision exists and serves no traffic (tagged); ``promoted``: it
    serves 100 %; ``failed``: the deploy stopped (``reason``), nothing was promoted.
    ``phases`` is milliseconds per phase so far (``deploy``, ``smoke_tag``, ``promote``,
    ``smoke_service``), in the order they ran.
    """

    service: ServiceName
    region: Identifier
    commit_sha: CommitSha
    release_id: str
    build_id: BuildId | None = None
    revision: Identifier | None = None
    previous_revision: Identifier | None = None
    image: str | None = None
    url: str | None = None
    reason: str | None = None
    phases: dict[str, float] = Field(default_factory=dict)
    started_at: AwareUtcDatetime
    finished_at: AwareUtcDatetime
    #: "canary" when the canary function ended the release (promoted or rolled back), so
    #: notify posts the canary's richer message only (docs/notify.md); None: sightops deploy
    via: Literal["canary"] | None = None


# --- canary (functions/canary, docs/canary.md) ---------------------------------------


class CanaryRequest(OpsPayload):
    """``sight.ops.canary.requested``: ``sightops deploy`` smoked the tagged revision and
    hands the traffic steps to the canary function instead of promoting (docs/deploy.md).

    ``stable_revision`` is the revision that served 100 % at deploy time (None if none
    did; the canary then stops, it needs one to compare against).
    """

    service: ServiceName
    region: Identifier
    project: Identifier
    release_id: str
    revision: Identifier
    stable_revision: Identifier | None = None
    tag_url: str | None = None
    commit_sha: CommitSha
    build_id: BuildId | None = None
    requested_at: AwareUtcDatetime


class CanaryTick(OpsPayload):
    """``sight.ops.canary.tick``: analyse every running canary (``service`` None), or
    one. Cloud Scheduler sends it every minute; a lost or doubled tick is harmless."""

    service: ServiceName | None = None
    region: Identifier | None = None
    # A tick the canary sends itself for a step read from the request logs: analyse at
    # this time, not before (the runtime holds the delivery until then; docs/canary.md,
    # "Ten-second ticks").
    not_before: AwareUtcDatetime | None = None


CanaryAction = Literal["started", "step", "promote", "rollback", "hold", "stop", "frozen"]


class CanaryStep(EventModel):
    """One decision in a canary's history: the traffic percent it was taken at, and the
    evidence (``Evidence.as_json()``, shared/canary/_model.py) it rests on."""

    percent: int
    started_at: AwareUtcDatetime
    decided_at: AwareUtcDatetime
    action: str
    reason: str
    evidence: FreeJson | None = None


class CanaryResult(OpsPayload):
    """``sight.ops.canary.started|stepped|promoted|rolled_back|held|stopped``: one
    decision of the canary on one release, with the history so far (``steps``, oldest
    first) so a reader never needs the database to explain it."""

    service: ServiceName
    region: Identifier
    release_id: str
    revision: Identifier
    stable_revision: Identifier | None = None
    action: CanaryAction
    percent_before: int
    percent_after: int
    reason: str
    evidence: FreeJson | None = None
    steps: list[CanaryStep] = Field(default_factory=list)
    started_at: AwareUtcDatetime
    decided_at: AwareUtcDatetime
    manual: bool = False
    actor: str = "automation"
    dry_run: bool = False


# --- release metrics (kpi_refresh, docs/metrics.md) ---------------------------------


class ReportRequested(OpsPayload):
    """``sight.ops.report.requested``: compute the release metrics of the last ``days``
    days (one service, or all) and publish them as ``sight.ops.report.weekly``. Cloud
    Scheduler sends it weekly to ``kpi-refresh`` (terraform/scheduler.tf)."""

    days: int = Field(default=7, ge=1, le=366)
    service: ServiceName | None = None
    failure_window_h: float = Field(default=24.0, gt=0, le=720)


class MetricRatio(EventModel):
    """``numerator / denominator``; ``value`` is None when there is nothing to divide by."""

    value: float | None = None
    numerator: int = 0
    denominator: int = 0


class MetricDurations(EventModel):
    """Durations in seconds: median (what fourkeys shows), mean, and how many samples."""

    median_s: float | None = None
    mean_s: float | None = None
    samples: int = 0


class DeploymentFrequency(EventModel):
    """Promotions per week over the window, and fourkeys' bucket (``daily``, ``weekly``,
    ``monthly``, ``yearly``; None without any promotion)."""

    per_week: float = 0.0
    deploy_days: int = 0
    bucket: Literal["daily", "weekly", "monthly", "yearly"] | None = None


class ChangeFailure(EventModel):
    """One promoted release counted as a failed change, and why."""

    release_id: str | None = None
    revision: str | None = None
    promoted_at: AwareUtcDatetime
    cause: Literal["rolled_back", "frozen", "incident"]
    evidence: str | None = None  # the rollback's trigger event id, or the incident id


class TargetCheck(EventModel):
    """One of the seed's targets; ``ok`` is None when there is no value to judge."""

    name: str
    op: Literal[">=", "<"]
    threshold: float
    value: float | None = None
    ok: bool | None = None


class ServiceReleaseMetrics(EventModel):
    """The release metrics of one service (``service`` None: every service together)."""

    service: str | None = None
    promoted: int = 0
    failed: int = 0
    rollbacks: int = 0
    deployment_frequency: DeploymentFrequency = Field(default_factory=DeploymentFrequency)
    lead_time: MetricDurations = Field(default_factory=MetricDurations)
    change_failure_rate: MetricRatio = Field(default_factory=MetricRatio)
    time_to_restore: MetricDurations = Field(default_factory=MetricDurations)
    incident_duration: MetricDurations = Field(default_factory=MetricDurations)
    deployment_success_rate: MetricRatio = Field(default_factory=MetricRatio)
    rollback_rate: MetricRatio = Field(default_factory=MetricRatio)
    mttr_s: float | None = None
    failures: list[ChangeFailure] = Field(default_factory=list)
    targets: list[TargetCheck] = Field(default_factory=list)


class PolicyNoise(EventModel):
    """One alert policy in one calendar month (UTC): its incidents, and how many of them
    were likely false positives (closed by themselves within the noise window with nothing
    done on their service meanwhile; docs/metrics.md, "Alert noise")."""

    policy: str
    month: str  # YYYY-MM
    incidents: int = 0
    likely_false_positives: int = 0
    #: False while the month is counted only up to the window's end (the month in progress).
    month_complete: bool = True
    #: More likely false positives than ``AlertNoise.max_per_month``.
    over_target: bool = False


class AlertNoise(EventModel):
    """Alert noise per policy and calendar month, for every month the window touches,
    each from its first day (docs/metrics.md, "Alert noise")."""

    close_within_s: float
    max_per_month: int
    counted_from: AwareUtcDatetime
    policies: list[PolicyNoise] = Field(default_factory=list)

    @property
    def flagged(self) -> list[PolicyNoise]:
        """The (policy, month) pairs over the target, noisiest first."""
        flagged = [p for p in self.policies if p.over_target]
        return sorted(flagged, key=lambda p: (-p.likely_false_positives, p.month, p.policy))


class ReleaseReport(EventModel):
    """The release metrics of a window: what ``sightops report --json`` prints and
    ``GET /v1/ops/metrics`` serves (docs/metrics.md)."""

    schema_version: Literal[1] = 1
    since: AwareUtcDatetime
    until: AwareUtcDatetime
    days: float
    service: str | None = None
    failure_window_h: float
    computed_at: AwareUtcDatetime
    services: list[ServiceReleaseMetrics] = Field(default_factory=list)
    overall: ServiceReleaseMetrics
    #: None in reports computed before alert noise was measured (cached or published ones).
    alert_noise: AlertNoise | None = None


class WeeklyReleaseReport(OpsPayload):
    """``sight.ops.report.weekly``: the digest notify posts to Slack; ``week`` is the ISO
    week it was requested in (``2025-W23``), one digest per week and scope."""

    week: str
    report: ReleaseReport


# --- kpi -----------------------------------------------------------------------------


class KpiRefreshRequested(OpsPayload):
    """``sight.ops.kpi.refresh_requested``: one project, or every active one."""

    project_id: str | None = None
    all_active: bool = False

    @field_validator("project_id")
    @classmethod
    def _uuid(cls, value: str | None) -> str | None:
        return None if value is None else _canonical_uuid(value)

    @model_validator(mode="after")
    def _exactly_one(self) -> KpiRefreshRequested:
        if (self.project_id is not None) == self.all_active:
            raise ValueError("give exactly one of project_id or all_active=true")
        return self


# --- routine database care (functions/maintain, docs/maintain.md) ------------------


class MaintainRequested(OpsPayload):
    """``sight.ops.maintain.requested``: run the routine database care now. Cloud
    Scheduler sends it daily to ``maintenance`` (terraform/maintain.tf) without ``id`` or
    ``time`` attributes, like the kpi-refresh jobs; ``dry_run`` decides and records but
    rebuilds nothing. Unknown fields are refused: a misspelt ``dry_run`` must not run for
    real."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False


#: What maintain did with one PostgreSQL index (docs/maintain.md, "The decision table").
IndexAction = Literal["none", "reindexed", "would_reindex", "deferred", "failed", "attention"]


class IndexCare(EventModel):
    """One PostgreSQL index as maintain found it: its size, the size a fresh build would
    have (``expected_bytes``, None when there is no estimate for it), the share a rebuild
    would reclaim (``bloat_ratio``), how that was estimated, and what was done."""

    schema_name: str
    table: str
    index: str
    method: str
    size_bytes: int
    expected_bytes: int | None = None
    bloat_ratio: float | None = None
    estimate: str | None = None
    action: IndexAction = "none"
    reason: str = ""
    size_after_bytes: int | None = None
    duration_ms: int | None = None


class GraphIndexCare(EventModel):
    """One Neo4j index (or constraint, through the index it owns) that is not ONLINE."""

    name: str
    kind: Literal["index", "constraint"] = "index"
    type: str
    state: str
    population_percent: float | None = None
    problem: str | None = None


class MaintenanceResult(OpsPayload):
    """``sight.ops.maintain.completed``: one maintenance run (docs/maintain.md).

    ``indexes`` lists the PostgreSQL indexes something happened to (every index, with
    its estimate, is in the run's ``ops.actions`` row); ``graph`` the Neo4j indexes that
    are not ONLINE; ``problems`` what needs a human. notify posts a run only when it is
    :attr:`worth_posting`.
    """

    run_id: str
    status: Literal["completed", "skipped"]
    reason: str | None = None
    dry_run: bool = False
    tables_analyzed: int = 0
    indexes_checked: int = 0
    indexes: list[IndexCare] = Field(default_factory=list)
    graph_checked: int = 0
    graph: list[GraphIndexCare] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list)
    lock_wait_ms: float = 0.0
    started_at: AwareUtcDatetime
    finished_at: AwareUtcDatetime

    @property
    def done(self) -> list[IndexCare]:
        """The indexes rebuilt (or, in a dry run, that would have been)."""
        return [i for i in self.indexes if i.action in {"reindexed", "would_reindex"}]

    @property
    def wrong(self) -> bool:
        """Something needs a human: a problem, a failed rebuild, an index left invalid,
        a Neo4j index FAILED or populating too long."""
        return bool(
            self.problems
            or any(i.action in {"failed", "attention"} for i in self.indexes)
            or any(g.problem for g in self.graph)
        )

    @property
    def worth_posting(self) -> bool:
        """Slack only when something was done or is wrong: a run that changed nothing
        and found nothing wrong (or was skipped for a migration) is recorded, not posted."""
        return bool(self.done) or self.wrong


# --- backups (functions/backup, docs/backups.md) --------------------------------------

BackupStore = Literal["postgres", "neo4j"]
_POSTGRES_ONLY: list[BackupStore] = ["postgres"]
#: Longest list of findings an event carries (the ops.actions row keeps them all).
MAX_FINDINGS = 20


class BackupRequested(OpsPayload):
    """``sight.ops.backup.requested``: back up ``stores`` (``kind=backup``, the backup
    function), or restore and verify their newest backups (``kind=drill``, backup_drill).
    Cloud Scheduler sends it to ``backup-requests`` without ``id`` or ``time`` attributes
    (terraform/backup.tf); a finished backup asks for its own drill (``backup_id``).
    ``period`` names the retention prefix (default: daily for PostgreSQL, weekly for
    Neo4j)."""

    stores: list[BackupStore] = Field(default_factory=_POSTGRES_ONLY.copy, min_length=1)
    kind: Literal["backup", "drill"] = "backup"
    period: Literal["daily", "weekly", "manual"] | None = None
    backup_id: str | None = Field(
        default=None, pattern=r"^(postgres|neo4j)-\d{8}T\d{6}Z-[0-9a-f]{6}$"
    )

    @field_validator("stores")
    @classmethod
    def _distinct(cls, value: list[BackupStore]) -> list[BackupStore]:
        return list(dict.fromkeys(value))


class BackupVerdict(OpsPayload):
    """``sight.ops.backup.verified|failed``: one store's backup, restored into a scratch
    target and compared with its manifest (``phase=drill``), or an export that failed
    (``phase=backup``). ``counts`` are rows per table or items per label and type."""

    store: BackupStore
    phase: Literal["backup", "drill"]
    backup_id: str | None = None
    manifest: str | None = None
    location: str | None = None
    taken_at: AwareUtcDatetime | None = None
    checked_at: AwareUtcDatetime
    target: str | None = None
    counts: dict[str, int] = Field(default_factory=dict)
    bytes: int = 0
    duration_s: float = 0.0
    reason: str | None = None
    findings: list[str] = Field(default_factory=list, max_length=MAX_FINDINGS)


#: Which payload model each event type carries; the parser dispatches through it.
PAYLOAD_TYPES: Mapping[EventType, type[OpsPayload]] = MappingProxyType(
    {
        EventType.SMOKE_PASSED: SmokeResult,
        EventType.SMOKE_FAILED: SmokeResult,
        EventType.MIGRATION_SUCCEEDED: MigrationResult,
        EventType.MIGRATION_FAILED: MigrationResult,
        EventType.MIGRATION_SKIPPED: MigrationResult,
        EventType.ROLLBACK_SUCCEEDED: RollbackResult,
        EventType.ROLLBACK_SKIPPED: RollbackResult,
        EventType.ROLLBACK_FAILED: RollbackResult,
        EventType.ROLLBACK_FROZEN: RollbackResult,
        EventType.KPI_REFRESH_REQUESTED: KpiRefreshRequested,
        EventType.RELEASE_DEPLOYED: ReleaseResult,
        EventType.RELEASE_PROMOTED: ReleaseResult,
        EventType.RELEASE_FAILED: ReleaseResult,
        EventType.REPORT_REQUESTED: ReportRequested,
        EventType.REPORT_WEEKLY: WeeklyReleaseReport,
        EventType.CANARY_REQUESTED: CanaryRequest,
        EventType.CANARY_TICK: CanaryTick,
        EventType.CANARY_STARTED: CanaryResult,
        EventType.CANARY_STEPPED: CanaryResult,
        EventType.CANARY_PROMOTED: CanaryResult,
        EventType.CANARY_ROLLED_BACK: CanaryResult,
        EventType.CANARY_HELD: CanaryResult,
        EventType.CANARY_STOPPED: CanaryResult,
        EventType.MAINTAIN_REQUESTED: MaintainRequested,
        EventType.MAINTAIN_COMPLETED: MaintenanceResult,
        EventType.BACKUP_REQUESTED: BackupRequested,
        EventType.BACKUP_VERIFIED: BackupVerdict,
        EventType.BACKUP_FAILED: BackupVerdict,
    }
)

#: The one event type of each payload model that only one type carries (a request's).
_TYPE_OF_PAYLOAD: Mapping[type[OpsPayload], EventType] = MappingProxyType(
    {
        model: event_type
        for event_type, model in PAYLOAD_TYPES.items()
        if list(PAYLOAD_TYPES.values()).count(model) == 1
    }
)

# --- envelope ------------------------------------------------------------------------

PayloadT = TypeVar("PayloadT", bound=OpsPayload)
AnyPayloadT = TypeVar("AnyPayloadT", bound=OpsPayload)


class OpsEvent(BaseModel, Generic[PayloadT]):
    """An event with its envelope; ``data`` is the typed payload.

    Build one with ``OpsEvent.new(...)``, send it with ``to_pubsub()``, read one with
    ``parse_ops_message``. ``schema_version`` changes only on an incompatible payload
    change; additive fields keep it, since consumers ignore fields they do not know.
    """

    model_config = ConfigDict(extra="ignore", frozen=True)

    type: EventType
    id: str
    time: AwareUtcDatetime
    source: str = Field(min_length=1)
    service: str | None = None
    #: the release this event belongs to (shared/release.py), an attribute on the wire
    release_id: str | None = None
    schema_version: int = Field(default=1, ge=1)
    data: SerializeAsAny[PayloadT]

    @field_validator("id")
    @classmethod
    def _uuid(cls, value: str) -> str:
        return _canonical_uuid(value)

    @model_validator(mode="after")
    def _payload_matches_type(self) -> OpsEvent[PayloadT]:
        # A mismatch is a producer bug (parsing dispatches through PAYLOAD_TYPES), so it
        # is a TypeError, not a validation error to be reported as a bad message.
        expected = PAYLOAD_TYPES[self.type]
        if not isinstance(self.data, expected):
            raise TypeError(
                f"{self.type.value} carries {expected.__name__}, not {type(self.data).__name__}"
            )
        return self

    @classmethod
    def new(
        cls,
        type: EventType,
        data: PayloadT,
        source: str,
        service: str | None = None,
        clock: Clock | None = None,
        release: str | None = None,
    ) -> OpsEvent[PayloadT]:
        """A fresh event: new uuid4, time from ``clock`` (default: now, UTC).

        ``service`` defaults to the payload's own ``service`` so routing attributes
        cannot be forgotten by a producer; ``release`` to the payload's ``release_id``,
        else the release of its service and commit (shared/release.py).
        """
        if service is None:
            payload_service = getattr(data, "service", None)
            service = payload_service if isinstance(payload_service, str) else None
        if release is None:
            release = _release_of(data)
        now = (clock or utcnow)()
        return cls(
            type=type,
            id=str(uuid.uuid4()),
            time=now,
            source=source,
            service=service,
            release_id=release,
            data=data,
        )

    def to_pubsub(self) -> tuple[bytes, dict[str, str]]:
        """``(data, attributes)`` ready for ``PublisherClient.publish``."""
        data = self.data.model_dump_json(by_alias=True).encode("utf-8")
        attributes = {
            "type": self.type.value,
            "id": self.id,
            "time": format_time(self.time),
            "source": self.source,
            "schema_version": str(self.schema_version),
        }
        if self.service:
            attributes["service"] = self.service
        if self.release_id:
            attributes["release_id"] = self.release_id
        return data, attributes

    def data_as(self, model: builtins.type[AnyPayloadT]) -> AnyPayloadT:
        """The payload as ``model``, or ``InvalidEventError`` (e.g. wrong topic wiring)."""
        if isinstance(self.data, model):
            return self.data
        raise invalid(
            f"{_WHAT} {self.type.value}",
            f"expected a {model.__name__} payload, got {type(self.data).__name__}",
        )


def _release_of(data: OpsPayload) -> str | None:
    from shared.release import release_id

    explicit = getattr(data, "release_id", None)
    if isinstance(explicit, str) and explicit:
        return explicit
    service, commit = getattr(data, "service", None), getattr(data, "commit_sha", None)
    if isinstance(service, str) and isinstance(commit, str) and service and commit:
        return release_id(service, commit)
    return None


_REQUIRED_ATTRIBUTES = ("id", "time", "source")


def parse_scheduled(
    data: bytes,
    attributes: Mapping[str, str],
    model: builtins.type[AnyPayloadT],
    *,
    type_required: bool = True,
    empty: AnyPayloadT | None = None,
) -> AnyPayloadT:
    """The payload of a message that our own tools send as a full ops event (parsed
    strictly) and Cloud Scheduler as the same fixed message on every run: without ``id``
    and ``time`` attributes only the data is read, an empty body meaning ``empty`` (by
    default the model's defaults, like ``{}``). Such a message's identity is its Pub/Sub
    message id and its age its publish time (docs/architecture.md, "Scheduled messages")."""
    event_type = _TYPE_OF_PAYLOAD[model]
    what = f"{_WHAT} {event_type.value}"
    if attributes.get("id") and attributes.get("time"):
        return parse_ops_message(data, attributes).data_as(model)
    raw_type = attributes.get("type")
    if (raw_type or type_required) and raw_type != event_type.value:
        raise invalid(
            what, f"attribute 'type' is {quote((raw_type or '')[:80])}, not {event_type.value}"
        )
    if not data.strip():
        return model() if empty is None else empty
    return validate(model, load_json_object(data, what), what, "data")


def parse_ops_message(data: bytes, attributes: Mapping[str, str]) -> OpsEvent[OpsPayload]:
    """Parse one of our own messages, dispatching on the ``type`` attribute.

    Raises ``InvalidEventError`` for a missing or unknown type, a missing envelope
    attribute, data that is not a JSON object, or a payload that fails its model.
    """
    raw_type = attributes.get("type")
    if not raw_type:
        raise invalid(_WHAT, "attribute 'type' is missing")
    try:
        event_type = EventType(raw_type)
    except ValueError:
        raise invalid(
            _WHAT, f"attribute 'type' {quote(raw_type)} is not a known event type"
        ) from None
    what = f"{_WHAT} {event_type.value}"
    for name in _REQUIRED_ATTRIBUTES:
        if not attributes.get(name):
            raise invalid(what, f"attribute {name!r} is missing")
    payload = validate(PAYLOAD_TYPES[event_type], load_json_object(data, what), what, "data")
    envelope: dict[str, Any] = {
        "type": event_type,
        "id": attributes["id"],
        "time": attributes["time"],
        "source": attributes["source"],
        "service": attributes.get("service") or None,
        "release_id": attributes.get("release_id") or None,
        "schema_version": attributes.get("schema_version") or 1,
        "data": payload,
    }
    try:
        return OpsEvent[OpsPayload].model_validate(envelope)
    except ValidationError as exc:
        raise invalid(what, describe_validation_error(exc, "attributes")) from None
