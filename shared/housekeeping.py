"""Pruning ``ops.event_receipts`` and ``ops.rejected_events`` (docs/schema.md, "Pruning").

Both tables grow with every delivery. A receipt is only useful while a redelivery of its
event could still pass the maximum-age check (the runtime drops older deliveries as stale
before it looks at receipts), so receipts are kept for the largest maximum event age of
any consumer plus a margin, at least; a rejected message is kept 30 days for a human.

Deletion runs in batches, each its own short transaction deleting at most ``batch_size``
rows picked with ``FOR UPDATE SKIP LOCKED``, so pruning never waits on a delivery's
uncommitted receipt and never holds many locks. Cloud Scheduler asks for it on the
``kpi-refresh`` topic (terraform/scheduler.tf) and kpi_refresh runs :func:`handle_prune`;
``sightops prune`` runs :func:`prune` from a terminal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict
from sqlalchemy import text
from sqlalchemy.engine import Engine

from shared.db import transaction
from shared.errors import InvalidEventError
from shared.events import load_json_object, validate
from shared.settings import EVENT_CONSUMERS, Settings

if TYPE_CHECKING:
    from shared.runtime import Context, Outcome

PRUNE_REQUESTED = "sight.ops.housekeeping.prune_requested"

Table = Literal["ops.event_receipts", "ops.rejected_events"]

# Both statements pick the oldest rows first (index ix_<table>_received_at) and skip rows
# another transaction holds: a receipt being written by a live delivery is never waited on.
_DELETE: dict[str, str] = {
    "ops.event_receipts": (
        "DELETE FROM ops.event_receipts WHERE (consumer, event_id) IN ("
        " SELECT consumer, event_id FROM ops.event_receipts WHERE received_at < :cutoff"
        " ORDER BY received_at LIMIT :n FOR UPDATE SKIP LOCKED)"
    ),
    "ops.rejected_events": (
        "DELETE FROM ops.rejected_events WHERE id IN ("
        " SELECT id FROM ops.rejected_events WHERE received_at < :cutoff"
        " ORDER BY received_at LIMIT :n FOR UPDATE SKIP LOCKED)"
    ),
}
_COUNT: dict[str, str] = {
    "ops.event_receipts": "SELECT count(*) FROM ops.event_receipts WHERE received_at < :cutoff",
    "ops.rejected_events": "SELECT count(*) FROM ops.rejected_events WHERE received_at < :cutoff",
}


def max_event_age_s(settings: Settings) -> float:
    """The oldest event any deployed consumer still handles (older ones are dropped as
    stale): the largest ``Settings.max_event_age``, the table ``pubsub_handler`` reads."""
    return max(settings.max_event_age(c).total_seconds() for c in EVENT_CONSUMERS)


def receipts_floor(settings: Settings) -> timedelta:
    """Receipts younger than this may still dedupe a live redelivery: never pruned."""
    return timedelta(seconds=max_event_age_s(settings) + settings.housekeeping.receipts_margin_s)


def receipts_retention(settings: Settings) -> timedelta:
    """The configured retention, raised to :func:`receipts_floor` if it is smaller."""
    configured = timedelta(seconds=settings.housekeeping.receipts_retention_s)
    return max(configured, receipts_floor(settings))


def rejected_retention(settings: Settings) -> timedelta:
    return timedelta(seconds=settings.housekeeping.rejected_retention_s)


class TablePrune(BaseModel):
    """What one run did to one table (in a dry run: what it would delete)."""

    table: Table
    retention_s: float
    older_than: datetime
    rows: int
    batches: int
    complete: bool  # False: stopped at max_batches or the time budget; the next run goes on


class PruneReport(BaseModel):
    dry_run: bool
    receipts: TablePrune
    rejected: TablePrune

    def summary(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        stamp = "%Y-%m-%d %H:%M"
        text_ = (
            f"{verb} {self.receipts.rows} receipts older than"
            f" {self.receipts.older_than.strftime(stamp)} UTC and {self.rejected.rows}"
            f" rejected events older than {self.rejected.older_than.strftime(stamp)} UTC"
        )
        if not (self.receipts.complete and self.rejected.complete):
            text_ += " (stopped at the batch or time limit; the next run continues)"
        return text_


def prune(
    engine: Engine,
    settings: Settings,
    now: datetime,
    *,
    dry_run: bool = False,
    monotonic: Callable[[], float] = time.monotonic,
) -> PruneReport:
    """Delete receipts and rejected events past their retention, in bounded batches."""
    config = settings.housekeeping
    deadline = monotonic() + config.budget_s

    def one(table: Table, retention: timedelta) -> TablePrune:
        cutoff = now - retention
        if dry_run:
            with transaction(engine) as conn:
                rows = int(conn.execute(text(_COUNT[table]), {"cutoff": cutoff}).scalar_one())
            return TablePrune(
                table=table,
                retention_s=retention.total_seconds(),
                older_than=cutoff,
                rows=rows,
                batches=0,
                complete=True,
            )
        total = batches = 0
        complete = False
        # The first batch always runs, so one table never starves the other of budget.
        while batches < config.max_batches and (batches == 0 or monotonic() < deadline):
            with transaction(engine) as conn:
                deleted = conn.execute(
                    text(_DELETE[table]), {"cutoff": cutoff, "n": config.batch_size}
                ).rowcount
            batches += 1
            total += deleted
            if deleted < config.batch_size:
                complete = True
                break
        return TablePrune(
            table=table,
            retention_s=retention.total_seconds(),
            older_than=cutoff,
            rows=total,
            batches=batches,
            complete=complete,
        )

    return PruneReport(
        dry_run=dry_run,
        receipts=one("ops.event_receipts", receipts_retention(settings)),
        rejected=one("ops.rejected_events", rejected_retention(settings)),
    )


# --- the scheduled request -------------------------------------------------------------------


class PruneRequested(BaseModel):
    """Cloud Scheduler's message: ``{}`` (or ``{"dry_run": true}``), attribute
    ``type=sight.ops.housekeeping.prune_requested``, no ``id``/``time`` (every run sends
    the same attributes, so dedupe is on the Pub/Sub message id, as for KPI refreshes)."""

    model_config = ConfigDict(extra="forbid")

    dry_run: bool = False


def is_prune_request(attributes: Mapping[str, str]) -> bool:
    return attributes.get("type") == PRUNE_REQUESTED


def parse_prune_request(data: bytes, attributes: Mapping[str, str]) -> PruneRequested:
    """A prune request; empty data means ``{}``."""
    if not is_prune_request(attributes):
        raise InvalidEventError(f"attribute 'type' is not {PRUNE_REQUESTED}")
    if not data.strip():
        return PruneRequested()
    return validate(PruneRequested, load_json_object(data, PRUNE_REQUESTED), PRUNE_REQUESTED)


def handle_prune(event: PruneRequested, ctx: Context) -> Outcome:
    """Run :func:`prune` on the function's engine, batches in their own transactions (the
    delivery's receipt transaction holds nothing of it)."""
    from shared.runtime import Outcome

    deps = ctx.deps
    report = prune(deps.engine, deps.settings, deps.clock(), dry_run=event.dry_run)
    if not event.dry_run:
        deps.metrics.incr("pruned_rows", report.receipts.rows, table="event_receipts")
        deps.metrics.incr("pruned_rows", report.rejected.rows, table="rejected_events")
    return Outcome.handled(
        report.summary(),
        dry_run=report.dry_run,
        receipts_pruned=report.receipts.rows,
        rejected_pruned=report.rejected.rows,
        complete=report.receipts.complete and report.rejected.complete,
    )
