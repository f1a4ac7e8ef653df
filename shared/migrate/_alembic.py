"""Alembic, driven in-process: current/head/pending revisions and their offline SQL.

The migrate function renders the pending revisions once (``upgrade <current>:head --sql``)
and applies exactly that SQL (``_apply``): Alembic's command API runs only offline here.

Alembic's command API is not thread-safe: ``command.upgrade`` installs its environment in
module globals (the ``alembic.context`` and ``alembic.op`` proxies) while ``env.py`` and the
migration scripts run. Every call that runs ``env.py`` therefore holds :data:`ALEMBIC_LOCK`
(in-process); the PostgreSQL advisory lock serialises processes. The lock is taken with a
bounded wait, and is always the innermost lock (nothing else is acquired while holding it),
so it cannot take part in a deadlock.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import Script, ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection

from shared.errors import ConfigError, LockTimeoutError
from shared.migrate._sql import Statement, parse_statements

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_INI = ROOT / "alembic.ini"

#: Serialises every use of Alembic's command API in this process (see module docstring).
ALEMBIC_LOCK = threading.Lock()
ALEMBIC_LOCK_WAIT_S = 300.0

# Offline rendering needs a dialect, never a server.
_OFFLINE_URL = "postgresql+pg8000://offline@localhost/render"
_MARKER = re.compile(r"^-- Running upgrade (?P<from>.*?) -> (?P<to>\S+)\s*$", re.MULTILINE)


_SCRIPTS: dict[tuple[str, ...], tuple[tuple[tuple[str, int, int], ...], ScriptDirectory]] = {}
_SCRIPTS_LOCK = threading.Lock()


def _fingerprint(dirs: Sequence[str]) -> tuple[tuple[str, int, int], ...]:
    """Every revision file's path, size and mtime: what a reload would notice."""
    found: list[tuple[str, int, int]] = []
    for directory in dirs:
        with suppress(FileNotFoundError), os.scandir(directory) as entries:
            for entry in entries:
                if entry.name.endswith(".py") and entry.is_file():
                    stat = entry.stat()
                    found.append((entry.path, stat.st_size, stat.st_mtime_ns))
    return tuple(sorted(found))


@contextmanager
def alembic_api(wait_s: float = ALEMBIC_LOCK_WAIT_S) -> Iterator[None]:
    """Hold the in-process Alembic lock, waiting at most ``wait_s``."""
    if not ALEMBIC_LOCK.acquire(timeout=wait_s):
        raise LockTimeoutError(f"Alembic busy in this process for more than {wait_s:g}s")
    try:
        yield
    finally:
        ALEMBIC_LOCK.release()


class RenderError(Exception):
    """A migration raised while rendered offline (``migration``: its label, when known)."""

    def __init__(self, migration: str | None, error: Exception) -> None:
        super().__init__(f"{migration or 'alembic'}: {error}")
        self.migration = migration
        self.error = error


@dataclass(frozen=True)
class RenderedMigration:
    """One pending revision: its offline SQL and its source (for allow annotations).

    The first revision's SQL also carries what Alembic renders before it (``BEGIN``, and
    ``CREATE TABLE alembic_version`` on an empty database): it runs in the same transaction.
    """

    revision: str
    label: str
    source: str
    sql: str

    @cached_property
    def statements(self) -> tuple[Statement, ...]:
        """Parsed once, for the linter and the applier alike; raises ``ParseError``."""
        return parse_statements(self.sql)


def migration_label(script: Script) -> str:
    """``0002_add_foo`` from ``2026_01_31_1405-0002_add_foo.py`` (what findings name)."""
    stem = Path(script.path).stem
    return stem.split("-", 1)[1] if "-" in stem else stem


class AlembicRunner:
    """The project's Alembic environment (``alembic/env.py``) with configurable versions."""

    def __init__(
        self, ini: Path | None = None, version_locations: Sequence[Path] | None = None
    ) -> None:
        self.ini = ini or DEFAULT_INI
        self.version_locations = list(version_locations) if version_locations else None

    def config(self, connection: Connection | None = None) -> Config:
        """A fresh Config: Alembic keeps per-command state on it."""
        config = Config(str(self.ini), output_buffer=io.StringIO())
        if self.version_locations:
            config.set_main_option(
                "version_locations", os.pathsep.join(str(p) for p in self.version_locations)
            )
        # Keep the embedding process's logging; alembic.ini's is for the command line.
        config.attributes["configure_logger"] = False
        if connection is not None:
            config.attributes["connection"] = connection
        return config

    def script(self) -> ScriptDirectory:
        """The revision files as they are now.

        Loading them imports (compiles) every revision module; a warm instance reuses
        the previous run's load while no file in the version directories changed (name,
        size, mtime), which is most of what a run costs when nothing is pending."""
        script = ScriptDirectory.from_config(self.config())
        dirs = tuple(script.version_locations or [script.versions])
        fingerprint = _fingerprint(dirs)
        with _SCRIPTS_LOCK:
            cached = _SCRIPTS.get(dirs)
            if cached is not None and cached[0] == fingerprint:
                return cached[1]
            _SCRIPTS[dirs] = (fingerprint, script)
        return script

    @staticmethod
    def head(script: ScriptDirectory) -> str | None:
        try:
            return script.get_current_head()
        except CommandError as exc:  # several heads: a merge revision is missing
            raise ConfigError(f"alembic: {exc}") from exc

    @staticmethod
    def current(conn: Connection) -> str | None:
        """The database's revision (None for an empty database); leaves no transaction."""
        try:
            return MigrationContext.configure(conn).get_current_revision()
        finally:
            conn.rollback()

    @staticmethod
    def pending(script: ScriptDirectory, current: str | None) -> list[Script]:
        """Revisions from ``current`` (exclusive) to head, in the order they apply."""
        return list(reversed(list(script.iterate_revisions("head", current))))

    def render(self, script: ScriptDirectory, current: str | None) -> list[RenderedMigration]:
        """Offline SQL of every revision after ``current``, one entry per revision."""
        config = self.config()
        config.set_main_option("sqlalchemy.url", _OFFLINE_URL)
        target = f"{current}:head" if current else "head"
        assert isinstance(config.output_buffer, io.StringIO)
        try:
            with alembic_api():
                command.upgrade(config, target, sql=True)
        except LockTimeoutError:
            raise
        except Exception as exc:
            markers = list(_MARKER.finditer(config.output_buffer.getvalue()))
            found = script.get_revision(markers[-1].group("to")) if markers else None
            raise RenderError(migration_label(found) if found else None, exc) from exc
        return split_rendered(config.output_buffer.getvalue(), script)


def split_rendered(sql: str, script: ScriptDirectory) -> list[RenderedMigration]:
    """Cut ``upgrade --sql`` output at its ``-- Running upgrade a -> b`` markers; what
    precedes the first marker belongs to the first revision."""
    markers = list(_MARKER.finditer(sql))
    out: list[RenderedMigration] = []
    for i, marker in enumerate(markers):
        end = markers[i + 1].start() if i + 1 < len(markers) else len(sql)
        preamble = sql[: marker.start()] if i == 0 else ""
        revision = marker.group("to")
        found = script.get_revision(revision)
        if found is None:  # pragma: no cover - alembic rendered what it knows
            raise ConfigError(f"alembic rendered unknown revision {revision!r}")
        out.append(
            RenderedMigration(
                revision=revision,
                label=migration_label(found),
                source=Path(found.path).read_text(encoding="utf-8"),
                sql=preamble + sql[marker.end() : end],
            )
        )
    return out
