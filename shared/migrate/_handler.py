"""What ``functions/migrate`` does with one ``cloud-builds`` message: :func:`parse`,
:func:`dedupe_key`, :func:`handle`, and the deps it runs with (docs/migrate.md)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.runtime import Context, Deps, Outcome, PubsubMessage, process_deps

if TYPE_CHECKING:
    # Imported where first used: the event models with the first delivery, SQLAlchemy's
    # event API with the deps, Alembic and pglast (``_run``) only when a build is migrated
    # (docs/architecture.md, "Cold start").
    from sqlalchemy.engine import Connection

    from shared.events import Build, EventType, MigrationResult, OpsEvent
    from shared.migrate._run import MigrationFailed

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
    from sqlalchemy import event

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


def parse(data: bytes, attributes: Mapping[str, str]) -> Build:
    """A Cloud Build notification from the ``cloud-builds`` topic."""
    from shared.events import parse_build_message

    return parse_build_message(data, attributes)


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
    from shared.events import MigrationResult, OpsEvent
    from shared.release import release_id

    key = f"{event_type.value}:{result.build_id}"
    release = None
    if result.service and result.commit_sha:  # the release of the build (docs/release.md)
        release = release_id(result.service, result.commit_sha)
    return OpsEvent[MigrationResult](
        type=event_type,
        id=str(uuid.uuid5(_EVENT_NAMESPACE, key)),
        time=ctx.deps.clock(),
        source=SOURCE,
        service=result.service,
        release_id=release,
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


#: Longest piece of a caller-chosen value kept in a record (``ops.actions`` detail).
_SHOWN = 200


def _shown(value: str | None) -> str | None:
    return None if value is None else value[:_SHOWN]


def _safe_commit(build: Build) -> str | None:
    from shared.events import is_commit_sha

    return build.commit_sha if is_commit_sha(build.commit_sha) else None


def _safe_service(build: Build) -> str | None:
    from shared.events import is_service_name

    return build.service if is_service_name(build.service) else None


def unsafe_values(build: Build) -> dict[str, str]:
    """The substitutions of ``build`` that must never reach the deploy, and why.

    ``COMMIT_SHA`` and ``_SERVICE`` become the deploy's substitutions through
    ``migration.succeeded``; a triggered build from GitHub always has a full commit, so
    anything else means the trigger was run by hand with chosen values (or misconfigured).
    Absent values are not unsafe: they deploy nothing (the deploy's first step stops).
    """
    from shared.events import is_commit_sha, is_service_name

    problems: dict[str, str] = {}
    if build.commit_sha is not None and not is_commit_sha(build.commit_sha):
        problems["COMMIT_SHA"] = "is not a full commit (40 lowercase hex digits)"
    if build.service is not None and not is_service_name(build.service):
        problems["_SERVICE"] = "is not a Cloud Run service name"
    return problems


def _skip(build: Build, reason: str, ctx: Context) -> Outcome:
    """Record an unselected SUCCESS build (an operator can see what migrate ignored and
    why); publish ``skipped`` only when configured to: a manual build is not news."""
    from shared.events import EventType, MigrationResult

    ctx.record_action(
        "migration",
        "skipped",
        service=_safe_service(build),
        detail={
            "build_id": build.id,
            "trigger_id": build.build_trigger_id,
            "service": _shown(build.service),
            "commit_sha": _shown(build.commit_sha),
            "reason": reason,
        },
    )
    if ctx.deps.settings.migrate.publish_skipped:
        skipped = MigrationResult(
            build_id=build.id,
            commit_sha=_safe_commit(build),
            service=_safe_service(build),
            reason=reason,
        )
        _publish(EventType.MIGRATION_SKIPPED, skipped, ctx)
    return Outcome.skipped(f"build {build.id} {reason}")


def _refuse(build: Build, problems: dict[str, str], ctx: Context) -> MigrationFailed:
    """A selected build whose values must not reach the deploy: ``failed`` for good.

    Recorded like a failed run (its ``migrate:<build id>`` row, written on a migration
    session so it survives the failed delivery's rollback) with the offending values, cut
    short, in ``detail.rejected``; published ``failed`` without them, so Slack and logs
    never carry them. Nothing is migrated: the build's commit cannot be trusted.
    """
    from shared.events import EventType, MigrationResult
    from shared.migrate._record import RunRecorder
    from shared.migrate._run import MigrationFailed, migration_engine, start_session

    error = f"build {build.id} is not migrated or deployed: " + "; ".join(
        f"{name} {why}" for name, why in problems.items()
    )
    result = MigrationResult(
        build_id=build.id,
        commit_sha=_safe_commit(build),
        service=_safe_service(build),
        error=error,
    )
    values = {"COMMIT_SHA": build.commit_sha, "_SERVICE": build.service}
    detail = result.model_dump(mode="json", by_alias=True)
    detail["rejected"] = {name: _shown(values[name]) for name in problems}
    settings = ctx.deps.settings
    recorder = RunRecorder(build.id, service=result.service, trigger_event_id=ctx.message.event_id)
    with migration_engine(settings).connect() as conn:
        recorder.table_exists(start_session(conn, settings, f"sightops-migrate {build.id}"))
        recorder.save(conn, "failed", detail, ctx.deps.clock())
    _publish(EventType.MIGRATION_FAILED, result, ctx)
    return MigrationFailed(error)


def handle(build: Build, ctx: Context) -> Outcome:
    """Skip what is not ours (recording unselected SUCCESS builds); refuse a selected build
    whose values could not travel safely into the deploy; migrate the rest and report."""
    from shared.events import BuildStatus, EventType
    from shared.migrate._run import MigrationFailed, RunRequest, run_migrations

    cfg = ctx.deps.settings.migrate
    if build.status is not BuildStatus.SUCCESS:
        return Outcome.skipped(f"build {build.id} is {build.status.value}, not SUCCESS")
    reason = cfg.selector.why_not(build)
    if reason is not None:
        return _skip(build, f"{reason} (MIGRATE__SELECTOR)", ctx)
    problems = unsafe_values(build)
    if problems:
        raise _refuse(build, problems, ctx)

    release_delivery_snapshot(ctx.conn)  # before waiting for the lock, too
    attempt = ctx.message.delivery_attempt
    request = RunRequest(
        build_id=build.id,
        commit_sha=build.commit_sha,
        service=build.service,
        trigger_event_id=ctx.message.event_id,
        final_attempt=attempt is not None and attempt >= cfg.max_delivery_attempts,
        build_created_at=build.create_time,
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
