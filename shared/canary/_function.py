"""The canary function's face: ``parse``, ``dedupe_key``, ``handle`` (docs/canary.md).

It consumes ``ops-events`` filtered to ``sight.ops.canary.*``; of those only ``requested``
(start a canary) and ``tick`` (analyse the running ones) are its triggers, every other
type (its own results among them) is skipped: the emulator does not apply subscription
filters. ``functions/canary/main.py`` wires these (and ``not_before``) into ``pubsub_handler``;
the decisions are the orchestrator's (:class:`~shared.canary._orchestrator.Canaries`).

Ticks come from two producers in different shapes (docs/canary.md, "The function"): our
own tools (``sightops dev``, the simulations) publish a full ops event, parsed strictly;
Cloud Scheduler publishes the same fixed message every minute (terraform/canary.tf), so
it carries no per-run ``id`` or ``time`` and is read leniently, like kpi_refresh's
scheduled requests (shared/kpi/refresh.py). Such a tick's identity is its Pub/Sub message
id: the dedupe key and the trigger recorded with every decision.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.runtime import Context, Outcome, PubsubMessage

if TYPE_CHECKING:
    from datetime import datetime

    # The event models and the orchestrator are imported where first used, so that
    # ``import main`` stays cheap (docs/architecture.md, "Cold start").
    from shared.events import OpsEvent, OpsPayload


def parse(data: bytes, attributes: Mapping[str, str]) -> OpsEvent[OpsPayload]:
    """One of our own events (``type`` attribute), or Cloud Scheduler's id-less tick;
    anything else is rejected."""
    from shared.events import EventType, parse_ops_message

    if attributes.get("type") == EventType.CANARY_TICK.value and not _has_identity(attributes):
        return _scheduled_tick(data, attributes)
    return parse_ops_message(data, attributes)


def dedupe_key(event: OpsEvent[OpsPayload], message: PubsubMessage) -> str:
    """Our events dedupe on their id: a redelivered tick or request is a duplicate. A
    scheduled tick dedupes on its Pub/Sub message id (unique per run, stable across
    redeliveries). A new tick is a new event; the orchestrator's own checks make it a
    no-op when it comes too soon after another."""
    if not _has_identity(message.attributes):
        return f"tick:{message.message_id}"
    return event.id


def handle(event: OpsEvent[OpsPayload], ctx: Context) -> Outcome:
    """Dispatch: ``requested`` starts a canary, ``tick`` analyses, the rest is skipped."""
    from shared.canary._orchestrator import Canaries
    from shared.events import CanaryRequest, CanaryTick, EventType

    if event.type not in (EventType.CANARY_REQUESTED, EventType.CANARY_TICK):
        return Outcome.skipped(f"{event.type.value} is not a canary trigger")
    canaries = Canaries(ctx.deps, ctx.conn, trigger_event_id=ctx.message.event_id)
    if event.type is EventType.CANARY_REQUESTED:
        return canaries.start(event.data_as(CanaryRequest)).outcome()
    return canaries.tick(event.data_as(CanaryTick)).outcome()


def not_before(event: OpsEvent[OpsPayload]) -> datetime | None:
    """When a delivery is due: a tick the canary sent itself for a step read from the
    request logs names the end of the next period (docs/canary.md, "Ten-second ticks");
    the runtime holds it until then, outside any transaction."""
    from shared.events import CanaryTick, EventType

    if event.type is not EventType.CANARY_TICK:
        return None
    return event.data_as(CanaryTick).not_before


def _has_identity(attributes: Mapping[str, str]) -> bool:
    """An event of our own: it names itself (``id``) and its time."""
    return bool(attributes.get("id") and attributes.get("time"))


def _scheduled_tick(data: bytes, attributes: Mapping[str, str]) -> OpsEvent[OpsPayload]:
    """Cloud Scheduler's tick: the data alone is the payload (``{}`` or empty: every
    running canary). The envelope is made up here; its ``id`` is nobody's identity, the
    message's is its Pub/Sub id (:func:`dedupe_key`, ``ctx.message.event_id``), and its
    age is its publish time (the runtime's ``event_time``)."""
    from shared.events import CanaryTick, EventType, OpsEvent, parse_scheduled

    tick = parse_scheduled(data, attributes, CanaryTick)
    source = (attributes.get("source") or "cloud-scheduler")[:80]
    event: OpsEvent[OpsPayload] = OpsEvent.new(EventType.CANARY_TICK, tick, source=source)
    return event
