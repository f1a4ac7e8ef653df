"""One migrate run for one build: lock, lint, Alembic migration by migration, graph, record.

Sessions and locks (docs/migrate.md, "Transactions, locks, deadlocks"):

- the delivery transaction (``ctx.conn``) holds only the runtime's receipt; nothing here
  uses it, so it holds no lock a migration could need (except on ``ops.event_receipts``,
  which the linter flags);
- one session of its own (never from the delivery pool) holds the advisory lock, runs
  Alembic and records the run: lock, work and record live and die together;
- the graph lock is taken inside the PostgreSQL lock, the Alembic in-process lock inside
  both; every run takes them in that order, so no cycle can form.

Errors: a database or Neo4j outage, lock contention and a lock wait that runs out are
retried (TransientError -> 503 -> Pub/Sub redelivers); on the final delivery attempt they
become ``failed``, so the deploy stage always gets an answer. A migration that fails, a
lint block, an edited graph file, a migration partly applied (some of its parts committed):
``failed`` at once. Progress commits with every migration (and every committed part of
one), so a rerun knows what was applied and redoes nothing.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, InterfaceError

from shared.db import db_connect_args, sqlstate
from shared.db import is_transient as db_is_transient
from shared.errors import ConfigError, LockTimeoutError, PermanentError, TransientError
from shared.events import GraphVersions, LintFinding, MigrationResult, PostgresRevisions
from shared.migrate._alembic import AlembicRunner, RenderedMigration, RenderError
from shared.migrate._apply import StatementFailed, apply_rendered
from shared.migrate._graph import GraphMigrationError, GraphMigrator, GraphRun
from shared.migrate._lint import blocking, destructive_migrations, lint_migrations
from shared.migrate._lock import advisory_lock
from shared.migrate._record import FINAL, RecordedRun, RunRecorder, unresolved_partial

if TYPE_CHECKING:
    from shared.runtime import Deps
    from shared.settings import MigrateConfig, Settings

#: SQLSTATEs of lock contention: a later attempt may well succeed.
_CONTENTION = frozenset({"55P03", "40P01", "40001"})
#: SQLSTATEs meaning the session itself is gone: connection failure/does not exist,
#: admin/crash shutdown, cannot connect now. Not "08P01" (protocol violation: the same
#: statement fails the same way) nor class 53 (insufficient resources: the session is
#: fine, the error is recorded and retried like contention).
_SESSION_LOST = frozenset({"08000", "08003", "08006", "57P01", "57P02", "57P03"})
#: Insufficient resources (disk full, out of memory, too many locks): may pass.
_RESOURCES = "53"


class MigrationFailed(PermanentError):
    """The run ended ``failed``; recorded and published before this is raised."""


@dataclass(frozen=True)
class RunRequest:
    build_id: str
    commit_sha: str | None = None
    service: str | None = None
    trigger_event_id: str | None = None
    final_attempt: bool = False
    actor: str = "automation"
    build_created_at: datetime | None = None  # the build's createTime (docs/metrics.md)


@dataclass(frozen=True)
class RunOutcome:
    status: Literal["succeeded", "failed"]
    result: MigrationResult
    replayed: bool = False  # an earlier delivery of this build had already finished it


_engines: dict[str, Engine] = {}
_engines_lock = threading.Lock()


def migration_engine(settings: Settings) -> Engine:
    """Engine for migration sessions, separate from the delivery pool: a delivery that
    holds a pooled connection and waits for a second one from the same pool can starve
    it. Overflow is unbounded (one session per concurrent delivery, never a pool wait);
    one idle session is kept so a warm instance does not reconnect for every build.
    Session state is reset at the start of every run (:func:`start_session`).

    Autocommit: bookkeeping statements cost one round trip each (pg8000 would wrap each
    in BEGIN/COMMIT round trips of their own), and the rendered migration SQL brings its
    own BEGIN/COMMIT (``_apply``)."""
    url = settings.database_url_sync
    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            engine = create_engine(
                url,
                pool_size=1,
                max_overflow=-1,
                pool_pre_ping=True,
                pool_recycle=1800,
                connect_args=db_connect_args(settings),
                isolation_level="AUTOCOMMIT",  # set on connect: nothing to reset on return
            )
            _engines[url] = engine
        return engine


def start_session(conn: Connection, settings: Settings, name: str) -> bool:
    """Reset what a previous run's migrations may have left on this pooled session
    (``search_path``, ``SET ROLE``, ``session_replication_role``, temp tables, advisory
    locks: ``DISCARD ALL``), name it (lock holders show up by build) and set its
    timeouts; returns whether ``ops.actions`` exists. Two round trips."""
    conn.exec_driver_sql("DISCARD ALL")
    return bool(
        conn.execute(
            text(
                "SELECT set_config('application_name', :name, false),"
                " set_config('statement_timeout', :st, false),"
                " set_config('lock_timeout', :lt, false),"
                " to_regclass('ops.actions') IS NOT NULL AS recorded"
            ),
            {
                "name": name[:63],
                "st": str(int(settings.db_statement_timeout_ms)),
                "lt": str(int(settings.db_lock_timeout_ms)),
            },
        )
        .one()
        .recorded
    )


def run_migrations(deps: Deps, request: RunRequest) -> RunOutcome:
    """Bring PostgreSQL and the graph to head for ``request``'s build, exactly once."""
    return _Run(deps, request).execute()


def _describe(exc: BaseException) -> str:
    """A one-line error without SQLAlchemy's multi-line statement dump."""
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        args = getattr(exc.orig, "args", ())
        if args and isinstance(args[0], dict):
            info = args[0]
            return f"{info.get('C', '?')} {info.get('M', '')}".strip()
        return str(exc.orig).splitlines()[0]
    text_ = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text_}" if text_ else type(exc).__name__


def _session_lost(exc: BaseException, conn: Connection) -> bool:
    state = sqlstate(exc)
    if state is not None:
        return state in _SESSION_LOST or conn.invalidated
    return (
        isinstance(exc, InterfaceError)
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or conn.invalidated
        or isinstance(exc, ConnectionError | TimeoutError)
    )


@dataclass
class _Run:
    deps: Deps
    request: RunRequest
    started: float = field(default_factory=time.perf_counter)
    pg_from: str | None = None
    pg_to: str | None = None
    graph_from: int | None = None
    graph_to: int | None = None
    applied_pg: list[str] = field(default_factory=list)
    applied_graph: list[int] = field(default_factory=list)
    findings: list[LintFinding] = field(default_factory=list)
    breaking: bool = False
    # A migration split by autocommit_block() whose first parts committed but whose
    # revision was not recorded: {"revision", "migration", "committed"}. Never re-run.
    partial: dict[str, Any] | None = None
    error: str | None = None
    lock_wait_ms: float = 0.0
    attempts: int = 0
    final: bool = False  # retryable failures become the verdict on this attempt
    cfg: MigrateConfig = field(init=False)
    alembic: AlembicRunner = field(init=False)
    recorder: RunRecorder = field(init=False)

    def __post_init__(self) -> None:
        self.cfg = cfg = self.deps.settings.migrate
        self.alembic = AlembicRunner(cfg.alembic_ini, cfg.version_locations)
        self.recorder = RunRecorder(
            self.request.build_id,
            service=self.request.service,
            trigger_event_id=self.request.trigger_event_id,
            actor=self.request.actor,
            build_created_at=self.request.build_created_at,
        )

    # --- result and record -----------------------------------------------------------

    def result(self) -> MigrationResult:
        return MigrationResult(
            build_id=self.request.build_id,
            commit_sha=self.request.commit_sha,
            service=self.request.service,
            postgres=PostgresRevisions.model_validate({"from": self.pg_from, "to": self.pg_to}),
            graph=GraphVersions.model_validate({"from": self.graph_from, "to": self.graph_to}),
            breaking=self.breaking,
            lint_findings=self.findings,
            duration_ms=int((time.perf_counter() - self.started) * 1000),
            error=self.error,
        )

    def detail(self, result: MigrationResult | None = None) -> dict[str, Any]:
        detail = (result or self.result()).model_dump(mode="json", by_alias=True)
        detail["applied"] = {"postgres": self.applied_pg, "graph": self.applied_graph}
        detail["lock_wait_ms"] = round(self.lock_wait_ms, 1)
        detail["attempts"] = self.attempts
        if self.partial is not None:
            detail["partial"] = self.partial
        return detail

    def save(
        self,
        conn: Connection,
        status: str,
        result: MigrationResult | None = None,
        *,
        in_block: bool = False,
    ) -> None:
        self.recorder.save(conn, status, self.detail(result), self.deps.clock(), in_block=in_block)

    def finish(self, conn: Connection, status: Literal["succeeded", "failed"]) -> RunOutcome:
        """Record the final state; the returned result is exactly what was recorded."""
        result = self.result()
        self.save(conn, status, result)
        return RunOutcome(status, result)

    def fail(self, conn: Connection, message: str) -> RunOutcome:
        self.error = message
        return self.finish(conn, "failed")

    def resume(self, prior: RecordedRun) -> None:
        """Continue a row an earlier delivery of this build left ``started``."""
        detail = prior.detail
        applied = detail.get("applied") or {}
        self.applied_pg = list(applied.get("postgres") or [])
        self.applied_graph = list(applied.get("graph") or [])
        if self.applied_pg:
            self.pg_from = (detail.get("postgres") or {}).get("from")
        if self.applied_graph:
            self.graph_from = (detail.get("graph") or {}).get("from")
        self.findings = [LintFinding.model_validate(f) for f in detail.get("lint_findings") or []]
        self.breaking = bool(detail.get("breaking"))
        self.partial = detail.get("partial")

    @staticmethod
    def replay(prior: RecordedRun) -> RunOutcome:
        """An earlier delivery finished this build: hand back exactly what it recorded."""
        status: Literal["succeeded", "failed"] = (
            "succeeded" if prior.status == "succeeded" else "failed"
        )
        return RunOutcome(status, MigrationResult.model_validate(prior.detail), replayed=True)

    def retry(self, conn: Connection, message: str, exc: BaseException) -> RunOutcome:
        """A retryable failure: on the final attempt it is the verdict, else record + 503.

        Pub/Sub's own attempt count does not survive functions-framework's conversion of a
        push body, so the run counts its attempts in its row as well.
        """
        if self.final:
            return self.fail(conn, f"{message} (final delivery attempt {self.attempts})")
        self.error = message
        self.save(conn, "started")
        raise TransientError(message) from exc

    # --- the run ---------------------------------------------------------------------

    def execute(self) -> RunOutcome:
        engine = migration_engine(self.deps.settings)
        try:
            with engine.connect() as conn:
                recorded = start_session(
                    conn, self.deps.settings, f"sightops-migrate {self.request.build_id}"
                )
                self.recorder.table_exists(recorded)
                prior = self.recorder.load(conn)
                if prior is not None and prior.status in FINAL:
                    return self.replay(prior)  # a redelivery: no lock, no work
                self.attempts = int((prior.detail if prior else {}).get("attempts") or 0) + 1
                self.final = (
                    self.request.final_attempt or self.attempts >= self.cfg.max_delivery_attempts
                )
                try:
                    with advisory_lock(
                        conn,
                        self.cfg.lock_name,
                        wait_s=self.cfg.lock_wait_s,
                        poll_s=self.cfg.lock_poll_s,
                    ) as waited_ms:
                        self.lock_wait_ms = waited_ms
                        self.deps.metrics.timing("lock_wait_ms", waited_ms, consumer="migrate")
                        return self.locked(conn)
                except LockTimeoutError as exc:
                    if prior is not None:
                        self.resume(prior)
                    return self.retry(conn, str(exc), exc)
        except TransientError:
            raise
        except Exception as exc:
            if db_is_transient(exc):
                raise TransientError(f"database unavailable: {_describe(exc)}") from exc
            raise

    def locked(self, conn: Connection) -> RunOutcome:
        prior = self.recorder.load(conn)  # again, now that no other run can change it
        if prior is not None and prior.status in FINAL:
            return self.replay(prior)
        if prior is not None:
            self.resume(prior)

        try:
            script = self.alembic.script()
            self.alembic.head(script)
            current = self.alembic.current(conn)
            pending = self.alembic.pending(script, current)
        except ConfigError as exc:  # several heads: a merge revision is missing
            return self.fail(conn, str(exc))
        except Exception as exc:
            if db_is_transient(exc) or _session_lost(exc, conn):
                raise
            return self.fail(conn, f"cannot tell where the database stands: {_describe(exc)}")
        if not self.applied_pg:
            self.pg_from = current
        self.pg_to = current
        if self.partial is not None and not (
            pending and self.partial.get("revision") == pending[0].revision
        ):
            self.partial = None  # finished by hand and stamped since: carry on
        if pending and self.recorder.table_known():
            left = unresolved_partial(conn, pending[0].revision)
            if left is not None:
                return self.fail(conn, _partial_message(left, again=True))
        if pending:
            try:
                rendered = self.alembic.render(script, current)
                # Lint the build's whole set: a table an earlier migration of this build
                # created is new to the later ones, on a rerun too.
                linted = rendered
                if self.applied_pg and self.pg_from != current:
                    linted = self.alembic.render(script, self.pg_from)
            except RenderError as exc:
                where = f"migration {exc.migration}" if exc.migration else "the pending migrations"
                return self.fail(
                    conn,
                    f"could not render {where} offline, nothing applied: {_describe(exc.error)}",
                )
            if [m.revision for m in rendered] != [p.revision for p in pending]:
                return self.fail(
                    conn,
                    "the offline rendering does not match the pending revisions "
                    f"{[p.revision for p in pending]}: {[m.revision for m in rendered]}",
                )
            labels = {m.label for m in rendered}
            found = [f for f in lint_migrations(linted) if f.migration in labels]
            known = {(f.migration, f.rule, f.statement) for f in self.findings}
            self.findings += [f for f in found if (f.migration, f.rule, f.statement) not in known]
            blocked = blocking(found)
            if blocked:
                return self.fail(conn, _blocked_message(blocked))
            self.save(conn, "started")  # durable before the first migration commits

            failed = self.apply(conn, rendered)
            if failed is not None:
                return failed

        if self.cfg.graph_enabled:
            failed = self.graph(conn)
            if failed is not None:
                return failed
        self.error = None
        return self.finish(conn, "succeeded")

    def apply(self, conn: Connection, rendered: list[RenderedMigration]) -> RunOutcome | None:
        """Apply the linted SQL; each migration commits with its progress row."""
        destructive = destructive_migrations(self.findings)
        undo: list[tuple[list[str], bool, str | None, dict[str, Any] | None]] = []

        def before(migration: RenderedMigration) -> None:
            conn.execute(
                text(
                    "SELECT set_config('lock_timeout', :lt, false),"
                    " set_config('statement_timeout', :st, false)"
                ),
                {
                    "lt": str(int(self.cfg.lock_timeout_ms)),
                    "st": str(int(self.cfg.statement_timeout_ms)),
                },
            )

        def on_part(migration: RenderedMigration, committed: int) -> None:
            # A destructive statement may be in what commits now: breaking from here on.
            self.breaking = self.breaking or migration.label in destructive
            self.partial = {
                "revision": migration.revision,
                "migration": migration.label,
                "committed": committed,
            }
            self.save(conn, "started", in_block=True)  # (or right after an autocommit step)

        def on_applied(migration: RenderedMigration) -> None:
            undo[:] = [(list(self.applied_pg), self.breaking, self.pg_to, self.partial)]
            self.pg_to = migration.revision
            self.applied_pg.append(migration.revision)
            self.breaking = self.breaking or migration.label in destructive
            self.partial = None
            self.save(conn, "started", in_block=True)

        try:
            apply_rendered(conn, rendered, before=before, on_part=on_part, on_applied=on_applied)
        except StatementFailed as exc:
            if undo and exc.migration.revision in self.applied_pg:  # its COMMIT failed
                self.applied_pg, self.breaking, self.pg_to, self.partial = undo[0]
            return self.migration_failed(conn, exc)
        return None

    def migration_failed(self, conn: Connection, failure: StatementFailed) -> RunOutcome:
        """The failing statement's transaction rolled back; report where the database
        stands now, and which statement failed."""
        label, exc = failure.migration.label, failure.error
        statement = " ".join(failure.statement.split())
        if len(statement) > 200:
            statement = statement[:197] + "..."
        if failure.committed:
            what = _partial_message(
                {
                    "migration": label,
                    "revision": failure.migration.revision,
                    "committed": failure.committed,
                },
                again=False,
            )
        elif failure.autocommit:
            what = f"migration {label} failed in a step outside a transaction (autocommit)"
        else:
            what = f"migration {label} failed and was rolled back"
        message = f"{what}: {_describe(exc)} [statement: {statement}]"
        if _session_lost(exc, conn):
            # Nothing more can be recorded on this session; its row shows the progress
            # (and a partly applied migration, which a rerun then refuses to repeat).
            raise TransientError(f"database unavailable while applying {label}") from exc
        self.pg_to = self.alembic.current(conn)
        if failure.committed:
            return self.fail(conn, message)  # never retried: it would repeat those parts
        state = sqlstate(exc) or ""
        if state in _CONTENTION:
            return self.retry(conn, message + " (lock contention)", exc)
        if state.startswith(_RESOURCES):
            return self.retry(conn, message + " (insufficient resources)", exc)
        return self.fail(conn, message)

    def graph(self, conn: Connection) -> RunOutcome | None:
        migrator = GraphMigrator(
            self.deps.neo4j,
            self.cfg.graph_migrations_dir,
            record_label=self.cfg.graph_record_label,
            lock_label=self.cfg.graph_lock_label,
            lock_ttl_s=self.cfg.graph_lock_ttl_s,
            lock_wait_s=self.cfg.graph_lock_wait_s,
        )
        owner = f"{socket.gethostname()}:{os.getpid()}:{self.request.build_id}"
        resumed = bool(self.applied_graph)
        previously = list(self.applied_graph)

        def progress(run: GraphRun) -> None:
            if not resumed:
                self.graph_from = run.from_version
            self.graph_to = run.to_version
            self.applied_graph = previously + run.applied
            self.save(conn, "started")

        try:
            run = migrator.run(owner, on_applied=progress)
        except (TransientError, LockTimeoutError) as exc:
            return self.retry(conn, self._graph_unavailable(exc), exc)
        except GraphMigrationError as exc:
            return self.fail(conn, f"{exc}{self._postgres_note()}")
        except Exception as exc:
            return self.fail(
                conn, f"graph migrations failed: {_describe(exc)}{self._postgres_note()}"
            )
        if not resumed:
            self.graph_from = run.from_version
        self.graph_to = run.to_version
        return None

    def _postgres_note(self) -> str:
        if self.pg_from == self.pg_to:
            return f" (PostgreSQL unchanged at {self.pg_to})"
        return f" (PostgreSQL was migrated {self.pg_from} -> {self.pg_to} and stays there)"

    def _graph_unavailable(self, exc: Exception) -> str:
        what = "Neo4j unavailable" if isinstance(exc, TransientError) else "graph lock busy"
        if self.pg_from != self.pg_to:
            return (
                f"{what} after PostgreSQL was migrated {self.pg_from} -> {self.pg_to} "
                f"(committed); graph migrations not applied; a rerun applies only the "
                f"graph part: {exc}"
            )
        return f"{what}; graph migrations not applied: {exc}"


def _partial_message(partial: dict[str, Any], *, again: bool) -> str:
    """What a partly applied migration means, for the run's error and the runbook."""
    label, committed = partial.get("migration"), partial.get("committed")
    if again:
        build = partial.get("build")
        head = f"migration {label} was partly applied" + (f" by build {build}" if build else "")
    else:
        head = f"migration {label} failed after part of it had committed"
    return (
        f"{head} ({committed} part(s) committed: transaction blocks or autocommit steps "
        "such as CREATE INDEX CONCURRENTLY); its revision was not recorded and migrate will "
        "not run it again, which would repeat them. Finish it by hand and `alembic stamp` "
        "its revision, or undo those parts and run `sightops migrations resolve-partial "
        f"{partial.get('revision') or label}`; then rebuild "
        "(docs/runbooks/migration-failed.md)"
    )


def _blocked_message(blocked: list[LintFinding]) -> str:
    parts = [f"{f.migration}: {f.rule} ({f.statement[:120]})" for f in blocked[:5]]
    more = f" and {len(blocked) - 5} more" if len(blocked) > 5 else ""
    return (
        "blocked by migration lint, nothing applied: "
        + "; ".join(parts)
        + more
        + ". Fix the migration, or allow the rule in it with # sightops: allow=<rule> "
        'reason="..." (docs/runbooks/migration-blocked-by-lint.md)'
    )
