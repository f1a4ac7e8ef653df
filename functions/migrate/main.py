"""migrate: on a selected SUCCESS build, bring PostgreSQL and Neo4j to the schema it needs
(docs/migrate.md)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.migrate import dedupe_key, handle, migrate_deps, parse
from shared.runtime import Context, Outcome, pubsub_handler

if TYPE_CHECKING:  # the event models load with the first delivery (docs/architecture.md)
    from shared.migrate import Build


@pubsub_handler("migrate", parse=parse, dedupe_key=dedupe_key, deps=migrate_deps)
def migrate(event: Build, ctx: Context) -> Outcome:
    return handle(event, ctx)
