"""What ``functions/maintain`` does with one ``maintenance`` message: :func:`parse`,
:func:`dedupe_key`, :func:`handle` (docs/maintain.md, "The function").

Requests come from Cloud Scheduler (the same data and attributes on every run, no ``id``
or ``time``: read leniently, their age is the publish time) or from our own tools (a
full ops event, parsed strictly), as for kpi-refresh's scheduled requests (docs/kpi.md,
"Refresh messages"). Deduplication is on the Pub/Sub message id.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.errors import TransientError
from shared.runtime import Context, Outcome, PubsubMessage

if TYPE_CHECKING:
    from shared.events import MaintainRequested, MaintenanceResult, OpsEvent
    from shared.maintain._run import Report
    from shared.runtime import Deps

SOURCE = "maintain"

# Deterministic event ids: a redelivery that publishes again (the first delivery's commit
# failed after its publish) carries the same id, so notify posts it once.
_EVENT_NAMESPACE = uuid.UUID("0c6f3b2e-8d41-4a5e-b7c9-2e1d4f6a8b93")


def parse(data: bytes, attributes: Mapping[str, str]) -> MaintainRequested:
    """A maintenance request: our own event, or Cloud Scheduler's fixed message."""
    from shared.events import MaintainRequested, parse_scheduled

    return parse_scheduled(data, attributes, MaintainRequested, type_required=False)


def dedupe_key(event: MaintainRequested, message: PubsubMessage) -> str:
    """The Pub/Sub message id: unique per publish, stable across redeliveries."""
    del event
    return f"maintain:{message.message_id}"


def completed_event(result: MaintenanceResult, deps: Deps, key: str) -> OpsEvent[MaintenanceResult]:
    """``sight.ops.maintain.completed`` for a run, its id derived from ``key``."""
    from shared.events import EventType, OpsEvent

    event = OpsEvent.new(EventType.MAINTAIN_COMPLETED, result, source=SOURCE, clock=deps.clock)
    return event.model_copy(update={"id": str(uuid.uuid5(_EVENT_NAMESPACE, key))})


def publish(report: Report, deps: Deps, key: str) -> None:
    """Publish the run's result to ``ops-events``; a failure is transient (redelivery)."""
    try:
        deps.publisher.publish_event(
            deps.settings.topics.ops_events, completed_event(report.result, deps, key)
        )
    except TransientError:
        raise
    except Exception as exc:
        raise TransientError(f"publish failed: {type(exc).__name__}") from exc


def handle(event: MaintainRequested, ctx: Context) -> Outcome:
    """Run the maintenance, record it (one ``ops.actions`` row, kind ``maintenance``) and
    publish ``sight.ops.maintain.completed``; a migration holding the lock is a skip."""
    from shared.maintain._run import run_maintenance

    deps = ctx.deps
    # The delivery's transaction must hold no snapshot while REINDEX CONCURRENTLY runs: it
    # waits for every older snapshot in the database, and ours would be one waiting for it
    # (the cycle migrate breaks, docs/migrate.md). The receipt INSERT leaves none today
    # (the runtime reads its rowcount); a simple-protocol statement makes sure no portal
    # of this transaction keeps one, whatever ran before.
    ctx.conn.exec_driver_sql("SELECT 1")
    report = run_maintenance(deps, dry_run=event.dry_run or deps.settings.maintain.dry_run)
    ctx.record_action("maintenance", report.status, detail=report.detail)
    publish(report, deps, ctx.key)
    result = report.result
    if result.status == "skipped":
        return Outcome.skipped(report.summary(), run_id=result.run_id)
    return Outcome.handled(
        report.summary(),
        run_id=result.run_id,
        rebuilt=len(result.done),
        attention=report.status == "attention",
        dry_run=result.dry_run,
    )


def run_by_hand(deps: Deps, *, dry_run: bool, actor: str) -> tuple[Report, bool]:
    """``sightops maintain run``: the same run, recorded with ``actor``; the event is
    published if Pub/Sub answers (the second value says whether it did)."""
    from shared.db import transaction
    from shared.maintain._run import run_maintenance
    from shared.runtime import write_action

    report = run_maintenance(deps, dry_run=dry_run or deps.settings.maintain.dry_run)
    with transaction(deps.engine) as conn:
        write_action(
            conn,
            kind="maintenance",
            status=report.status,
            now=deps.clock(),
            actor=actor,
            detail=report.detail,
        )
    try:
        publish(report, deps, f"manual:{report.result.run_id}")
    except TransientError:
        return report, False
    return report, True
