"""canary: traffic steps decided by evidence -- start on ``sight.ops.canary.requested``,
analyse on ``sight.ops.canary.tick``, step, promote, roll back or hold (docs/canary.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.canary import dedupe_key, handle, not_before, parse
from shared.runtime import Context, Outcome, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    from shared.events import OpsEvent, OpsPayload


@pubsub_handler("canary", parse=parse, dedupe_key=dedupe_key, not_before=not_before)
def canary(event: OpsEvent[OpsPayload], ctx: Context) -> Outcome:
    return handle(event, ctx)
