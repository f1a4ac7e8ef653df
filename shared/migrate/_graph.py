"""Versioned Cypher schema migrations for Neo4j (graph/README.md), applied once each.

- Files ``V<version>__<slug>.cypher``; statements end with ``;`` at the end of a line and
  whole-line ``//`` comments are dropped. Each statement runs in its own transaction
  (Neo4j refuses schema commands and writes in one transaction); after a
  file, a ``(:SchemaMigration {version, name, checksum, applied_at, applied_by})`` node
  records it.
- A recorded file whose SHA-256 no longer matches, or which is gone, stops the runner
  before it applies anything: an edited migration must never be "half re-applied".
- A lock node ``(:SchemaMigrationLock {name})`` with an owner and an expiry keeps two
  runners apart, even when they do not share the PostgreSQL lock (the CLI, another
  database). A lock past its expiry belongs to a crashed runner and is taken over; a live
  runner renews it after every file.

Labels are configurable: Neo4j Community has a single database, so tests run side by side
with their own labels.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from shared.errors import LockTimeoutError, PermanentError, TransientError
from shared.graph import raise_if_transient

if TYPE_CHECKING:
    from neo4j import Driver, ManagedTransaction

logger = logging.getLogger("sightops.migrate.graph")

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DIR = ROOT / "graph" / "migrations"
_FILE = re.compile(r"^V(?P<version>\d+)__(?P<slug>\w+)\.cypher$")
_LABEL = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class GraphMigrationError(PermanentError):
    """A graph migration cannot be applied: edited or missing file, or a failing statement."""


class GraphLockLost(TransientError):
    """Our lock expired and another runner took it over; the rerun continues."""


@dataclass(frozen=True)
class GraphFile:
    version: int
    name: str
    path: Path
    checksum: str
    statements: tuple[str, ...]


@dataclass
class GraphRun:
    """What one run found and did."""

    from_version: int | None
    to_version: int | None
    applied: list[int] = field(default_factory=list)
    took_over_from: str | None = None


@dataclass(frozen=True)
class GraphStatus:
    current: int | None
    latest: int | None
    pending: list[int]
    problems: list[str]


def split_statements(text: str) -> list[str]:
    """Statements of a file: ``;`` at end of line ends one; ``//`` comment lines dropped."""
    statements: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip().startswith("//"):
            continue
        current.append(line)
        if line.rstrip().endswith(";"):
            statement = "\n".join(current).strip().removesuffix(";").strip()
            if statement:
                statements.append(statement)
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return statements


def load_files(directory: Path) -> list[GraphFile]:
    """The migration files in version order; a malformed name or a duplicate is an error."""
    files: dict[int, GraphFile] = {}
    for path in sorted(directory.glob("*.cypher")):
        match = _FILE.match(path.name)
        if match is None:
            raise GraphMigrationError(
                f"graph migration {path.name}: name must be V<version>__<slug>.cypher"
            )
        version = int(match.group("version"))
        if version in files:
            raise GraphMigrationError(
                f"graph migrations {files[version].name} and {path.name} share version {version}"
            )
        raw = path.read_bytes()
        files[version] = GraphFile(
            version=version,
            name=path.name,
            path=path,
            checksum="sha256:" + hashlib.sha256(raw).hexdigest(),
            statements=tuple(split_statements(raw.decode("utf-8"))),
        )
    return [files[v] for v in sorted(files)]


def _snake(label: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", label).lower()


class GraphMigrator:
    """Applies :func:`load_files` to the graph under the graph lock."""

    def __init__(
        self,
        driver: Driver,
        directory: Path | None = None,
        *,
        record_label: str = "SchemaMigration",
        lock_label: str = "SchemaMigrationLock",
        lock_ttl_s: float = 600.0,
        lock_wait_s: float = 30.0,
        lock_poll_s: float = 0.2,
        lock_name: str = "graph",
    ) -> None:
        for label in (record_label, lock_label):
            if not _LABEL.match(label):
                raise ValueError(f"invalid Neo4j label {label!r}")
        self.driver = driver
        self.directory = directory or DEFAULT_DIR
        self.record_label = record_label
        self.lock_label = lock_label
        self.lock_ttl_ms = int(lock_ttl_s * 1000)
        self.lock_wait_s = lock_wait_s
        self.lock_poll_s = lock_poll_s
        self.lock_name = lock_name

    # --- queries ---------------------------------------------------------------------

    def _run(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """One query in a managed write transaction: the driver retries Neo4j's transient
        errors (deadlocks between concurrent lock MERGEs, leader switches) with backoff;
        an outage that outlasts the retries becomes :class:`TransientError`."""

        def work(tx: ManagedTransaction) -> list[dict[str, Any]]:
            return [record.data() for record in tx.run(query, params)]

        try:
            # No server notifications: "label does not exist" before the first run is expected.
            with self.driver.session(notifications_min_severity="OFF") as session:
                return session.execute_write(work)
        except TransientError:
            raise
        except Exception as exc:
            raise_if_transient(exc)
            raise

    def ensure_bookkeeping(self) -> None:
        """Uniqueness on the record version and the lock name: MERGE on them is then safe."""
        for label, prop in ((self.record_label, "version"), (self.lock_label, "name")):
            self._run(
                f"CREATE CONSTRAINT {_snake(label)}_{prop} IF NOT EXISTS "
                f"FOR (n:`{label}`) REQUIRE n.{prop} IS UNIQUE"
            )

    def applied(self) -> dict[int, Mapping[str, Any]]:
        rows = self._run(
            f"MATCH (m:`{self.record_label}`) "
            "RETURN m.version AS version, m.name AS name, m.checksum AS checksum"
        )
        return {int(row["version"]): row for row in rows}

    # --- checks ----------------------------------------------------------------------

    @staticmethod
    def problems(files: list[GraphFile], applied: Mapping[int, Mapping[str, Any]]) -> list[str]:
        """Edited or missing applied files, in words an operator can act on."""
        by_version = {f.version: f for f in files}
        found: list[str] = []
        for version, record in sorted(applied.items()):
            file = by_version.get(version)
            if file is None:
                found.append(
                    f"V{version:04d} ({record.get('name')}) is recorded as applied but its file "
                    "is missing from the migrations directory"
                )
            elif file.checksum != record.get("checksum"):
                found.append(
                    f"{file.name} was edited after it was applied (recorded "
                    f"{record.get('checksum')}, file now {file.checksum}); restore the file "
                    "and put the change in a new migration"
                )
        return found

    def status(self) -> GraphStatus:
        files = load_files(self.directory)
        applied = self.applied()
        return GraphStatus(
            current=max(applied) if applied else None,
            latest=files[-1].version if files else None,
            pending=[f.version for f in files if f.version not in applied],
            problems=self.problems(files, applied),
        )

    # --- lock ------------------------------------------------------------------------

    def _try_lock(self, owner: str) -> tuple[bool, str | None]:
        # SET first: it takes the node's write lock, so the owner/expiry read after it is
        # the committed state, not what a concurrent runner is about to overwrite.
        rows = self._run(
            f"MERGE (l:`{self.lock_label}` {{name: $name}}) "
            "SET l.checked_at = datetime() "
            "WITH l, l.owner AS previous, "
            "  (l.owner IS NULL OR l.owner = $owner OR l.expires_at < datetime()) AS free "
            "SET l.owner = CASE WHEN free THEN $owner ELSE l.owner END, "
            "    l.acquired_at = CASE WHEN free THEN datetime() ELSE l.acquired_at END, "
            "    l.expires_at = CASE WHEN free "
            "      THEN datetime() + duration({milliseconds: $ttl}) ELSE l.expires_at END "
            "RETURN free, previous",
            name=self.lock_name,
            owner=owner,
            ttl=self.lock_ttl_ms,
        )
        row = rows[0]
        previous = row["previous"]
        return bool(row["free"]), previous if previous not in (None, owner) else None

    @contextmanager
    def lock(self, owner: str) -> Iterator[str | None]:
        """Hold the graph lock; yields the crashed owner taken over from, if any."""
        deadline = time.monotonic() + self.lock_wait_s
        while True:
            acquired, previous = self._try_lock(owner)
            if acquired:
                break
            if time.monotonic() >= deadline:
                raise LockTimeoutError(
                    f"graph migration lock held by {previous or 'another runner'} for more "
                    f"than {self.lock_wait_s:g}s"
                )
            time.sleep(self.lock_poll_s)
        if previous:
            logger.warning("took over the graph migration lock from %s (expired)", previous)
        try:
            yield previous
        finally:
            try:
                self._run(
                    f"MATCH (l:`{self.lock_label}` {{name: $name}}) WHERE l.owner = $owner "
                    "REMOVE l.owner, l.expires_at SET l.released_at = datetime()",
                    name=self.lock_name,
                    owner=owner,
                )
            except Exception as exc:  # the expiry frees it; the run's own error matters more
                logger.warning("graph lock not released (%s); it expires by itself", exc)

    def _renew(self, owner: str) -> None:
        rows = self._run(
            f"MATCH (l:`{self.lock_label}` {{name: $name}}) WHERE l.owner = $owner "
            "SET l.expires_at = datetime() + duration({milliseconds: $ttl}) RETURN count(l) AS n",
            name=self.lock_name,
            owner=owner,
            ttl=self.lock_ttl_ms,
        )
        if not rows or rows[0]["n"] != 1:
            raise GraphLockLost("graph migration lock expired and was taken over mid-run")

    # --- run -------------------------------------------------------------------------

    def run(self, owner: str, on_applied: Callable[[GraphRun], None] | None = None) -> GraphRun:
        """Verify, then apply every pending file in order; returns from/to versions."""
        files = load_files(self.directory)
        self.ensure_bookkeeping()
        with self.lock(owner) as took_over:
            applied = self.applied()
            problems = self.problems(files, applied)
            if problems:
                raise GraphMigrationError("graph migrations refused: " + "; ".join(problems))
            current = max(applied) if applied else None
            result = GraphRun(current, current, took_over_from=took_over)
            for file in files:
                if file.version in applied:
                    continue
                self._apply(file, owner)
                result.applied.append(file.version)
                result.to_version = max(file.version, result.to_version or 0)
                if on_applied is not None:
                    on_applied(result)
                self._renew(owner)
            return result

    def _apply(self, file: GraphFile, owner: str) -> None:
        started = time.perf_counter()
        for index, statement in enumerate(file.statements, start=1):
            try:
                self._run(statement)
            except TransientError:
                raise
            except Exception as exc:
                message = getattr(exc, "message", None) or str(exc)
                raise GraphMigrationError(
                    f"{file.name} statement {index} failed: {message}"
                ) from exc
        self._run(
            f"MERGE (m:`{self.record_label}` {{version: $version}}) "
            "ON CREATE SET m.name = $name, m.checksum = $checksum, m.applied_at = datetime(), "
            "m.applied_by = $owner, m.duration_ms = $ms",
            version=file.version,
            name=file.name,
            checksum=file.checksum,
            owner=owner,
            ms=round((time.perf_counter() - started) * 1000, 1),
        )
        logger.info("graph migration %s applied", file.name)
