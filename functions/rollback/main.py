"""rollback: a failed smoke test or an auto-rollback alert puts traffic back on the last
known-good revision (DESIGN.md 4.2; docs/rollback.md)."""

from __future__ import annotations

from datetime import timedelta

from shared.rollback import RollbackInput, handle, parse_rollback_message, rollback_dedupe_key
from shared.runtime import Context, Outcome, pubsub_handler
from shared.settings import get_settings


@pubsub_handler(
    "rollback",
    parse=parse_rollback_message,
    max_age=timedelta(seconds=get_settings().rollback.max_event_age_s),
    dedupe_key=rollback_dedupe_key,
)
def rollback(event: RollbackInput, ctx: Context) -> Outcome:
    return handle(event, ctx)
