"""PostgreSQL: a logical export of the Sight and ``ops`` schemas by streaming COPY, and
its restore (docs/backups.md).

Export: one ``REPEATABLE READ READ ONLY`` transaction (every table from one snapshot),
``COPY (SELECT <columns> FROM <table>) TO STDOUT`` per table in PostgreSQL's text
format, streamed by pg8000 row by row through the checksum into gzip into the blob
store: memory stays bounded by the upload chunk, whatever the table's size.

Restore: into an empty database (Alembic creates the schema at the manifest's revision)
or a non-empty one with ``force`` (the tables are truncated), all tables in one
transaction, parents first; then every table is exported again and its count and
checksum compared with the manifest.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, TYPE_CHECKING, Any

from shared.backup._check import READ_ERRORS, ObjectCheck, compare
from shared.backup._digest import LineDigest
from shared.backup._manifest import (
    Column,
    Manifest,
    ObjectEntry,
    Period,
    TableEntry,
    backup_prefix,
    new_backup_id,
)
from shared.backup._report import Finding, RestoreReport
from shared.backup._store import BlobStore, CountingWriter
from shared.errors import PermanentError

if TYPE_CHECKING:
    from pg8000.dbapi import Connection as PgConnection

    from shared.migrate._alembic import AlembicRunner

#: Session settings that make COPY's text output one exact spelling of each value:
#: timestamptz in UTC with microseconds, ISO dates, floats (and pgvector's elements)
#: in their shortest exact form, bytea in hex. The restore loads under the same ones.
SESSION = (
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO, YMD"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "1"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
)
DATA_FORMAT = (
    "PostgreSQL COPY text, UTF8, TimeZone=UTC, DateStyle=ISO, extra_float_digits=1,"
    " bytea_output=hex; one object per table"
)
DEFAULT_SCHEMAS = ("public", "ops")
#: Never exported: Alembic's bookkeeping (the manifest records the revision instead).
EXCLUDED = frozenset({("public", "alembic_version")})
CONTENT_TYPE = "application/gzip"
#: What the export hands to gzip at once (at most one row more): bounded, and large enough
#: that compression does not pay a call per row.
_BLOCK = 256 * 1024
SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


class RestoreRefused(PermanentError):
    """The target is not fit for this restore (not empty, another schema revision)."""


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class PgTarget:
    """A database to connect to with pg8000: what ``shared.db.pg8000_target`` returns."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def described(self) -> str:
        """host:port/database, never the credentials."""
        from sqlalchemy.engine import make_url

        url = make_url(self.url)
        return f"postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database or ''}"

    def with_database(self, database: str) -> PgTarget:
        from sqlalchemy.engine import make_url

        url = make_url(self.url).set(database=database).render_as_string(hide_password=False)
        return PgTarget(url, self.connect_args)


@contextmanager
def connect(target: PgTarget, *, autocommit: bool = False) -> Iterator[PgConnection]:
    """A raw pg8000 DB-API connection (COPY needs the driver's ``stream`` argument),
    closed on the way out; never one of a pool."""
    import pg8000.dbapi
    from sqlalchemy.engine import make_url

    url = make_url(target.url)
    conn = pg8000.dbapi.connect(
        user=url.username or "postgres",
        password=url.password,
        host=url.host or "localhost",
        port=url.port or 5432,
        database=url.database,
        application_name="sight-ops backup",
        **target.connect_args,
    )
    try:
        conn.autocommit = autocommit
        yield conn
    finally:
        with suppress(Exception):  # a connection broken mid-COPY cannot say goodbye
            conn.close()


def _set_session(cursor: Any, statement_timeout_ms: int, local: bool) -> None:
    scope = "SET LOCAL" if local else "SET"
    for name, value in SESSION:
        cursor.execute(f"{scope} {name} = {quote_literal(value)}")
    cursor.execute(f"{scope} statement_timeout = {int(statement_timeout_ms)}")
    cursor.execute(f"{scope} lock_timeout = 30000")


# --- catalog ------------------------------------------------------------------------


@dataclass(frozen=True)
class Table:
    schema: str
    name: str
    columns: tuple[Column, ...]

    @property
    def qualified(self) -> str:
        return f"{quote_ident(self.schema)}.{quote_ident(self.name)}"

    @property
    def column_list(self) -> str:
        return ", ".join(quote_ident(c.name) for c in self.columns)

    def copy_out(self) -> str:
        return f"COPY (SELECT {self.column_list} FROM {self.qualified}) TO STDOUT"

    def copy_in(self) -> str:
        return f"COPY {self.qualified} ({self.column_list}) FROM STDIN"


def list_tables(cursor: Any, schemas: Sequence[str]) -> list[Table]:
    """Ordinary and partitioned tables of ``schemas`` with their stored columns (no
    generated ones), parents before the tables whose foreign keys point at them."""
    cursor.execute(
        "SELECT n.nspname, c.relname, c.oid FROM pg_class c"
        " JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition"
        " AND n.nspname = ANY(%s) ORDER BY n.nspname, c.relname",
        (list(schemas),),
    )
    found = [(s, t, oid) for s, t, oid in cursor.fetchall() if (s, t) not in EXCLUDED]
    oids = {oid: (s, t) for s, t, oid in found}
    cursor.execute(
        "SELECT attrelid, attname, format_type(atttypid, atttypmod) FROM pg_attribute"
        " WHERE attrelid = ANY(%s) AND attnum > 0 AND NOT attisdropped AND attgenerated = ''"
        " ORDER BY attrelid, attnum",
        (list(oids),),
    )
    columns: dict[int, list[Column]] = {oid: [] for oid in oids}
    for oid, name, type_ in cursor.fetchall():
        columns[oid].append(Column(name=name, type=type_))
    cursor.execute(
        "SELECT conrelid, confrelid FROM pg_constraint"
        " WHERE contype = 'f' AND conrelid = ANY(%s) AND confrelid = ANY(%s)",
        (list(oids), list(oids)),
    )
    parents: dict[int, set[int]] = {oid: set() for oid in oids}
    for child, parent in cursor.fetchall():
        if child != parent:
            parents[child].add(parent)
    ordered: list[int] = []
    placed: set[int] = set()
    pending = sorted(oids, key=lambda o: oids[o])
    while pending:
        ready = [o for o in pending if parents[o] <= placed]
        if not ready:  # a cycle of foreign keys: load the rest in name order
            ready = pending
        for oid in ready:
            ordered.append(oid)
            placed.add(oid)
        pending = [o for o in pending if o not in placed]
    return [Table(*oids[oid], tuple(columns[oid])) for oid in ordered]


def _scalar(cursor: Any, sql: str) -> Any:
    cursor.execute(sql)
    row = cursor.fetchone()
    return row[0] if row else None


def alembic_revision(cursor: Any) -> str | None:
    if not _scalar(cursor, "SELECT to_regclass('public.alembic_version') IS NOT NULL"):
        return None
    value = _scalar(cursor, "SELECT version_num FROM public.alembic_version")
    return str(value) if value is not None else None


# --- export -------------------------------------------------------------------------


class _CopySink:
    """What pg8000 writes COPY OUT data to (one row a call): digest each row, pass the
    bytes on in blocks of ``_BLOCK`` (zlib compresses a block far faster than a row at a
    time); :meth:`close` passes on the rest."""

    def __init__(self, out: IO[bytes] | gzip.GzipFile | None) -> None:
        self._write = out.write if out is not None else None
        self._pending: list[bytes] = []
        self._size = 0
        self.lines = LineDigest()

    def write(self, data: bytes) -> int:
        if self._write is not None:
            self._pending.append(data)
            self._size += len(data)
            if self._size >= _BLOCK:
                self.close()
        self.lines.feed(data)
        return len(data)

    def close(self) -> None:
        if self._write is not None and self._pending:
            self._write(b"".join(self._pending))
            self._pending.clear()
            self._size = 0


def export_postgres(
    source: PgTarget,
    store: BlobStore,
    *,
    now: Callable[[], datetime],
    period: Period = "daily",
    schemas: Sequence[str] = DEFAULT_SCHEMAS,
    compresslevel: int = 6,
    statement_timeout_ms: int = 3_600_000,
) -> Manifest:
    """Export every table of ``schemas`` into ``store``; returns the manifest (written
    last, so a backup without one is incomplete)."""
    from shared.backup._manifest import manifest_json
    from shared.backup._store import put_bytes

    started = now()
    backup_id = new_backup_id("postgres", started)
    prefix = backup_prefix("postgres", period, backup_id, started)
    objects: list[ObjectEntry] = []
    entries: list[TableEntry] = []
    with connect(source) as conn:
        cursor = conn.cursor()
        # One snapshot for every table; READ ONLY so it can never write by mistake. (pg8000
        # has just begun a transaction: SET TRANSACTION must be its first statement.)
        cursor.execute(SNAPSHOT)
        _set_session(cursor, statement_timeout_ms, local=True)
        revision = alembic_revision(cursor)
        version = str(_scalar(cursor, "SHOW server_version"))
        for table in list_tables(cursor, schemas):
            name = f"{prefix}{table.schema}.{table.name}.copy.gz"
            with store.put_stream(name, CONTENT_TYPE) as raw:
                counter = CountingWriter(raw)
                with gzip.GzipFile(
                    filename="", mode="wb", fileobj=counter, compresslevel=compresslevel, mtime=0
                ) as zipped:
                    sink = _CopySink(zipped)
                    cursor.execute(table.copy_out(), stream=sink)
                    sink.close()
            tally = sink.lines.finish()
            objects.append(
                ObjectEntry(
                    name=name,
                    size=counter.size,
                    sha256=counter.sha256,
                    crc32c=counter.crc32c,
                    content_type=CONTENT_TYPE,
                )
            )
            entries.append(
                TableEntry(
                    schema_=table.schema,
                    name=table.name,
                    object=name,
                    columns=list(table.columns),
                    rows=tally.count,
                    checksum=tally.checksum,
                )
            )
        conn.rollback()  # read only: nothing to keep
    manifest = Manifest(
        backup_id=backup_id,
        store="postgres",
        period=period,
        prefix=prefix,
        location=store.location,
        source=source.described,
        started_at=started,
        finished_at=now(),
        server_version=version,
        alembic_revision=revision,
        data_format=DATA_FORMAT,
        objects=objects,
        tables=entries,
    )
    put_bytes(store, manifest.manifest_name, manifest_json(manifest), "application/json")
    return manifest


# --- restore ------------------------------------------------------------------------


def restore_postgres(
    manifest: Manifest,
    store: BlobStore,
    target: PgTarget,
    *,
    alembic: AlembicRunner,
    force: bool = False,
    statement_timeout_ms: int = 3_600_000,
) -> RestoreReport:
    """Load ``manifest``'s backup into ``target``, then compare every table with it.

    The target is migrated to the manifest's Alembic revision when it has no schema yet;
    a target at another revision is refused, and one holding rows in the backup's tables
    is refused unless ``force`` (the tables are then truncated, in the same transaction
    as the load, so a failed restore changes nothing)."""
    started = time.perf_counter()
    report = RestoreReport(manifest.store, manifest.backup_id, target.described)
    with connect(target) as conn:
        cursor = conn.cursor()
        revision = alembic_revision(cursor)
        if revision is None:
            conn.rollback()
            _require_no_tables(cursor, manifest)
            conn.rollback()
            migrate_to(target, manifest.alembic_revision, alembic)
        elif revision != manifest.alembic_revision:
            raise RestoreRefused(
                f"{target.described} is at Alembic revision {revision}; the backup"
                f" {manifest.backup_id} is at {manifest.alembic_revision}"
            )
        conn.rollback()
        _set_session(cursor, statement_timeout_ms, local=False)
        tables = {(t.schema, t.name): t for t in list_tables(cursor, _schemas_of(manifest))}
        mismatched = _column_mismatches(manifest, tables)
        if mismatched:
            report.findings.extend(mismatched)
            conn.rollback()
            return report.done(started)
        occupied = [e.qualified for e in manifest.tables if _has_rows(cursor, tables, e)]
        if occupied and not force:
            conn.rollback()
            raise RestoreRefused(
                f"{target.described} already holds rows in {', '.join(occupied[:5])}"
                + (" and more" if len(occupied) > 5 else "")
                + "; restore over it only with --force"
            )
        if occupied:
            cursor.execute(
                "TRUNCATE "
                + ", ".join(tables[(e.schema_, e.name)].qualified for e in manifest.tables)
                + " RESTART IDENTITY"
            )
        broken = False
        for entry in manifest.tables:
            check = ObjectCheck(store, manifest.object(entry.object))
            if broken:  # nothing more is loaded; still say what else is wrong
                check.run()
                report.findings.extend(check.findings(entry.qualified, entry.tally()))
                continue
            table = tables[(entry.schema_, entry.name)]
            try:
                cursor.execute(table.copy_in(), stream=check.chunks())
            except READ_ERRORS:
                broken = True
            except Exception as exc:  # the server refused the rows
                broken = True
                report.findings.append(
                    Finding(entry.qualified, f"PostgreSQL refused the rows: {_pg_error(exc)}")
                )
            found = check.findings(entry.qualified, entry.tally())
            # rows that differ from the manifest are not built on (their children would
            # only add foreign-key errors); the other objects are still checked
            broken = broken or bool(found)
            report.findings.extend(found)
            if check.reader is not None:
                report.bytes_read += check.reader.size
            report.counts[entry.qualified] = check.lines.digest.count
        if broken or report.findings:
            return report.done(started)  # the connection closes: nothing was committed
        _reset_identities(cursor, [tables[(e.schema_, e.name)] for e in manifest.tables])
        conn.commit()
        report.loaded = True
        verify_tables(cursor, manifest, tables, report)
        conn.rollback()
    return report.done(started)


def verify_tables(
    cursor: Any, manifest: Manifest, tables: dict[tuple[str, str], Table], report: RestoreReport
) -> None:
    """Export every table again (to nowhere) and compare count and checksum."""
    cursor.execute(SNAPSHOT)
    for entry in manifest.tables:
        sink = _CopySink(None)
        cursor.execute(tables[(entry.schema_, entry.name)].copy_out(), stream=sink)
        actual = sink.lines.finish()
        report.counts[entry.qualified] = actual.count
        report.findings.extend(
            compare(entry.qualified, "in the restored table", entry.tally(), actual)
        )


def _pg_error(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], dict):
        info = args[0]
        return f"SQLSTATE {info.get('C')}: {info.get('M')}"
    return f"{type(exc).__name__}: {exc}"


def _schemas_of(manifest: Manifest) -> list[str]:
    return sorted({entry.schema_ for entry in manifest.tables})


def _require_no_tables(cursor: Any, manifest: Manifest) -> None:
    cursor.execute(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE c.relkind IN ('r', 'p') AND n.nspname = ANY(%s)",
        (_schemas_of(manifest),),
    )
    row = cursor.fetchone()
    if row and row[0]:
        raise RestoreRefused(
            "the target has tables but no Alembic revision: restore into an empty database"
            " or one migrated by Alembic"
        )


def migrate_to(target: PgTarget, revision: str | None, alembic: AlembicRunner) -> None:
    """Create the schema the backup was taken with: Alembic to exactly its revision."""
    from alembic import command
    from alembic.util import CommandError
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    from shared.db import allow_autocommit_blocks
    from shared.migrate._alembic import alembic_api

    if revision is None:
        raise RestoreRefused("the backup records no Alembic revision; its schema is unknown")
    engine = create_engine(target.url, poolclass=NullPool, connect_args=target.connect_args)
    allow_autocommit_blocks(engine)
    try:
        with engine.connect() as conn, alembic_api():
            command.upgrade(alembic.config(conn), revision)
    except CommandError as exc:
        raise RestoreRefused(
            f"cannot create the schema at Alembic revision {revision}: {exc}"
        ) from None
    finally:
        engine.dispose()


def _column_mismatches(manifest: Manifest, tables: dict[tuple[str, str], Table]) -> list[Finding]:
    found: list[Finding] = []
    for entry in manifest.tables:
        table = tables.get((entry.schema_, entry.name))
        if table is None:
            found.append(Finding(entry.qualified, "the table does not exist in the target"))
            continue
        have = {c.name: c.type for c in table.columns}
        for column in entry.columns:
            if have.get(column.name) != column.type:
                found.append(
                    Finding(
                        entry.qualified,
                        f"column {column.name} is {have.get(column.name) or 'missing'} in"
                        f" the target, {column.type} in the backup",
                    )
                )
    return found


def _has_rows(cursor: Any, tables: dict[tuple[str, str], Table], entry: TableEntry) -> bool:
    table = tables[(entry.schema_, entry.name)]
    return bool(_scalar(cursor, f"SELECT EXISTS (SELECT 1 FROM {table.qualified})"))


def _reset_identities(cursor: Any, tables: Sequence[Table]) -> None:
    """Identity and serial sequences continue after the restored ids."""
    for table in tables:
        for column in table.columns:
            sequence = _scalar(
                cursor,
                f"SELECT pg_get_serial_sequence({quote_literal(table.qualified)},"
                f" {quote_literal(column.name)})",
            )
            if sequence:
                cursor.execute(
                    f"SELECT setval({quote_literal(str(sequence))},"
                    f" coalesce(max({quote_ident(column.name)}), 1),"
                    f" max({quote_ident(column.name)}) IS NOT NULL) FROM {table.qualified}"
                )
