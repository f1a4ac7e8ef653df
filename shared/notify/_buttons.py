"""The Slack buttons that act on a release (pure; docs/console.md, "Acting from Slack").

notify puts them on rollback, freeze, escalation and canary messages when interactivity is
configured; the interactivity endpoint (``_interactions``) reads them back. A button's
``value`` names what to do to what, as JSON we wrote ourselves: the endpoint trusts it only
because Slack's signature says the request came from Slack, and still checks every name.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from slack_sdk.models.blocks import ActionsBlock

    from shared.events import OpsEvent, OpsPayload

#: The actions block notify adds; the endpoint removes it when it updates the message.
BLOCK_ID = "sightops_actions"
ACTION_PREFIX = "sightops:"

Verb = Literal[
    "undo_rollback", "unfreeze", "rollback_now", "canary_promote", "canary_rollback", "mark_bad"
]

#: verb -> (button label, style, what the confirmation dialog says it does)
VERBS: dict[str, tuple[str, str | None, str]] = {
    "undo_rollback": (
        "Undo rollback",
        None,
        "Send 100 % of {service}'s traffic back to {revision}, which the rollback marked bad"
        " (the health check is skipped).",
    ),
    "unfreeze": (
        "Unfreeze",
        "danger",
        "Roll {service} back to {revision} although a breaking migration was applied since"
        " it was deployed. Only when the schema is known to be compatible.",
    ),
    "rollback_now": (
        "Roll back now",
        "danger",
        "Move 100 % of {service}'s traffic back to its newest known-good revision"
        " (the rollback function's checks apply).",
    ),
    "canary_promote": (
        "Promote",
        "primary",
        "Give {revision} 100 % of {service}'s traffic now and end the canary.",
    ),
    "canary_rollback": (
        "Roll back now",
        "danger",
        "End the canary of {service}: the stable revision serves 100 % again and {revision}"
        " is marked bad.",
    ),
    "mark_bad": (
        "Mark revision bad",
        None,
        "Record {revision} of {service} as bad: rollback never moves traffic to it.",
    ),
}
_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$")
_REVISION = re.compile(r"^[a-z0-9]([-a-z0-9]{0,98}[a-z0-9])?$")


@dataclass(frozen=True)
class Intent:
    """What a button asks for: a verb on a service (and revision), for a release."""

    verb: str
    service: str
    revision: str | None = None
    release_id: str | None = None

    def value(self) -> str:
        return json.dumps(
            {
                "v": 1,
                "verb": self.verb,
                "service": self.service,
                "revision": self.revision,
                "release_id": self.release_id,
            },
            separators=(",", ":"),
        )

    @classmethod
    def parse(cls, action_id: str, value: str) -> Intent:
        """The button's intent, or ValueError when anything in it is not ours."""
        data: Any = json.loads(value)
        if not isinstance(data, dict) or data.get("v") != 1:
            raise ValueError("not a sight-ops button")
        verb, service = data.get("verb"), data.get("service")
        revision, release = data.get("revision"), data.get("release_id")
        if action_id != ACTION_PREFIX + str(verb) or verb not in VERBS:
            raise ValueError("unknown action")
        if not isinstance(service, str) or not _NAME.match(service):
            raise ValueError("not a service name")
        if revision is not None and (
            not isinstance(revision, str) or not _REVISION.match(revision)
        ):
            raise ValueError("not a revision name")
        if release is not None and not isinstance(release, str):
            raise ValueError("not a release id")
        return cls(str(verb), service, revision, release)


def intents_for(event: OpsEvent[OpsPayload]) -> list[Intent]:
    """The buttons a message about ``event`` gets (none for a dry run or a done canary)."""
    from shared.events import CanaryResult, EventType, RollbackResult

    kind = event.type
    release = event.release_id
    if kind in {EventType.ROLLBACK_SUCCEEDED, EventType.ROLLBACK_FROZEN, EventType.ROLLBACK_FAILED}:
        result = event.data_as(RollbackResult)
        if result.dry_run:
            return []
        if kind is EventType.ROLLBACK_SUCCEEDED and result.from_revision:
            return [Intent("undo_rollback", result.service, result.from_revision, release)]
        if kind is EventType.ROLLBACK_FROZEN and result.to_revision:
            return [Intent("unfreeze", result.service, result.to_revision, release)]
        intents = [Intent("rollback_now", result.service, None, release)]
        if result.from_revision:
            intents.append(Intent("mark_bad", result.service, result.from_revision, release))
        return intents
    if kind.value.startswith("sight.ops.canary."):
        canary = event.data_as(CanaryResult)
        if canary.dry_run:
            return []
        if kind in {EventType.CANARY_STARTED, EventType.CANARY_STEPPED, EventType.CANARY_HELD}:
            return [
                Intent("canary_promote", canary.service, canary.revision, canary.release_id),
                Intent("canary_rollback", canary.service, canary.revision, canary.release_id),
                Intent("mark_bad", canary.service, canary.revision, canary.release_id),
            ]
        if kind is EventType.CANARY_PROMOTED:
            return [Intent("mark_bad", canary.service, canary.revision, canary.release_id)]
    return []


def actions_block(intents: list[Intent]) -> ActionsBlock | None:
    """One button per intent, each asking for confirmation first."""
    from slack_sdk.models.blocks import ActionsBlock, ButtonElement, ConfirmObject

    buttons = []
    for intent in intents[:5]:
        label, style, said = VERBS[intent.verb]
        buttons.append(
            ButtonElement(
                text=label,
                action_id=ACTION_PREFIX + intent.verb,
                value=intent.value(),
                style=style,
                confirm=ConfirmObject(
                    title=label,
                    text=said.format(service=intent.service, revision=intent.revision or "?"),
                    confirm="Do it",
                    deny="Cancel",
                ),
            )
        )
    return ActionsBlock(block_id=BLOCK_ID, elements=buttons) if buttons else None
