"""The dedup stage: exactly one message per event (docs/notify.md, "Exactly one message
per event").

The runtime's receipt (``_model.dedupe_key``) makes a redelivery of a committed event a
duplicate. What it cannot see is a Slack post that succeeded under a transaction that
did not commit: for one-message events a Redis *sent-marker* ``sent:<route>:<key>`` is
written right after Slack answers, and a redelivery that finds it records the action
without posting again. Group messages are recorded in their own transaction under a
dedupe key (:func:`record_notification`), so a retried record is a no-op.
"""

from __future__ import annotations

from typing import Any

import redis

from shared.cache import RedisOutageGuard
from shared.db import transaction
from shared.notify._model import Notice
from shared.notify._route import ResolvedRoute
from shared.runtime import Deps, write_action


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
