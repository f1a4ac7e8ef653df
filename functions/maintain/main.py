"""maintain: routine database care on schedule, under the migration lock: ANALYZE, index
bloat and REINDEX CONCURRENTLY, every Neo4j index ONLINE (docs/maintain.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.maintain import dedupe_key, handle, parse
from shared.runtime import Context, Outcome, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    from shared.maintain import MaintainRequested


@pubsub_handler("maintain", parse=parse, dedupe_key=dedupe_key)
def maintain(event: MaintainRequested, ctx: Context) -> Outcome:
    return handle(event, ctx)
