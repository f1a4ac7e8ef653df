"""backup: export PostgreSQL and Neo4j to Cloud Storage on schedule; backup_drill:
restore a backup into scratch targets and verify it against its manifest
(docs/backups.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.backup import dedupe_key, handle, parse
from shared.runtime import Context, Outcome, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    from shared.events import BackupRequested


@pubsub_handler("backup", parse=parse, dedupe_key=dedupe_key)
def backup(event: BackupRequested, ctx: Context) -> Outcome:
    return handle(event, ctx)


@pubsub_handler("backup_drill", parse=parse, dedupe_key=dedupe_key)
def backup_drill(event: BackupRequested, ctx: Context) -> Outcome:
    return handle(event, ctx)
