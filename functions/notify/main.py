"""notify: one Slack message per thing worth a human's attention."""

from __future__ import annotations

from shared.events import Build, parse_build_message
from shared.notify import deliver, render_build
from shared.runtime import Context, Outcome, pubsub_handler


@pubsub_handler("notify", parse=parse_build_message)
def notify(event: Build, ctx: Context) -> Outcome:
    if not event.is_terminal:
        return Outcome.skipped(f"build {event.id} is {event.status.value}, not terminal")
    result = deliver(ctx.deps, render_build(event))
    ctx.record_action(
        "notification",
        result,
        service=event.service,
        detail={"build_id": event.id, "status": event.status.value},
    )
    return Outcome.handled(f"build {event.id} {event.status.value} {result}")
