"""The rollback function's face: ``parse``, ``dedupe_key``, ``handle`` (docs/rollback.md).

It consumes ``smoke-tests`` and ``monitoring-alerts`` (triggers) and ``ops-events``
filtered to ``sight.ops.release.*`` (ledger rows only, ``_ledger``); any other ops event
is skipped (the emulator does not apply subscription filters).

``functions/rollback/main.py`` wires exactly these three into ``pubsub_handler``; the
decision itself is the orchestrator's (:class:`~shared.rollback._orchestrator.Rollbacks`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from shared.runtime import Context, Outcome, PubsubMessage, storable_text

if TYPE_CHECKING:
    # The event models and the orchestrator are imported where first used, so that
    # ``import main`` stays cheap (docs/architecture.md, "Cold start").
    from shared.events import IncidentNotification, OpsEvent, OpsPayload

    #: What the rollback function consumes: our smoke events, or Cloud Monitoring incidents.
    RollbackInput = OpsEvent[OpsPayload] | IncidentNotification


def parse(data: bytes, attributes: Mapping[str, str]) -> RollbackInput:
    """Our events carry a ``type`` attribute; incident notifications carry none."""
    from shared.events import parse_incident_message, parse_ops_message

    if attributes.get("type"):
        return parse_ops_message(data, attributes)
    return parse_incident_message(data, attributes)


def dedupe_key(event: RollbackInput, message: PubsubMessage) -> str:
    """Our events dedupe on their id. An incident dedupes on (incident id, state): a
    re-notification of an open incident is not a new failure. A copy that came through
    the webhook is kept apart (its message id): it never acts, and must not stand in for
    the Pub/Sub channel's copy of the same notification."""
    from shared.events import IncidentNotification

    if isinstance(event, IncidentNotification):
        if from_webhook(message.attributes):
            return f"webhook:{message.event_id}"
        return incident_key(event.incident.incident_id, event.incident.state or "unknown")
    return message.event_id


#: The attribute ``alert_intake`` sets on what it publishes (``shared.intake.attributes_for``);
#: attributes are set by our code, never by the webhook's caller.
ORIGIN_ATTRIBUTE = "origin"


def from_webhook(attributes: Mapping[str, str]) -> bool:
    """Whether a ``monitoring-alerts`` message was published by ``alert_intake`` (the
    webhook) rather than by Cloud Monitoring's Pub/Sub notification channel. Messages
    published before the ``origin`` attribute existed say so by ``source``."""
    return ORIGIN_ATTRIBUTE in attributes or attributes.get("source") == "alert_intake"


def incident_key(incident_id: str, state: str) -> str:
    """The receipt key of one state of an incident (``ops.event_receipts.event_id``)."""
    return f"incident:{incident_id}:{state}"


def handle(event: RollbackInput, ctx: Context) -> Outcome:
    """The rollback function's handler: dispatch on what arrived."""
    from shared.events import EventType, IncidentNotification, SmokeResult
    from shared.rollback import _ledger as ledger
    from shared.rollback import _store as store
    from shared.rollback._decide import incident_trigger
    from shared.rollback._model import Trigger
    from shared.rollback._orchestrator import Rollbacks

    deps = ctx.deps
    rollbacks = Rollbacks(deps, ctx.conn, ctx.record_action, redeliver_unpublished=True)
    dry_run = deps.settings.rollback.dry_run
    trigger_key = storable_text(f"{ctx.consumer}:{dedupe_key(event, ctx.message)}")
    if isinstance(event, IncidentNotification):
        # The ledger fact first, whatever is decided below (docs/rollback.md, "Ledger rows").
        ledger.record_incident(ctx, event)
        if from_webhook(ctx.message.attributes):
            # Only the Pub/Sub notification channel may move traffic (docs/rollback.md):
            # the webhook is reachable from outside with a shared password. notify still
            # reports the incident; the subscription's filter normally keeps it from here.
            return Outcome.skipped(
                f"incident {event.incident.incident_id} came through alert_intake (the "
                "webhook); only the Pub/Sub notification channel may move traffic"
            )
        trigger = incident_trigger(event, ctx.message.event_time or deps.clock())
        if isinstance(trigger, str):
            return Outcome.skipped(trigger)
        closed = incident_key(trigger.event_id, "closed")
        if store.receipt_exists(ctx.conn, ctx.consumer, closed):
            # Pub/Sub does not keep order: an open notification redelivered after the
            # closed one is about a failure that is over.
            return Outcome.skipped(
                f"incident {trigger.event_id} was already reported closed; its late open "
                "notification changes nothing"
            )
        resource = event.incident.resource
        region = resource.labels.get("location") if resource else None
        report = rollbacks.run(
            trigger,
            region,
            dry_run=dry_run,
            bad_reason=f"auto-rollback incident {trigger.event_id}: "
            f"{event.incident.policy_name or event.incident.condition_name or 'alert'}",
            trigger_key=trigger_key,
        )
        return report.outcome()
    if ledger.is_release_event(event.type.value):
        status = ledger.record_release(ctx, event)
        return Outcome.handled(f"release {event.release_id or event.id} {status}: recorded")
    if event.type is EventType.SMOKE_PASSED:
        return rollbacks.smoke_passed(event.id, event.time, event.data_as(SmokeResult))
    if event.type is not EventType.SMOKE_FAILED:
        return Outcome.skipped(f"{event.type.value} is not a rollback trigger")
    smoke = event.data_as(SmokeResult)
    failed = ", ".join(c.name for c in smoke.failed_checks) or "no failed check listed"
    report = rollbacks.run(
        Trigger(
            kind="smoke",
            service=smoke.service,
            event_id=event.id,
            evidence_time=event.time,
            revision=smoke.revision,
        ),
        smoke.region,
        dry_run=dry_run,
        bad_reason=f"smoke.failed {event.id}: {failed}"[:1000],
        trigger_key=trigger_key,
    )
    return report.outcome()
