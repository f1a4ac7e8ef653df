"""The CLI adapter: ``sightops rollback`` and ``sightops revisions --mark-*``.

No Pub/Sub delivery here, and none is faked: the orchestrator gets a connection of its
own transaction, a recorder bound to it and to a fresh trigger id, and the operator as
actor (docs/rollback.md, "Manual commands").
"""

from __future__ import annotations

import uuid

from shared.db import transaction
from shared.rollback import _store as store
from shared.rollback._model import Health, Trigger
from shared.rollback._orchestrator import Report, Rollbacks
from shared.runtime import Deps

#: The ``source`` of the events the CLI publishes.
CLI_SOURCE = "sightops-cli"


def manual_rollback(
    deps: Deps,
    service: str,
    *,
    to: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    actor: str = "manual",
    region: str | None = None,
) -> Report:
    """``sightops rollback``: the same checks as the function (``force`` skips health and
    migration checks), recorded with ``actor`` and published with ``manual: true``."""
    trigger_id = str(uuid.uuid4())
    with transaction(deps.engine) as conn:
        record = store.action_recorder(conn, trigger_id, deps.clock)
        rollbacks = Rollbacks(deps, conn, record, actor=actor, source=CLI_SOURCE)
        trigger = Trigger(
            kind="manual",
            service=service,
            event_id=trigger_id,
            evidence_time=deps.clock(),
            target=to,
            force=force,
        )
        return rollbacks.run(
            trigger,
            region,
            dry_run=dry_run or deps.settings.rollback.dry_run,
            trigger_key=f"sightops:{trigger_id}",
        )


def manual_mark(
    deps: Deps, service: str, revision: str, health: Health, reason: str, actor: str
) -> bool:
    """``sightops revisions S --mark-good/--mark-bad R``: an operator's word, as of now."""
    trigger_id = str(uuid.uuid4())
    with transaction(deps.engine) as conn:
        record = store.action_recorder(conn, trigger_id, deps.clock)
        rollbacks = Rollbacks(deps, conn, record, actor=actor, source=CLI_SOURCE)
        store.lock_service(conn, service, deps.settings.rollback.lock_wait_s)
        return rollbacks.mark(service, revision, health, reason, deps.clock())
