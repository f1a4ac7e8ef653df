"""What ``functions/migrate`` does with one ``cloud-builds`` message (DESIGN.md 4.1)."""

from __future__ import annotations

import threading
import uuid
from datetime import timedelta

from sqlalchemy import event
from sqlalchemy.engine import Connection

from shared.events import Build, BuildStatus, EventType, MigrationResult, OpsEvent
from shared.migrate._run import MigrationFailed, RunRequest, run_migrations
from shared.runtime import Context, Deps, Outcome, PubsubMessage, process_deps
from shared.settings import get_settings

SOURCE = "migrate"

#: How long a concurrent duplicate waits in the runtime's receipt INSERT before it is
#: answered 503 (and redelivered later, when it is a plain duplicate). Short on purpose:
#: a backend blocked inside that INSERT holds a snapshot, and a migration's CREATE INDEX
#: CONCURRENTLY waits for every older snapshot in the database while the duplicate waits
#: for our delivery to commit: a cycle PostgreSQL cannot see, which would hold the index
#: build until its lock_timeout and fail it (docs/migrate.md, deadlock analysis).
DUPLICATE_WAIT_MS = 50

_deps_lock = threading.Lock()


def _short_lock_waits(conn: Connection) -> None:
    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{DUPLICATE_WAIT_MS}ms'")


def migrate_deps() -> Deps:
    """The process deps, with delivery transactions that wait at most DUPLICATE_WAIT_MS
    for a lock (the runtime's default is the engine's 30 s session lock_timeout).

    The delivery engine becomes an ``OptionEngine`` over the same pool with a local
    ``begin`` listener, so nothing else sharing the pool is affected.
    """
    deps = process_deps()
    with _deps_lock:
        engine = deps.engine
        if not engine.get_execution_options().get("sightops_migrate_delivery"):
            scoped = engine.execution_options(sightops_migrate_delivery=True)
            event.listen(scoped, "begin", _short_lock_waits)
            deps.__dict__["engine"] = scoped
    return deps


# Deterministic event ids: a re-published result (publish failed after the run was
# recorded) carries the same id, so consumers deduplicate it.
_EVENT_NAMESPACE = uuid.UUID("6b2d3f0e-5a41-4c7e-9d8a-3c1f0e7b9a52")


def max_age() -> timedelta:
    """Oldest delivery migrate still acts on (``MIGRATE__MAX_AGE_S``)."""
    return timedelta(seconds=get_settings().migrate.max_age_s)


def dedupe_key(build: Build, message: PubsubMessage) -> str:
    """One run per build *and status*.

    Not the build id alone: a build publishes QUEUED, WORKING and SUCCESS under the same
    id, and the QUEUED message would otherwise consume the receipt that the SUCCESS
    message needs.
    """
    return f"{build.id}:{build.status.value}"


def migration_event(
    event_type: EventType, result: MigrationResult, ctx: Context
) -> OpsEvent[MigrationResult]:
    key = f"{event_type.value}:{result.build_id}"
    return OpsEvent[MigrationResult](
        type=event_type,
        id=str(uuid.uuid5(_EVENT_NAMESPACE, key)),
        time=ctx.deps.clock(),
        source=SOURCE,
        service=result.service,
        data=result,
    )


def _publish(event_type: EventType, result: MigrationResult, ctx: Context) -> None:
    ctx.deps.publisher.publish_event(
        ctx.deps.settings.topics.ops_events, migration_event(event_type, result, ctx)
    )


def release_delivery_snapshot(conn: Connection) -> None:
    """Make the idle delivery transaction hold no snapshot while we migrate or wait.

    The runtime's receipt ``INSERT ... RETURNING`` runs in pg8000's unnamed portal, which
    stays open (and keeps its snapshot registered) until the next statement. Idle with a
    snapshot, the delivery would be waited for by CREATE INDEX CONCURRENTLY (it waits for
    every older snapshot in the database) while the delivery waits for the index build:
    a cycle through our own process that only lock_timeout breaks. A parameterless
    statement goes through the simple query protocol, which replaces and drops that
    portal (tests/shared/migrate/test_deadlock.py shows both sides).
    """
    conn.exec_driver_sql("SELECT 1")


def handle_build(build: Build, ctx: Context) -> Outcome:
    """Skip what is not ours quietly; migrate a selected SUCCESS build and report it."""
    cfg = ctx.deps.settings.migrate
    if build.status is not BuildStatus.SUCCESS:
        return Outcome.skipped(f"build {build.id} is {build.status.value}, not SUCCESS")
    if not cfg.selector.selects(build):
        reason = "not selected by the migrate build selector (MIGRATE__SELECTOR)"
        if cfg.publish_skipped:
            skipped = MigrationResult(
                build_id=build.id, commit_sha=build.commit_sha, service=build.service, reason=reason
            )
            _publish(EventType.MIGRATION_SKIPPED, skipped, ctx)
        return Outcome.skipped(f"build {build.id} {reason}")

    release_delivery_snapshot(ctx.conn)  # before waiting for the lock, too
    attempt = ctx.message.delivery_attempt
    request = RunRequest(
        build_id=build.id,
        commit_sha=build.commit_sha,
        service=build.service,
        trigger_event_id=ctx.message.event_id,
        final_attempt=attempt is not None and attempt >= cfg.max_delivery_attempts,
    )
    run = run_migrations(ctx.deps, request)
    result = run.result
    if run.status == "failed":
        _publish(EventType.MIGRATION_FAILED, result, ctx)
        raise MigrationFailed(result.error or "migration failed")
    _publish(EventType.MIGRATION_SUCCEEDED, result, ctx)
    return Outcome.handled(
        f"build {build.id}: postgres {result.postgres.from_} -> {result.postgres.to}, "
        f"graph {result.graph.from_} -> {result.graph.to}"
        + (" (breaking)" if result.breaking else "")
        + (" (replayed)" if run.replayed else ""),
        breaking=result.breaking,
        duration_ms=result.duration_ms,
    )
