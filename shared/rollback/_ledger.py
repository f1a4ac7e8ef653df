"""Ledger facts the rollback function records for the release metrics (docs/rollback.md,
"Ledger rows"; read by ``sightops report``, docs/metrics.md).

- ``kind='release'``: one row per ``sight.ops.release.deployed|promoted|failed`` from
  ``ops-events``, status ``deployed``/``promoted``/``failed``, the payload as detail;
- ``kind='incident'``: one row per state of a Cloud Monitoring incident (``open``,
  ``closed``), written before rollback decides anything about it.

Both are facts, not decisions: written in the delivery's transaction with a
``dedupe_key``, so a redelivery or a second copy (the webhook's) adds nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from shared.runtime import write_action

if TYPE_CHECKING:
    from shared.events import IncidentNotification, OpsEvent, OpsPayload
    from shared.runtime import Context

RELEASE_PREFIX = "sight.ops.release."
INCIDENT_STATES = ("open", "closed")


def is_release_event(event_type: str) -> bool:
    return event_type.startswith(RELEASE_PREFIX)


def record_release(ctx: Context, event: OpsEvent[OpsPayload]) -> str:
    """The release row of one ``sight.ops.release.*`` event; returns its status."""
    from shared.events import ReleaseResult
    from shared.release import release_trace_id

    result = event.data_as(ReleaseResult)
    status = event.type.value.removeprefix(RELEASE_PREFIX)
    write_action(
        ctx.conn,
        kind="release",
        status=status,
        now=result.finished_at,
        service=result.service,
        trigger_event_id=event.id,
        detail=result.model_dump(mode="json"),
        dedupe_key=f"release:{event.id}",
        on_conflict="ignore",
        returning=False,
        release_id=result.release_id,
        trace_id=release_trace_id(result.release_id),
    )
    return status


def record_incident(ctx: Context, notification: IncidentNotification) -> bool:
    """The incident row of one notification; False (nothing written) for a test
    notification or a state other than open/closed."""
    incident = notification.incident
    state = incident.state
    if notification.is_test or state not in INCIDENT_STATES:
        return False
    moment: datetime | None = incident.started_at if state == "open" else incident.ended_at
    when = moment or ctx.message.publish_time or ctx.deps.clock()
    write_action(
        ctx.conn,
        kind="incident",
        status=state,
        now=when,
        service=incident.cloud_run_service,
        trigger_event_id=ctx.message.event_id,
        detail={
            "incident_id": incident.incident_id,
            "policy_name": incident.policy_name,
            "revision": incident.cloud_run_revision,
            "auto_rollback": incident.auto_rollback,
            "started_at": _iso(incident.started_at),
            "ended_at": _iso(incident.ended_at),
        },
        dedupe_key=f"incident:{incident.incident_id}:{state}",
        on_conflict="ignore",
        returning=False,
    )
    return True


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None
