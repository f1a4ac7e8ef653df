"""Backups as operations: take one, list them, drill one (restore into scratch targets
and compare), restore one somewhere (docs/backups.md). The function and the CLI both
call these; clients and clock come in through ``Deps``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shared.backup._manifest import (
    MANIFEST,
    STORES,
    Manifest,
    Period,
    Store,
    get_manifest,
    list_manifests,
)
from shared.backup._postgres import PgTarget, connect, quote_ident
from shared.backup._report import Finding, RestoreReport
from shared.backup._store import BlobStore, GcsBlobStore
from shared.errors import PermanentError

if TYPE_CHECKING:
    from neo4j import Driver

    from shared.events import BackupVerdict, OpsEvent
    from shared.runtime import Deps
    from shared.settings import Settings

#: The default retention prefix of each store's scheduled backups (terraform/backup.tf).
DEFAULT_PERIOD: dict[Store, Period] = {"postgres": "daily", "neo4j": "weekly"}


class NoBackup(PermanentError):
    """There is no (complete) backup to restore."""


def create_store(settings: Settings) -> BlobStore:
    """The configured bucket through the official client."""
    return GcsBlobStore(
        settings.backup.bucket,
        project=settings.gcp_project,
        endpoint=settings.backup.storage_endpoint,
        chunk_bytes=settings.backup.chunk_bytes,
    )


def source_target(settings: Settings) -> PgTarget:
    """The database the settings point at, as the exporter connects to it."""
    from shared.db import pg8000_target

    url, connect_args = pg8000_target(settings.database_url_sync, settings)
    return PgTarget(url, connect_args)


def target_from_url(url: str, settings: Settings) -> PgTarget:
    """An explicit database URL (``sightops backup restore --to``), any driver spelling."""
    from shared.db import pg8000_target
    from shared.settings import sync_database_url

    sync, connect_args = pg8000_target(sync_database_url(url), settings)
    return PgTarget(sync, connect_args)


def _alembic(settings: Settings) -> Any:
    from shared.migrate._alembic import AlembicRunner

    return AlembicRunner(settings.migrate.alembic_ini, settings.migrate.version_locations)


def take_backup(
    store_name: Store,
    deps: Deps,
    store: BlobStore,
    *,
    period: Period | None = None,
) -> Manifest:
    """Export one store into ``store``; returns its manifest."""
    settings = deps.settings
    config = settings.backup
    chosen = period or DEFAULT_PERIOD[store_name]
    if store_name == "postgres":
        from shared.backup._postgres import export_postgres

        return export_postgres(
            source_target(settings),
            store,
            now=deps.clock,
            period=chosen,
            schemas=config.schemas,
            compresslevel=config.compresslevel,
            statement_timeout_ms=int(config.statement_timeout_s * 1000),
        )
    from shared.backup._neo4j import export_graph

    return export_graph(
        deps.neo4j,
        store,
        now=deps.clock,
        source=settings.neo4j_uri,
        period=chosen,
        record_label=settings.migrate.graph_record_label,
        compresslevel=config.compresslevel,
    )


def find_backup(store: BlobStore, store_name: Store, backup_id: str | None = None) -> Manifest:
    """The backup named, or the newest complete one of ``store_name``."""
    if backup_id is not None:
        for manifest in list_manifests(store, store_name):
            if manifest.backup_id == backup_id:
                return manifest
        raise NoBackup(f"no complete backup {backup_id} in {store.location}")
    found = list_manifests(store, store_name)
    if not found:
        raise NoBackup(f"no complete {store_name} backup in {store.location}")
    return found[0]


# --- scratch targets ------------------------------------------------------------------


def _admin_execute(target: PgTarget, sql: str) -> None:
    with connect(target, autocommit=True) as conn:
        conn.cursor().execute(sql)


@contextmanager
def scratch_database(settings: Settings, backup_id: str) -> Iterator[PgTarget]:
    """``CREATE DATABASE <prefix><id>`` on the backed-up server, dropped on the way out
    (``keep_failed_restore`` keeps it when the block raised :class:`KeepScratch`)."""
    source = source_target(settings)
    suffix = backup_id.split("-", 1)[1].replace("-", "_").lower()
    name = f"{settings.backup.scratch_database_prefix}{suffix}_{secrets.token_hex(3)}"
    _admin_execute(source, f"CREATE DATABASE {quote_ident(name)}")
    keep = False
    try:
        yield source.with_database(name)
    except KeepScratch:
        keep = True
    finally:
        if not keep:
            _admin_execute(source, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")


class KeepScratch(Exception):
    """Raised inside :func:`scratch_database` to keep the database for inspection."""


def scratch_driver(settings: Settings) -> Driver:
    """The drill's own Neo4j (never the production graph: it is wiped)."""
    import neo4j

    from shared.log import REDACTOR

    config = settings.backup
    password = config.scratch_neo4j_password.get_secret_value()
    REDACTOR.add(password)
    if config.scratch_neo4j_uri == settings.neo4j_uri:
        raise PermanentError(
            "BACKUP__SCRATCH_NEO4J_URI is the production graph's URI; the drill wipes its"
            " target, so it must be another instance"
        )
    return neo4j.GraphDatabase.driver(
        config.scratch_neo4j_uri,
        auth=(config.scratch_neo4j_user, password),
        connection_timeout=5.0,
        connection_acquisition_timeout=10.0,
    )


def drill(manifest: Manifest, settings: Settings, store: BlobStore) -> RestoreReport:
    """Restore one backup into its scratch target and compare it with its manifest."""
    if manifest.store == "postgres":
        from shared.backup._postgres import restore_postgres

        report: RestoreReport | None = None
        with scratch_database(settings, manifest.backup_id) as target:
            report = restore_postgres(
                manifest,
                store,
                target,
                alembic=_alembic(settings),
                statement_timeout_ms=int(settings.backup.statement_timeout_s * 1000),
            )
            if not report.ok and settings.backup.keep_failed_restore:
                raise KeepScratch
        assert report is not None
        return report
    from shared.backup._neo4j import restore_graph, wipe_graph

    driver = scratch_driver(settings)
    try:
        report = restore_graph(
            manifest, store, driver, target=settings.backup.scratch_neo4j_uri, force=True
        )
        if report.ok or not settings.backup.keep_failed_restore:
            wipe_graph(driver)  # restored production data does not linger on a scratch
        return report
    finally:
        driver.close()


def restore_to(
    manifest: Manifest,
    settings: Settings,
    store: BlobStore,
    *,
    to: str,
    force: bool,
) -> RestoreReport:
    """Restore into a target the operator named (a database URL or a Neo4j URI)."""
    if manifest.store == "postgres":
        from shared.backup._postgres import restore_postgres

        return restore_postgres(
            manifest,
            store,
            target_from_url(to, settings),
            alembic=_alembic(settings),
            force=force,
            statement_timeout_ms=int(settings.backup.statement_timeout_s * 1000),
        )
    import neo4j

    from shared.backup._neo4j import restore_graph

    password = settings.neo4j_password.get_secret_value()
    driver = neo4j.GraphDatabase.driver(to, auth=(settings.neo4j_user, password))
    try:
        return restore_graph(manifest, store, driver, target=to, force=force)
    finally:
        driver.close()


# --- verdicts -------------------------------------------------------------------------


@dataclass(frozen=True)
class Staleness:
    """How old the newest complete backup of a store is, against its limit."""

    store: Store
    newest: Manifest | None
    age: timedelta | None
    limit: timedelta

    @property
    def stale(self) -> bool:
        return self.age is None or self.age > self.limit


def staleness(store: BlobStore, settings: Settings, now: datetime) -> list[Staleness]:
    limits = {
        "postgres": timedelta(hours=settings.backup.postgres_max_age_h),
        "neo4j": timedelta(hours=settings.backup.neo4j_max_age_h),
    }
    out: list[Staleness] = []
    for name in STORES:
        found = list_manifests(store, name)
        newest = found[0] if found else None
        age = now - newest.finished_at if newest else None
        out.append(Staleness(name, newest, age, limits[name]))
    return out


def verdict_event(
    *,
    store_name: Store,
    phase: Literal["backup", "drill"],
    now: datetime,
    manifest: Manifest | None = None,
    report: RestoreReport | None = None,
    reason: str | None = None,
) -> OpsEvent[BackupVerdict]:
    """``sight.ops.backup.verified`` (a drill with no findings) or ``.failed``."""
    from shared.events import BackupVerdict, EventType, OpsEvent
    from shared.events._ops import MAX_FINDINGS

    ok = report is not None and report.ok and reason is None
    findings = [str(f) for f in (report.findings if report else [])]
    payload = BackupVerdict(
        store=store_name,
        phase=phase,
        backup_id=manifest.backup_id if manifest else None,
        manifest=manifest.manifest_name if manifest else None,
        location=manifest.location if manifest else None,
        taken_at=manifest.finished_at if manifest else None,
        checked_at=now,
        target=report.target if report else None,
        counts=dict(report.counts) if report else {},
        bytes=report.bytes_read if report else 0,
        duration_s=report.duration_s if report else 0.0,
        reason=reason or (None if ok else (report.summary() if report else "failed")),
        findings=findings[:MAX_FINDINGS],
    )
    kind = EventType.BACKUP_VERIFIED if ok else EventType.BACKUP_FAILED
    return OpsEvent.new(kind, payload, source="sightops-backup", clock=lambda: now)


__all__ = [
    "DEFAULT_PERIOD",
    "MANIFEST",
    "Finding",
    "KeepScratch",
    "NoBackup",
    "Staleness",
    "create_store",
    "drill",
    "find_backup",
    "get_manifest",
    "restore_to",
    "scratch_database",
    "scratch_driver",
    "source_target",
    "staleness",
    "take_backup",
    "target_from_url",
    "verdict_event",
]
