"""The command that undoes a release's last decision, as an operator types it (pure).

The console shows it on the release's page, exactly: ``sightops rollback``,
``sightops canary rollback`` and ``sightops revisions --mark-good`` run the same code as the
functions and record the operator (docs/rollback.md "Manual commands", docs/canary.md).
Every value is shell-quoted (``shlex.quote``): names come from the ledger, and a page must
never hand out a command that does more than it says.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from shared.console._queries import ActionRow, ReleaseStory

_TRAFFIC_KINDS = ("release", "rollback", "freeze", "escalation", "canary")


@dataclass(frozen=True)
class Undo:
    """What undoing means for this release: a command (None: nothing to undo) and why."""

    command: str | None
    explanation: str
    then: str | None = None  # a second command worth knowing (e.g. clear a health mark)


def sightops(*args: str) -> str:
    return " ".join(["sightops", *(shlex.quote(a) for a in args)])


def _live(action: ActionRow) -> bool:
    return action.kind in _TRAFFIC_KINDS and str(action.detail.get("dry_run")).lower() != "true"


def undo_for(story: ReleaseStory) -> Undo:
    """Judged on the release's newest traffic decision (release, rollback, freeze,
    escalation or canary row)."""
    decisions = [a for a in story.actions if _live(a)]
    service = story.service
    if not decisions or service is None:
        if any(a.kind == "migration" and a.status == "succeeded" for a in story.actions):
            return Undo(
                None,
                "Only a migration ran. Migrations go forward in production: write a new "
                "migration that reverts it (docs/migrate.md).",
            )
        return Undo(None, "Nothing of this release moved traffic: there is nothing to undo.")
    last = decisions[-1]
    detail = last.detail
    if story.canary is not None and last.kind == "canary":
        return _canary_undo(story, service)
    if last.kind == "rollback" and last.status == "succeeded":
        moved_from = _text(detail.get("from"))
        if not moved_from:
            return Undo(None, "The rollback names no revision it moved traffic from.")
        return Undo(
            sightops("rollback", service, "--to", moved_from, "--force"),
            f"Sends 100 % of the traffic back to {moved_from}, the revision the rollback "
            "moved it away from. The rollback marked it bad, so --force skips the health "
            "check; do this only when the rollback was a false alarm.",
            then=sightops(
                "revisions", service, "--mark-good", moved_from, "--reason", "false alarm"
            ),
        )
    if last.kind in {"freeze", "escalation"}:
        target = _text(detail.get("to"))
        command = (
            sightops("rollback", service, "--to", target, "--force")
            if target and last.kind == "freeze"
            else sightops("rollback", service)
        )
        why = (
            "A breaking migration was applied after the older revision was deployed"
            if last.kind == "freeze"
            else "Automatic rollbacks stopped (the anti-flap cap, or no safe target)"
        )
        return Undo(
            command,
            f"{why}, so traffic was not moved and there is nothing to undo. If a human decides "
            "to roll back anyway (the schema is known to be compatible), this is the command.",
        )
    if last.kind == "rollback":
        return Undo(None, f"The rollback was {last.status}: it moved no traffic.")
    if last.kind == "release" and last.status == "promoted":
        previous = _text(detail.get("previous_revision"))
        args = ["rollback", service] + (["--to", previous] if previous else [])
        region = _text(detail.get("region"))
        if region:
            args += ["--region", region]
        where = previous or "the newest known-good revision"
        return Undo(
            sightops(*args),
            f"Moves 100 % of the traffic back to {where} (the same checks as the rollback "
            "function; recorded as manual).",
        )
    return Undo(
        None,
        f"The release is {last.status}: no traffic was moved to it, so there is nothing to undo.",
    )


def _canary_undo(story: ReleaseStory, service: str) -> Undo:
    canary = story.canary
    assert canary is not None
    if canary.status in {"running", "held"}:
        return Undo(
            sightops("canary", "rollback", service),
            f"Ends the canary: {canary.stable_revision or 'the stable revision'} serves 100 % "
            f"again and {canary.revision} is marked bad.",
        )
    if canary.status == "frozen":
        return Undo(
            sightops("canary", "rollback", service, "--force"),
            "A breaking migration was applied since the canary started, so it moved nothing. "
            "--force rolls back anyway: only when the schema is known to be compatible.",
        )
    if canary.status == "promoted" and canary.stable_revision:
        return Undo(
            sightops("rollback", service, "--to", canary.stable_revision),
            f"The canary promoted {canary.revision}; this moves 100 % back to "
            f"{canary.stable_revision}, the revision that served before it.",
        )
    return Undo(
        None,
        f"The canary is {canary.status.replace('_', ' ')}: "
        f"{canary.stable_revision or 'the stable revision'} serves, nothing is left to undo.",
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
