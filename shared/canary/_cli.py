"""The CLI adapter: ``sightops canary status|tick|promote|rollback``.

No Pub/Sub delivery here, and none is faked: the orchestrator gets a connection of its
own transaction (holding the service lock until the command ends) and the operator as
actor; the decisions are the function's, through the same :class:`Canaries`
(docs/canary.md, "The function").
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from shared.canary._orchestrator import Canaries, Report
from shared.canary._store import CanaryRow
from shared.db import transaction
from shared.events import CanaryTick
from shared.runtime import Deps

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

#: The ``source`` of the events the CLI publishes.
CLI_SOURCE = "sightops-cli"


def _canaries(deps: Deps, conn: Connection, actor: str) -> Canaries:
    return Canaries(
        deps,
        conn,
        actor=actor,
        source=CLI_SOURCE,
        trigger_event_id=str(uuid.uuid4()),
    )


def canary_status(deps: Deps, service: str | None = None) -> list[CanaryRow]:
    """The newest canaries (of ``service``), active ones first."""
    with transaction(deps.engine) as conn:
        return Canaries(deps, conn).status(service)


def manual_tick(deps: Deps, service: str | None = None, region: str | None = None) -> Report:
    """One analysis now, as a tick would (the automation decides: actor ``automation``)."""
    with transaction(deps.engine) as conn:
        canaries = Canaries(deps, conn, source=CLI_SOURCE, trigger_event_id=str(uuid.uuid4()))
        return canaries.tick(CanaryTick(service=service, region=region))


def manual_promote(deps: Deps, service: str, *, actor: str) -> Report:
    """100 % to the active canary of ``service`` now, recorded as ``actor``."""
    with transaction(deps.engine) as conn:
        return _canaries(deps, conn, actor).promote_now(service)


def manual_rollback(deps: Deps, service: str, *, actor: str, force: bool = False) -> Report:
    """100 % back to the stable revision now (frozen after a breaking migration unless
    ``force``), recorded as ``actor``."""
    with transaction(deps.engine) as conn:
        return _canaries(deps, conn, actor).rollback_now(service, force=force)
