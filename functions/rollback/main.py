"""rollback: a failed smoke test or an auto-rollback alert puts traffic back on the last
known-good revision (docs/rollback.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.rollback import dedupe_key, handle, parse
from shared.runtime import Context, Outcome, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    from shared.rollback import RollbackInput


@pubsub_handler("rollback", parse=parse, dedupe_key=dedupe_key)
def rollback(event: RollbackInput, ctx: Context) -> Outcome:
    return handle(event, ctx)
