"""The dedup stage: exactly one message per event (docs/notify.md, "Exactly one message
per event").

The runtime's receipt (``_model.dedupe_key``) makes a redelivery of a committed event a
duplicate. What it cannot see is a Slack post that succeeded under a transaction that
did not commit: for one-message events a Redis *sent-marker* ``sent:<route>:<key>`` is
written right after Slack answers, and a redelivery that finds it records the action
without posting again. Group messages are recorded in their own transaction under a
dedupe key (:func:`record_notification`), so a retried record is a no-op.

Budget notifications need more than a receipt: Cloud Billing re-sends the same state
several times a day for a whole month, longer than receipts are kept. Each threshold
crossing is claimed once in ``ops.actions`` (:func:`claim_budget_crossing`), in the
delivery's transaction, so a post that fails rolls the claim back with it.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

import redis

from shared.cache import RedisOutageGuard
from shared.db import transaction
from shared.notify._model import Notice
from shared.notify._route import ResolvedRoute
from shared.runtime import Deps, write_action

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shared.events import BudgetNotification

#: The highest threshold already claimed for this budget, period and basis. Bounded by
#: kind and time (ix_actions_kind_started_at): every claim of a period is made after it
#: started.
_CLAIMED = (
    "SELECT max(CAST(detail->>'threshold' AS double precision)) FROM ops.actions"
    " WHERE kind = 'budget' AND started_at >= :period"
    " AND detail->>'budget_id' = :budget AND detail->>'period' = :period_text"
    " AND detail->>'basis' = :basis"
)


class SentMarkers:
    """Sent-markers for one prefix; a Redis outage reads as "not sent" (at-least-once
    beats lost) and opens the notifier's outage window."""

    def __init__(
        self, client: redis.Redis, prefix: str, ttl_s: int, guard: RedisOutageGuard
    ) -> None:
        self._r = client
        self._prefix = prefix
        self._ttl_s = ttl_s
        self._guard = guard

    def key(self, route: ResolvedRoute, notice: Notice) -> str:
        return f"{self._prefix}sent:{route.name}:{notice.key}"

    def already_sent(self, marker: str) -> bool:
        return self._guard.call(lambda: bool(self._r.exists(marker)), default=False)

    def mark_sent(self, marker: str) -> None:
        self._guard.call(lambda: self._r.set(marker, "1", ex=self._ttl_s), default=None)


def record_notification(
    deps: Deps,
    status: str,
    service: str | None,
    trigger: str | None,
    dedupe_key: str | None,
    detail: dict[str, Any],
) -> None:
    """An ``ops.actions`` row in its own transaction: for what happened regardless of the
    delivery's outcome (a group message, a permanent failure)."""
    with transaction(deps.engine) as conn:
        write_action(
            conn,
            kind="notification",
            status=status,
            now=deps.clock(),
            service=service,
            trigger_event_id=trigger,
            dedupe_key=dedupe_key,
            detail=detail,
            on_conflict="ignore",
            returning=False,
        )


def claim_budget_crossing(
    conn: Connection, notification: BudgetNotification, now: datetime
) -> str | None:
    """Claim the threshold this notification crossed; None when it is news (claimed now),
    else why it is not: already claimed (a re-send), or a higher threshold of the same
    period already was (a late delivery of an older state)."""
    from sqlalchemy import text

    crossing = notification.crossing
    if crossing is None:
        return "below every threshold"
    basis, threshold = crossing
    period = notification.cost_interval_start
    period_text = period.strftime("%Y-%m-%dT%H:%M:%SZ")
    highest = conn.execute(
        text(_CLAIMED),
        {
            "period": period,
            "budget": notification.budget_id,
            "period_text": period_text,
            "basis": basis,
        },
    ).scalar_one()
    if highest is not None and highest > threshold:
        return f"{highest:.0%} of this budget was already notified for the period"
    row = write_action(
        conn,
        kind="budget",
        status="exceeded" if basis == "actual" else "forecast",
        now=now,
        dedupe_key=notification.crossing_key(),
        on_conflict="ignore",
        detail={
            "budget_id": notification.budget_id,
            "budget": notification.budget_display_name,
            "period": period_text,
            "basis": basis,
            "threshold": threshold,
            "cost": notification.cost_amount,
            "budget_amount": notification.budget_amount,
            "currency": notification.currency_code,
        },
    )
    if row is None:
        return f"{threshold:.0%} of this budget was already notified for the period"
    return None
