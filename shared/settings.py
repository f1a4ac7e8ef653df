"""One typed Settings object per process (pydantic-settings).

Defaults match the local stack started by ``scripts/services`` so tests and ``make dev``
need no environment at all; production sets everything through env and Secret Manager
references.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.errors import ConfigError
from shared.event_ages import EVENT_CONSUMERS, MAX_EVENT_AGE_S
from shared.events import MigrateSelector

__all__ = [
    "EVENT_CONSUMERS",
    "BackupConfig",
    "CanaryConfig",
    "CanaryPlan",
    "ConsoleConfig",
    "HousekeepingConfig",
    "IntakeConfig",
    "KpiConfig",
    "MaintainConfig",
    "MigrateConfig",
    "NotifyConfig",
    "RollbackConfig",
    "Settings",
    "Topics",
    "TraceConfig",
    "database_tls",
    "get_settings",
    "strip_tls",
    "sync_database_url",
]

_ASYNC_TO_SYNC_DRIVERS = {
    "postgresql+asyncpg": "postgresql+pg8000",
    "postgresql+psycopg": "postgresql+pg8000",
    "postgresql+psycopg2": "postgresql+pg8000",
    "postgresql": "postgresql+pg8000",
    "postgres": "postgresql+pg8000",
    "postgresql+pg8000": "postgresql+pg8000",
}


# URL parameters that say how to use TLS (libpq's names, and asyncpg's ``ssl``). pg8000
# takes none of them as keywords: they leave the URL and become ``connect_args``
# (shared.db.tls_connect_args), so a URL's sslmode=verify-full is never silently dropped.
TLS_PARAMS = ("sslmode", "ssl", "sslrootcert", "sslcert", "sslkey")


def database_tls(url: str) -> dict[str, str]:
    """The TLS parameters of a database URL (any driver), as given."""
    from sqlalchemy.engine import make_url

    query = make_url(url).query
    out: dict[str, str] = {}
    for key in TLS_PARAMS:
        value = query.get(key)
        if isinstance(value, tuple):  # a repeated parameter: the last one counts, as in libpq
            value = value[-1] if value else None
        if value is not None:
            out[key] = str(value)
    return out


def strip_tls(url: str) -> str:
    """``url`` without its TLS parameters (pg8000 would reject them as unknown keywords)."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    query = {k: v for k, v in parsed.query.items() if k not in TLS_PARAMS}
    return parsed.set(query=query).render_as_string(hide_password=False)


def sync_database_url(async_url: str) -> str:
    """Derive the pg8000 URL from the app's async URL, keeping credentials and the query
    except its TLS parameters (:func:`database_tls` carries those to the engine)."""
    from sqlalchemy.engine import make_url

    url = make_url(async_url)
    driver = _ASYNC_TO_SYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(f"unsupported database driver {url.drivername!r}")
    return strip_tls(url.set(drivername=driver).render_as_string(hide_password=False))


class Topics(BaseModel):
    """Pub/Sub topic names (terraform/pubsub.tf creates them; sightops/topology.py wires them)."""

    # Each topic's name where it differs from the design's (e.g. a staging project's).
    cloud_builds: str = "cloud-builds"
    smoke_tests: str = "smoke-tests"
    monitoring_alerts: str = "monitoring-alerts"
    ops_events: str = "ops-events"
    kpi_refresh: str = "kpi-refresh"
    billing_budget: str = "billing-budget"  # Cloud Billing publishes budgets here (notify)
    maintenance: str = "maintenance"
    backup_requests: str = "backup-requests"


# Per-function configuration, nested so env reads e.g. ``ROLLBACK__MAX_PER_WINDOW=3``.
# Each function's owner fills in its own model; defaults must be safe.


class MigrateConfig(BaseModel):
    """The migrate function; docs/migrate.md explains every knob.

    Env: ``MIGRATE__LOCK_WAIT_S=120``,
    ``MIGRATE__SELECTOR='{"trigger_ids": ["<CI trigger id>"], "services": ["sight-api"]}'``.
    Paths default to the repository's ``alembic.ini`` and ``graph/migrations``.
    """

    # Which SUCCESS builds migrate: those its CI triggers ran (never a manual build);
    # empty selects nothing (never "every build").
    selector: MigrateSelector = MigrateSelector()
    # Publish sight.ops.migration.skipped for SUCCESS builds the selector does not select
    # (they are recorded in ops.actions either way; off: a manual build is not news).
    publish_skipped: bool = False
    # Older deliveries are dropped as stale (a replay days later must not migrate silently).
    max_age_s: float = Field(default=24 * 3600, gt=0)
    # Retryable failures become `failed` on this delivery attempt, so the deploy stage always
    # gets an answer instead of a dead-lettered message (match the subscription's policy).
    max_delivery_attempts: int = Field(default=5, ge=1)

    # PostgreSQL advisory lock (per database) serialising every migrate run.
    lock_name: str = "sightops:migrate"
    lock_wait_s: float = Field(default=120.0, gt=0)
    lock_poll_s: float = Field(default=0.05, gt=0)
    # Session defaults set before EACH migration (a migration may lower lock_timeout itself).
    lock_timeout_ms: int = Field(default=5_000, ge=1)
    statement_timeout_ms: int = Field(default=300_000, ge=1)

    # The alembic.ini migrate runs (None: the repository's).
    alembic_ini: Path | None = None
    # Directories of revision files; None = what alembic.ini says (alembic/versions).
    version_locations: list[Path] | None = None

    # Run the Neo4j schema migrations too, from graph_migrations_dir (None: graph/migrations).
    graph_enabled: bool = True
    graph_migrations_dir: Path | None = None
    # Bookkeeping node labels (tests use unique ones: Neo4j Community has one database).
    graph_record_label: str = Field(default="SchemaMigration", pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    graph_lock_label: str = Field(default="SchemaMigrationLock", pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    # A lock older than this belongs to a crashed runner and is taken over.
    graph_lock_ttl_s: float = Field(default=600.0, gt=0)
    graph_lock_wait_s: float = Field(default=30.0, gt=0)


class RollbackConfig(BaseModel):
    """The rollback function and smoke runner; docs/rollback.md."""

    # Where the Cloud Run services live (None: ``gcp_project`` / ``gcp_region``). A smoke
    # event's own ``region`` wins over ``region``.
    project: str | None = None
    region: str | None = None
    dry_run: bool = False  # decide, record and publish, never move traffic
    max_per_window: int = Field(default=2, ge=1)  # automatic rollbacks per service...
    window_s: float = Field(default=3600.0, gt=0)  # ...in this window, then escalate
    alert_window_s: float = Field(default=1800.0, gt=0)  # alerts count this long after promotion
    max_event_age_s: float = Field(default=900.0, gt=0)  # older deliveries are dropped as stale
    lock_wait_s: float = Field(default=30.0, gt=0)  # wait for the per-service lock, then 503
    operation_timeout_s: float = Field(default=45.0, gt=0)  # < the push ack deadline (60 s)
    api_timeout_s: float = Field(default=10.0, gt=0)  # each Cloud Run API call
    # Smoke runner: each check gets a timeout and at most ``smoke_retries`` extra attempts.
    smoke_url: str | None = None  # default URL for `sightops smoke` (make dev: the stand-in)
    smoke_timeout_s: float = Field(default=10.0, gt=0)
    smoke_retries: int = Field(default=2, ge=0)
    smoke_backoff_s: float = Field(default=0.5, ge=0)
    smoke_email: str = "smoke@sight.local"
    smoke_password: SecretStr = SecretStr("smoke-local")  # or a Secret Manager reference
    smoke_project_id: str = "00000000-0000-4000-8000-00000000a11e"  # Sight's smoke project


class NotifyConfig(BaseModel):
    """The notify and notify_flush functions; see docs/notify.md.

    Routes, filters, templates and grouping live in a YAML file (``config_file``,
    ``NOTIFY__CONFIG_FILE``) validated at start-up; the grouping values here are the
    defaults that file may override.
    """

    # The YAML file of routes, filters and templates (None: the built-in defaults).
    config_file: str | None = None
    # Alertmanager's grouping defaults (the file's `grouping` wins): wait before a new
    # group's first message, between its updates, and before repeating a firing group.
    group_wait_s: float = Field(default=10.0, ge=0)
    group_interval_s: float = Field(default=60.0, gt=0)
    repeat_interval_s: float = Field(default=4 * 3600.0, gt=0)
    # Longest a delivery blocks in-process waiting for its group to fall due.
    inline_wait_max_s: float = Field(default=10.0, ge=0, le=30)
    # True when Cloud Scheduler calls notify_flush (every minute): a group due later
    # than the inline wait is left to it. False: Pub/Sub redelivery is the timer (503).
    scheduled_flush: bool = False
    # Each delivery first flushes other due groups; it starts another only within this
    # budget (and stops at the first transient failure), so a slow Slack cannot hold it.
    flush_due_budget_s: float = Field(default=3.0, ge=0)
    redis_prefix: str = "sightops:notify:v1:"
    # Grouping state and sent-markers expire by themselves (Redis holds nothing forever).
    state_ttl_s: int = Field(default=2 * 86400, gt=0)
    # Older deliveries are dropped as stale (an alert an hour late is no longer news).
    max_event_age_s: float = Field(default=3600.0, gt=0)
    # After a Redis error, notify skips Redis this long (alerts sent ungrouped) instead of
    # paying the client's connect retries on every delivery (shared.cache.RedisOutageGuard).
    redis_retry_s: float = Field(default=10.0, ge=0)


class IntakeConfig(BaseModel):
    """The alert_intake function (docs/notify.md, "alert_intake").

    Env: ``INTAKE__USERNAME``, ``INTAKE__PASSWORD`` (values, or Secret Manager
    references), ``INTAKE__MAX_BODY_BYTES``. The former ``NOTIFY__INTAKE_USERNAME``,
    ``NOTIFY__INTAKE_PASSWORD`` and ``NOTIFY__INTAKE_MAX_BODY_BYTES`` are still read when
    the new name is not set (:meth:`Settings._intake_from_notify`).
    """

    # HTTP Basic credentials of Cloud Monitoring's webhook channel (values, or Secret
    # Manager references); unset: every request is refused (503).
    username: SecretStr | None = None
    password: SecretStr | None = None
    # Bodies larger than this are refused (413) before they are read.
    max_body_bytes: int = Field(default=64 * 1024, gt=0)


class KpiConfig(BaseModel):
    """The kpi and kpi_refresh functions; semantics in docs/kpi.md."""

    # An entry is fresh for ttl_s, then served stale (while one caller recomputes) for
    # stale_ttl_s more; after that Redis drops it.
    ttl_s: float = Field(default=300.0, gt=0)
    stale_ttl_s: float = Field(default=3600.0, ge=0)
    # The single-flight lock: expires by itself if its holder dies; a watchdog extends it
    # while a computation runs, so it never expires under a live (slow) computation.
    lock_ttl_s: float = Field(default=5.0, gt=0)
    # The watchdog stops extending the lock after this long (at least lock_ttl_s), so a
    # hung computation lets its lock expire; the database's statement timeout is 30 s.
    compute_timeout_s: float = Field(default=60.0, gt=0)
    # How long a caller waits for another's computation before computing itself.
    wait_s: float = Field(default=8.0, gt=0)
    poll_min_s: float = Field(default=0.005, gt=0)
    poll_max_s: float = Field(default=0.025, gt=0)
    # XFetch: larger beta refreshes earlier; 0 disables early refresh.
    xfetch_beta: float = Field(default=1.0, ge=0)
    # After a Redis error, compute directly this long before trying Redis again; unset:
    # the top-level REDIS_RETRY_S (Settings.redis_retry_s).
    redis_retry_s: float | None = Field(default=None, ge=0)
    # An unknown project id is remembered as "not found" this long (0 disables): repeated
    # requests for it cost no lock and no query; a project created meanwhile shows after it.
    not_found_ttl_s: float = Field(default=30.0, ge=0)
    # At most this many computations run at once per instance (0: DB_POOL_SIZE), so a
    # flood of distinct ids never queues on the pool; a request that finds no slot within
    # compute_slot_wait_s is answered 503 `overloaded` (docs/kpi.md).
    max_computations: int = Field(default=0, ge=0)
    compute_slot_wait_s: float = Field(default=0.25, ge=0)
    key_prefix: str = "sightops:kpi:v1"
    # kpi_refresh with all_active stops starting new projects after this long.
    refresh_budget_s: float = Field(default=240.0, gt=0)
    # Refresh requests older than this are dropped (the next schedule supersedes them).
    refresh_max_age_s: float = Field(default=900.0, gt=0)
    # Alert noise in the release report (docs/metrics.md, "Alert noise"): an incident that
    # closed by itself within this long, nothing done on its service meanwhile, is a likely
    # false positive...
    noise_close_within_s: float = Field(default=900.0, gt=0)
    # ...and a policy with more of them than this in a calendar month is flagged (the seed's 5).
    noise_max_per_month: int = Field(default=5, ge=0)


class HousekeepingConfig(BaseModel):
    """Pruning ``ops.event_receipts`` and ``ops.rejected_events``; docs/schema.md, "Pruning".

    Env: ``HOUSEKEEPING__RECEIPTS_RETENTION_S=604800``. Receipts are never pruned younger
    than the largest maximum event age of any consumer plus ``receipts_margin_s``
    (``shared.housekeeping.receipts_retention``): a younger one may still dedupe a live
    redelivery, so that floor wins over a smaller configured retention.
    """

    # How long receipts and rejected events are kept (receipts: never below the floor).
    receipts_retention_s: float = Field(default=7 * 86400.0, gt=0)
    receipts_margin_s: float = Field(default=3600.0, ge=60)  # clock skew, publish delays
    rejected_retention_s: float = Field(default=30 * 86400.0, gt=0)
    # Each batch is its own short transaction deleting at most batch_size rows (SKIP
    # LOCKED), so pruning never holds many row locks or a long transaction.
    batch_size: int = Field(default=1000, ge=1, le=10_000)
    # A run stops after max_batches per table or budget_s, whichever first; the next
    # scheduled run goes on (kpi_refresh's timeout is 300 s).
    max_batches: int = Field(default=100, ge=1)
    budget_s: float = Field(default=120.0, gt=0)
    # ops.rejected_events keeps at most this much of a payload: the head, with the size
    # and sha256 of the whole payload in the reason.
    rejected_payload_max_bytes: int = Field(default=256 * 1024, ge=1024)


class MaintainConfig(BaseModel):
    """The maintain function: routine database care (docs/maintain.md).

    Env: ``MAINTAIN__REINDEX_BLOAT_RATIO=0.5``, ``MAINTAIN__SCHEMAS='["public"]'``. The
    advisory lock is migrate's (``MIGRATE__LOCK_NAME``), so maintenance never overlaps a
    migration.
    """

    # Schemas whose tables are ANALYZEd and whose indexes are checked (Sight's tables).
    schemas: list[str] = Field(default_factory=lambda: ["public"], min_length=1)
    # Rebuild an index when the estimated share of it a fresh build would not need reaches
    # this (0.5: the index is at least twice the size a rebuild would give)...
    reindex_bloat_ratio: float = Field(default=0.5, gt=0, lt=1)
    # ...and it is at least this big (a small index costs nothing to keep as it is).
    min_index_bytes: int = Field(default=8 * 1024 * 1024, ge=0)
    # Wait this long for the migration lock; then the run is skipped (no retry: the next
    # scheduled run is the retry).
    lock_wait_s: float = Field(default=60.0, gt=0)
    lock_poll_s: float = Field(default=0.1, gt=0)
    # Session timeouts: lock_timeout for ANALYZE and REINDEX's lock waits (it waits for
    # older transactions too); a statement timeout each for reading the catalogs, for one
    # ANALYZE and for one REINDEX INDEX CONCURRENTLY.
    lock_timeout_ms: int = Field(default=10_000, ge=1)
    inspect_timeout_ms: int = Field(default=30_000, ge=1)
    analyze_timeout_ms: int = Field(default=120_000, ge=1)
    reindex_timeout_ms: int = Field(default=300_000, ge=1)
    # The run's time budget once the lock is held: no REINDEX starts later, and none may
    # run past it (lock_wait_s + budget_s stays under the function's timeout, 540 s).
    budget_s: float = Field(default=360.0, gt=0)
    # At most this many rebuilds per run, biggest reclaim first; the rest are deferred.
    max_reindexes: int = Field(default=5, ge=0)
    # maintenance_work_mem for the rebuilds (pgvector's HNSW build is slow when its graph
    # does not fit); None: the server's setting.
    maintenance_work_mem_mb: int | None = Field(default=None, ge=1)
    # Decide, record and publish, rebuild nothing.
    dry_run: bool = False
    # Neo4j: every index and constraint must be ONLINE; POPULATING is reported once it
    # has lasted this long (seen in earlier runs' records). graph_name_pattern: a regular
    # expression an index name must match to be checked (None: every index).
    graph_enabled: bool = True
    graph_populating_max_s: float = Field(default=3600.0, gt=0)
    graph_name_pattern: str | None = None
    # Older requests are dropped as stale (the next scheduled run supersedes them).
    max_event_age_s: float = Field(default=6 * 3600.0, gt=0)


class TraceConfig(BaseModel):
    """OpenTelemetry spans, one trace per release (docs/release.md).

    Env: ``TRACE__EXPORTER=gcp|local|none``, ``TRACE__LOCAL_FILE``, ``TRACE__SAMPLE_RATIO``.
    Unset exporter: ``gcp`` (Cloud Trace) in production, ``none`` in tests, ``local`` (a
    JSON-lines file, one span a line, ``$SIGHTOPS_STATE/spans.jsonl``) otherwise.
    """

    # Where spans go (unset: gcp in production, none in tests, local otherwise) and the
    # local exporter's file (unset: $SIGHTOPS_STATE/spans.jsonl).
    exporter: Literal["gcp", "local", "none"] | None = None
    local_file: Path | None = None
    # Head sampling of root spans; a continued trace follows its parent's decision. The
    # release's trace id is deterministic, so every function decides the same way for it.
    sample_ratio: float = Field(default=1.0, ge=0, le=1)
    # Cloud Trace API endpoint (tests: a local server speaking its REST wire format);
    # unset: Google's, with Application Default Credentials.
    endpoint: str | None = None
    # gcp: spans are batched and flushed at the end of each delivery (CPU may be throttled
    # between requests), waiting at most this long.
    flush_timeout_ms: int = Field(default=2_000, ge=0)


def check_steps(steps: Sequence[int]) -> None:
    """Canary steps rise within 1..100 and end at 100. Here, not in shared.canary, so that
    reading settings never loads the canary (every function's package would carry it)."""
    if not steps or steps[-1] != 100:
        raise ValueError(f"steps must end at 100, not {list(steps)}")
    if any(not 0 < s <= 100 for s in steps) or any(a >= b for a, b in itertools.pairwise(steps)):
        raise ValueError(f"steps must increase within 1..100, not {list(steps)}")


class CanaryPlan(BaseModel):
    """One service's traffic steps (percent to the canary, rising, ending at 100) and the
    time limit per step (docs/canary.md, "The step plan")."""

    steps: list[int] = Field(default_factory=lambda: [5, 25, 50, 100])
    max_step_s: float = Field(default=1800.0, gt=0)

    @model_validator(mode="after")
    def _valid_plan(self) -> CanaryPlan:
        check_steps(self.steps)
        return self


class CanaryConfig(BaseModel):
    """The canary function (docs/canary.md, "The function"). Env: ``CANARY__SERVICES=
    '{"sight-api": {"steps": [5, 25, 50, 100], "max_step_s": 1800}}'`` opts services in."""

    # Services whose deploys go through a canary, each with its plan (sightops deploy).
    services: dict[str, CanaryPlan] = Field(default_factory=dict)
    # Where the services live (None: ``gcp_project`` / ``gcp_region``); a request's own win.
    project: str | None = None
    region: str | None = None
    # Monitoring's alignment period (Cloud Run's points are 60 s samples; local stack: 1)
    alignment_s: int = Field(default=60, ge=1)
    # the newest points Monitoring may still be filling are left out (local stack: 0)
    visibility_delay_s: float = Field(default=180.0, ge=0)
    # the stable revision's latencies this long before a step fix the latency boundary
    baseline_s: float = Field(default=1800.0, ge=0)
    # host:port of the Monitoring stand-in (insecure gRPC); None: the real API with ADC
    monitoring_endpoint: str | None = None
    # The first ``logs_steps`` steps (the 5 % one by default) are analysed every
    # ``logs_alignment_s`` from Cloud Run's request logs, which Cloud Logging shows within
    # seconds; later steps from Monitoring (docs/canary.md, "Reading the request logs").
    logs_steps: int = Field(default=1, ge=0)
    logs_alignment_s: int = Field(default=10, ge=1)
    # the newest seconds of logs, still arriving, are left out (local stack: 0)
    logs_visibility_delay_s: float = Field(default=10.0, ge=0)
    # stable-revision log entries read per second at most; above, a sample of them
    logs_max_stable_per_s: float = Field(default=100.0, gt=0)
    # host:port of the Cloud Logging stand-in (insecure gRPC); None: the real API with ADC
    logging_endpoint: str | None = None
    # the log view entries.list reads (Terraform's view of Cloud Run's request logs, all the
    # canary may read); None: the project (``projects/<project>``), as the stand-in serves
    logs_view: str | None = Field(
        default=None, pattern=r"^projects/[^/\s]+/locations/[^/\s]+/buckets/[^/\s]+/views/[^/\s]+$"
    )
    tick_s: float = Field(default=60.0, gt=0)  # `sightops dev`'s local ticker
    max_event_age_s: float = Field(default=900.0, gt=0)  # older deliveries are stale
    lock_wait_s: float = Field(default=30.0, gt=0)  # the per-service lock (rollback's)
    operation_timeout_s: float = Field(default=45.0, gt=0)  # < the push ack deadline (60 s)
    api_timeout_s: float = Field(default=10.0, gt=0)  # each Cloud Run / Monitoring call
    dry_run: bool = False  # decide, record and publish, never move traffic

    def plan_for(self, service: str) -> CanaryPlan:
        """The service's plan (the default one when it names none); ``StepPlan.of`` turns
        it into the canary's step plan."""
        return self.services.get(service, CanaryPlan())


class ConsoleConfig(BaseModel):
    """The console and slack_actions functions (docs/console.md). Env:
    ``CONSOLE__BASE_URL=https://sightops-console-xyz.a.run.app``,
    ``CONSOLE__SLACK_ALLOWED='["U012AB3CD", "S0614TZR7"]'``."""

    # Where people open the console: every Slack message about a release links to
    # <base_url>/releases/<release_id> (None: no link).
    base_url: str | None = Field(default=None, pattern=r"^https?://[^\s<>|]+$")
    # The dead-letter hold subscriptions /messages reads (FUNCTION--TOPIC--dead-letter,
    # terraform/pubsub.tf); empty: only ops.rejected_events is shown.
    dead_letter_holds: list[str] = Field(default_factory=list)
    api_timeout_s: float = Field(default=5.0, gt=0)  # each Cloud Run / Pub/Sub read of a page
    page_size: int = Field(default=100, ge=1, le=1000)  # releases and messages per page
    # Slack interactivity: the app's signing secret (a value or a Secret Manager
    # reference; None: every interaction is refused), who may act (user ids U.../W...,
    # user group ids S...), the bot token that expands a group into its members, and the
    # Web API base (make dev: the Slack stand-in; None: https://slack.com/api/).
    slack_signing_secret: SecretStr | None = None
    slack_allowed: list[str] = Field(default_factory=list)
    slack_bot_token: SecretStr | None = None
    slack_api_url: str | None = None

    @field_validator("base_url", "slack_api_url", mode="before")
    @classmethod
    def _unset_when_empty(cls, value: Any) -> Any:
        """``CONSOLE__BASE_URL=""`` (Terraform's default) means no console."""
        return None if value == "" else value


class BackupConfig(BaseModel):
    """The backup and backup_drill functions and ``sightops backup`` (docs/backups.md).

    Env: ``BACKUP__BUCKET=sight-prod-backups``, ``BACKUP__SCRATCH_NEO4J_URI=bolt://...``.
    """

    # The Cloud Storage bucket backups are written to and restored from.
    bucket: str = "sightops-backups"
    # Cloud Storage JSON API endpoint (make dev / tests: the stand-in); None: Google's, ADC.
    storage_endpoint: str | None = None
    # Upload and download chunk: the most an object transfer holds in memory (a multiple
    # of 256 KiB, as resumable uploads require).
    chunk_bytes: int = Field(default=8 * 1024 * 1024, ge=256 * 1024, multiple_of=256 * 1024)
    compresslevel: int = Field(default=6, ge=1, le=9)
    schemas: list[str] = Field(default_factory=lambda: ["public", "ops"])
    # COPY of one large table may take minutes; the function's timeout bounds the whole run.
    statement_timeout_s: float = Field(default=3000.0, gt=0)
    # The drill restores into CREATE DATABASE <prefix><id> on the backed-up server...
    scratch_database_prefix: str = Field(default="sightops_restore_", pattern=r"^[a-z_][a-z0-9_]*$")
    # ...and into this Neo4j, which it WIPES first (never the production graph).
    scratch_neo4j_uri: str = "bolt://127.0.0.1:7689"
    scratch_neo4j_user: str = "neo4j"
    scratch_neo4j_password: SecretStr = SecretStr("sight-local-neo4j")
    # Keep a drill's scratch database when the restore differs (to look at it by hand).
    keep_failed_restore: bool = False
    # A verified backup older than this is stale (the alert: terraform/backup.tf).
    postgres_max_age_h: float = Field(default=26.0, gt=0)
    neo4j_max_age_h: float = Field(default=8 * 24.0, gt=0)
    # Requests older than this are dropped (the next schedule supersedes them).
    max_event_age_s: float = Field(default=6 * 3600.0, gt=0)


class Settings(BaseSettings):
    """Everything a sight-ops process is configured by."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__", extra="ignore", case_sensitive=False
    )

    # Where this process runs; production never uses the Pub/Sub emulator and traces to
    # Cloud Trace by default (TRACE__EXPORTER).
    environment: Literal["local", "test", "production"] = "local"
    # The level of the JSON logs (Python logging's names).
    log_level: str = "INFO"

    # PostgreSQL: the app's async URL; everything here uses the derived sync pg8000 URL.
    database_url: SecretStr = SecretStr(
        "postgresql+asyncpg://sight:sight-local@127.0.0.1:54329/sight"
    )
    database_url_sync_override: SecretStr | None = Field(
        default=None, validation_alias="DATABASE_URL_SYNC"
    )
    db_pool_size: int = 5
    db_max_overflow: int = 5
    db_pool_timeout_s: float = 10.0
    db_connect_timeout_s: float = 5.0
    db_statement_timeout_ms: int = 30_000
    db_lock_timeout_ms: int = 30_000

    # Neo4j (Bolt) and its credentials.
    neo4j_uri: str = "bolt://127.0.0.1:7688"
    neo4j_user: str = "neo4j"
    neo4j_password: SecretStr = SecretStr("sight-local-neo4j")

    # Redis (the URL may hold its password) and each command's socket timeout.
    redis_url: SecretStr = SecretStr("redis://127.0.0.1:63799/0")
    redis_timeout_s: float = 0.5
    # Past this many connections a caller waits (up to redis_timeout_s) for a free one.
    redis_max_connections: int = Field(default=64, ge=2)
    # After a Redis error, services skip Redis this long (shared.cache.RedisOutageGuard)
    # instead of paying a timeout on every call; KPI__REDIS_RETRY_S overrides it for kpi.
    redis_retry_s: float = Field(default=5.0, ge=0)

    # The Google Cloud project and region of the functions and their topics.
    gcp_project: str = "sight-local"
    gcp_region: str = "europe-west1"
    # The Pub/Sub emulator (host:port) outside production; unset: the real Pub/Sub.
    pubsub_emulator_host: str | None = "127.0.0.1:8681"
    topics: Topics = Topics()

    # Cloud API endpoints; set to the local stand-ins in local runs, unset in production.
    cloud_run_endpoint: str | None = None
    secret_manager_endpoint: str | None = None

    # Where metrics go: JSON log lines, or Cloud Monitoring custom metrics.
    metrics_backend: Literal["log", "cloud_monitoring"] = "log"

    # Slack incoming webhook: the URL itself, or a Secret Manager reference to it.
    # Unset: messages are rendered to the log instead of sent.
    slack_webhook_url: SecretStr | None = None
    slack_timeout_s: float = 5.0
    slack_max_retry_wait_s: float = 5.0

    migrate: MigrateConfig = MigrateConfig()
    rollback: RollbackConfig = RollbackConfig()
    notify: NotifyConfig = NotifyConfig()
    intake: IntakeConfig = IntakeConfig()
    kpi: KpiConfig = KpiConfig()
    housekeeping: HousekeepingConfig = HousekeepingConfig()
    trace: TraceConfig = TraceConfig()
    maintain: MaintainConfig = MaintainConfig()
    canary: CanaryConfig = CanaryConfig()
    backup: BackupConfig = BackupConfig()
    console: ConsoleConfig = ConsoleConfig()

    @model_validator(mode="before")
    @classmethod
    def _intake_from_notify(cls, data: Any) -> Any:
        """The intake settings moved out of ``notify``: the old env names
        (``NOTIFY__INTAKE_USERNAME`` & co.) still count where the new ones are unset."""
        if not isinstance(data, dict) or not isinstance(data.get("notify"), dict):
            return data
        notify = dict(data["notify"])
        old = {k: notify.pop(f"intake_{k}") for k in _INTAKE_FIELDS if f"intake_{k}" in notify}
        if not old:
            return data
        intake = data.get("intake")
        if isinstance(intake, IntakeConfig):
            intake = intake.model_dump(exclude_unset=True)
        merged = {**old, **(intake if isinstance(intake, dict) else {})}
        return {**data, "notify": notify, "intake": merged}

    def max_event_age(self, consumer: str) -> timedelta:
        """The oldest delivery ``consumer`` still handles; older ones are dropped as stale
        (docs/architecture.md, "The handler runtime"). Receipts are kept at least this
        long for every consumer in :data:`EVENT_CONSUMERS` (shared.housekeeping)."""
        age = MAX_EVENT_AGE_S.get(consumer)
        if age is None:
            known = ", ".join(sorted(MAX_EVENT_AGE_S))
            raise ConfigError(
                f"no maximum event age for consumer {consumer!r} (known: {known});"
                " add it to shared/settings.py or pass max_age= to pubsub_handler"
            )
        return timedelta(seconds=age(self))

    @property
    def database_url_sync(self) -> str:
        """pg8000 URL without TLS parameters (a plain property so it never shows up in repr
        or dumps); :attr:`database_tls` holds those."""
        if self.database_url_sync_override is not None:
            return strip_tls(self.database_url_sync_override.get_secret_value())
        return sync_database_url(self.database_url.get_secret_value())

    @property
    def database_tls(self) -> dict[str, str]:
        """TLS parameters (``sslmode`` & co.) of the URL ``database_url_sync`` came from."""
        source = self.database_url_sync_override
        if source is None:
            source = self.database_url
        return database_tls(source.get_secret_value())


_INTAKE_FIELDS = ("username", "password", "max_body_bytes")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once (cold start pays for it once)."""
    return Settings()
