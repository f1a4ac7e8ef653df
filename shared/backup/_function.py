"""The face of the backup and backup_drill functions: parse -> dedupe key -> handle
(docs/architecture.md, "The one face"; docs/backups.md).

Both consume ``backup-requests``. ``backup`` (the writer account: objectCreator on the
bucket, nothing else) takes ``kind=backup`` requests: it exports each store, records an
``ops.actions`` row of kind ``backup``, and asks for a drill of what it wrote.
``backup_drill`` (the reader account) takes ``kind=drill``: it restores the backup named,
or each store's newest, into scratch targets, compares, records ``restore_drill`` and
publishes ``sight.ops.backup.verified`` or ``.failed`` (to Slack through notify). In
production a subscription filter on the ``kind`` attribute gives each function its own
kind; the emulator ignores filters, so each also skips the other's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from shared.errors import SightOpsError

if TYPE_CHECKING:
    from shared.backup._manifest import Manifest
    from shared.backup._report import RestoreReport
    from shared.backup._store import BlobStore
    from shared.events import BackupRequested
    from shared.runtime import Context, Outcome, PubsubMessage

logger = logging.getLogger("sightops.backup")

#: The consumer that handles each kind.
CONSUMER_OF_KIND = {"backup": "backup", "drill": "backup_drill"}
#: The custom metric the staleness alert reads (terraform/backup.tf): the UTC time, in
#: seconds, of the newest backup a drill verified, per store.
VERIFIED_METRIC = "backup_verified_taken_at_s"


def parse(data: bytes, attributes: Mapping[str, str]) -> BackupRequested:
    """Our own event, or Cloud Scheduler's message (no ``id``/``time`` attributes)."""
    from shared.events import BackupRequested, parse_scheduled

    return parse_scheduled(data, attributes, BackupRequested)


def dedupe_key(event: BackupRequested, message: PubsubMessage) -> str:
    """The Pub/Sub message id: each scheduled run is one publish (a redelivery of it is
    the same run; a new backup id is drawn per attempt that gets past the receipt)."""
    return f"{event.kind}:{message.message_id}"


def handle(event: BackupRequested, ctx: Context) -> Outcome:
    from shared.runtime import Outcome

    wanted = CONSUMER_OF_KIND[event.kind]
    if ctx.consumer != wanted:
        return Outcome.skipped(f"a {event.kind} request is {wanted}'s")
    store = ctx.deps.service(_store)
    if event.kind == "backup":
        return _backup(event, ctx, store)
    return _drill(event, ctx, store)


def _store(deps: Any) -> BlobStore:
    from shared.backup._service import create_store

    return create_store(deps.settings)


def _backup(event: BackupRequested, ctx: Context, store: BlobStore) -> Outcome:
    from shared.backup._service import take_backup, verdict_event
    from shared.runtime import Outcome

    done: list[str] = []
    failed: list[str] = []
    for name in event.stores:
        try:
            manifest = take_backup(name, ctx.deps, store, period=event.period)
        except Exception as exc:
            if _retryable(exc):
                raise
            reason = f"{type(exc).__name__}: {exc}"
            logger.exception("%s backup failed", name)
            ctx.record_action("backup", "failed", detail={"store": name, "reason": reason})
            _publish(
                ctx,
                verdict_event(store_name=name, phase="backup", now=ctx.deps.clock(), reason=reason),
            )
            failed.append(name)
            continue
        ctx.record_action("backup", "succeeded", detail=_backup_detail(manifest))
        _request_drill(ctx, manifest)
        done.append(manifest.backup_id)
    if failed and not done:
        return Outcome.handled(f"backup of {', '.join(failed)} failed", failed=failed)
    return Outcome.handled(f"backed up {', '.join(done)}", backups=done, failed=failed)


def _drill(event: BackupRequested, ctx: Context, store: BlobStore) -> Outcome:
    from shared.backup._service import NoBackup, drill, find_backup, verdict_event
    from shared.runtime import Outcome

    verified: list[str] = []
    failed: list[str] = []
    for name in event.stores:
        manifest: Manifest | None = None
        report: RestoreReport | None = None
        reason: str | None = None
        wanted = event.backup_id if event.backup_id and event.backup_id.startswith(name) else None
        try:
            manifest = find_backup(store, name, wanted)
            report = drill(manifest, ctx.deps.settings, store)
        except NoBackup as exc:
            reason = str(exc)
        except Exception as exc:
            if _retryable(exc):
                raise
            logger.exception("%s drill failed", name)
            reason = f"{type(exc).__name__}: {exc}"
        now = ctx.deps.clock()
        event_out = verdict_event(
            store_name=name, phase="drill", now=now, manifest=manifest, report=report, reason=reason
        )
        ok = event_out.type.value.endswith(".verified")
        ctx.record_action(
            "restore_drill",
            "verified" if ok else "failed",
            detail=event_out.data.model_dump(mode="json"),
        )
        _publish(ctx, event_out)
        if ok and manifest is not None:
            _mark_verified(ctx, name, manifest)
            verified.append(manifest.backup_id)
        else:
            failed.append(manifest.backup_id if manifest else name)
    summary = f"verified {', '.join(verified) or 'nothing'}" + (
        f"; FAILED {', '.join(failed)}" if failed else ""
    )
    return Outcome.handled(summary, verified=verified, failed=failed)


def _retryable(exc: BaseException) -> bool:
    from shared.db import is_transient as db_transient
    from shared.graph import is_transient as graph_transient

    if isinstance(exc, SightOpsError):
        return exc.retryable
    return db_transient(exc) or graph_transient(exc)


def _backup_detail(manifest: Manifest) -> dict[str, Any]:
    counts: dict[str, int] = {t.qualified: t.rows for t in manifest.tables}
    if manifest.graph is not None:
        counts.update({f"label {k}": v.count for k, v in manifest.graph.labels.items()})
        counts.update({f"type {k}": v.count for k, v in manifest.graph.relationship_types.items()})
    return {
        "store": manifest.store,
        "backup_id": manifest.backup_id,
        "manifest": manifest.manifest_name,
        "location": manifest.location,
        "objects": len(manifest.objects),
        "bytes": manifest.total_bytes,
        "alembic_revision": manifest.alembic_revision,
        "graph_schema_version": manifest.graph_schema_version,
        "counts": counts,
    }


def _publish(ctx: Context, event: Any) -> None:
    ctx.deps.publisher.publish_event(ctx.deps.settings.topics.ops_events, event)


def _request_drill(ctx: Context, manifest: Manifest) -> None:
    """Ask backup_drill to verify what was just written (a backup counts once verified)."""
    from shared.events import BackupRequested, EventType, OpsEvent

    request = OpsEvent.new(
        EventType.BACKUP_REQUESTED,
        BackupRequested(stores=[manifest.store], kind="drill", backup_id=manifest.backup_id),
        source="sightops-backup",
        clock=ctx.deps.clock,
    )
    data, attributes = request.to_pubsub()
    attributes["kind"] = "drill"  # the production subscription filter
    ctx.deps.publisher.publish(ctx.deps.settings.topics.backup_requests, data, attributes)


def _mark_verified(ctx: Context, store: str, manifest: Manifest) -> None:
    """The point the staleness alert reads, written now (a function's CPU may be
    throttled before the metrics' next background flush)."""
    deps = ctx.deps
    deps.metrics.gauge(VERIFIED_METRIC, manifest.finished_at.timestamp(), store=store)
    flush = getattr(deps.metrics, "flush", None)
    if callable(flush):
        flush()
