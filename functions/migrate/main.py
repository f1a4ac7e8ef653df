"""migrate: on a selected SUCCESS build, bring PostgreSQL and Neo4j to the schema it needs."""

from __future__ import annotations

from shared.events import Build, parse_build_message
from shared.migrate import dedupe_key, handle_build, max_age, migrate_deps
from shared.runtime import Context, Outcome, pubsub_handler


# migrate_deps: a concurrent duplicate is answered 503 at once instead of waiting inside
# the receipt INSERT, where it would stall CREATE INDEX CONCURRENTLY (shared/migrate).
@pubsub_handler(
    "migrate",
    parse=parse_build_message,
    max_age=max_age(),
    dedupe_key=dedupe_key,
    deps=migrate_deps,
)
def migrate(event: Build, ctx: Context) -> Outcome:
    return handle_build(event, ctx)
