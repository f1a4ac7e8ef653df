"""The group stage: alerts into groups, and a group's message when it falls due
(Alertmanager's dispatcher and DedupStage, without timers; docs/notify.md, "Grouping in a
stateless, push-triggered function").

The delivery that opens a group, or finds its group pending with nobody responsible for
it, takes the group's *timer lease* and waits in-process (at most ``inline_wait_max_s``)
until the group falls due, flushes it, and only then acknowledges. A group due later
than that is handed to Pub/Sub: the holder answers 503 and its redelivery comes back as
the timer (or, with ``scheduled_flush``, answers 200 and ``notify_flush`` sends it).
Every delivery, once its own message is out, also flushes other groups that are due,
within a small time budget and never past a transient failure.

This stage decides *what* a group message says (:func:`needs_update`, an
:class:`AlertGroupView`); rendering and sending it are later stages, handed in by the
pipeline as ``send``. State lives in :class:`GroupStore` (``_group_store.py``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import redis

from shared.cache import RedisOutageGuard
from shared.errors import SightOpsError, TransientError
from shared.events import IncidentNotification
from shared.notify._config import NotifyFileConfig
from shared.notify._dedup import record_notification
from shared.notify._group_store import GroupStore, Snapshot
from shared.notify._model import AlertEntry, AlertGroupView, Notice, alert_entry
from shared.notify._route import ResolvedRoute, Router
from shared.runtime import Context, Deps

logger = logging.getLogger("sightops.notify")

#: A flush lock outlives the slowest Slack post we allow (retries included).
FLUSH_LOCK_S = 30.0
#: Groups flushed opportunistically per delivery (and within ``flush_due_budget_s``).
FLUSH_BATCH = 10
#: After a transient failure while flushing other groups (Slack down or throttling),
#: deliveries skip that opportunistic flush this long: each would only wait out the same
#: timeouts. Holders still flush their own group; the scheduled flush is never skipped.
FLUSH_COOL_OFF_S = 10.0
_POLL_S = 0.1

#: Render and deliver one group message to a route: ``sent`` or ``logged``, or one of
#: our errors (the pipeline wires the later stages in).
SendGroup = Callable[[ResolvedRoute, AlertGroupView], str]


def needs_update(
    firing: set[str],
    resolved: set[str],
    notified: frozenset[str],
    last_notify: float,
    repeat_interval: float,
    now: float,
) -> str | None:
    """Why a flush sends a message, or None (Alertmanager's DedupStage.needsUpdate).

    Resolved alerts leave the group once a message has shown them, so any resolved
    alert still in the group is one the channel has not been told about.
    """
    if last_notify == 0 or not notified:
        return "first notification" if firing else None
    if not firing <= notified:
        return "new alerts in group"
    if not firing:
        return "all alerts resolved"
    if resolved:
        return "alerts resolved"
    if last_notify + repeat_interval <= now:
        return "repeat interval elapsed"
    return None


def group_labels(notice: Notice, entry: AlertEntry, group_by: tuple[str, ...]) -> dict[str, str]:
    """The labels an alert is grouped by (``group_by``), each empty when unknown."""
    event = notice.event
    assert isinstance(event, IncidentNotification)
    incident = event.incident
    values = {
        "policy_name": entry.policy,
        "service": entry.service or "",
        "severity": entry.severity,
        "condition_name": entry.condition or "",
        "resource_type": incident.resource.type if incident.resource else "",
        "project": incident.scoping_project_id or "",
    }
    return {label: values.get(label) or "" for label in group_by}


class Grouper:
    """Alerts into groups and due groups out, for one notifier."""

    def __init__(
        self,
        deps: Deps,
        config: NotifyFileConfig,
        router: Router,
        store: GroupStore,
        guard: RedisOutageGuard,
        send: SendGroup,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deps, self.config, self.router = deps, config, router
        self.store, self.guard = store, guard
        self._send, self._sleep = send, sleep
        self.settings = deps.settings.notify  # inline wait, scheduled flush, flush budget
        self._flush_paused_until = 0.0

    def now(self) -> float:
        return self.deps.clock().timestamp()

    # ---- alerts in ---------------------------------------------------------------------
    def add(self, notice: Notice, route: ResolvedRoute, ctx: Context) -> str | None:
        """Append the alert to its group (and be the group's timer if nobody is); None
        when Redis cannot group it: the caller sends it on its own."""
        event = notice.event
        assert isinstance(event, IncidentNotification)
        entry = alert_entry(event, self.config)
        labels = group_labels(notice, entry, route.grouping.group_by)
        if not self.guard.usable():
            logger.warning(
                "notify: redis unavailable; incident %s sent on its own", entry.incident_id
            )
            return None
        try:
            appended = self.store.append(
                route.name,
                labels,
                entry,
                route.grouping,
                self.now(),
                timer_ttl_s=self.settings.inline_wait_max_s + FLUSH_LOCK_S + 5,
            )
        except redis.RedisError as exc:
            self.guard.failed(exc)
            logger.warning(
                "notify: redis unavailable; incident %s sent on its own", entry.incident_id
            )
            return None
        if appended.status == "stale":
            return f"incident {entry.incident_id} already closed; late open ignored"
        ctx.record_action(
            "notification",
            "grouped",
            service=notice.service,
            detail={
                "route": route.name,
                "group": appended.gid,
                "incident_id": entry.incident_id,
                "state": entry.state,
                "labels": labels,
            },
        )
        if not appended.holder:
            return f"grouped into {appended.gid}"
        try:
            return self._hold_timer(appended.gid, appended.timer_token)
        except redis.RedisError as exc:
            self.guard.failed(exc)
            logger.warning(
                "notify: redis failed while group %s was pending; incident %s sent on its own",
                appended.gid,
                entry.incident_id,
            )
            return None

    def _hold_timer(self, gid: str, token: str) -> str:
        """Be the group's timer: wait until it is due, flush, acknowledge only then."""
        try:
            return self._run_timer(gid, token)
        except BaseException:
            with contextlib.suppress(redis.RedisError):  # else the lease expires by itself
                self.store.release_timer(gid, token)
            raise

    def _run_timer(self, gid: str, token: str) -> str:
        deadline = time.monotonic() + self.settings.inline_wait_max_s
        flushes = 0
        while True:
            due = self.store.due_at(gid)
            if due is None:
                if self.store.release_timer_if_idle(gid, token):
                    return f"group {gid} flushed ({flushes} by this delivery)"
                continue
            wait = due - self.now()
            left = deadline - time.monotonic()
            if wait > left and self.settings.scheduled_flush:
                self.store.release_timer(gid, token)
                return f"group {gid} due in {wait:.0f}s; the scheduled flush sends it"
            if wait > left and left <= 0:
                raise _redelivery_is_the_timer(gid, wait, self.settings.inline_wait_max_s)
            if wait > 0:
                # Waiting out the whole budget first stretches Pub/Sub's retry budget.
                self._sleep(max(0.0, min(wait, left, _POLL_S * 5)))
            elif self.flush(gid) == "flushed":
                flushes += 1
            else:
                self._sleep(_POLL_S)

    # ---- groups out --------------------------------------------------------------------
    def flush(self, gid: str) -> str:
        """Flush one group under its lock: decide, send (render, deliver), commit."""
        token = self.store.lock(gid, FLUSH_LOCK_S)
        if token is None:
            return "locked"
        try:
            if not self.store.is_due(gid, self.now()):
                return "not due"
            snap = self.store.snapshot(gid)
            if snap is None:
                self.store.drop(gid)  # a due entry whose group expired: nothing to lose
                return "gone"
            route = self.router.named(snap.route)
            now = self.now()
            firing, resolved = snap.firing, snap.resolved
            reason = needs_update(
                {a.incident_id for a in firing},
                {a.incident_id for a in resolved},
                snap.notified,
                snap.last_notify,
                route.grouping.repeat_interval,
                now,
            )
            resolved_ids = [a.incident_id for a in resolved]
            if reason is None:
                self.store.commit(
                    snap, now, route.grouping, sorted(snap.notified), False, resolved_ids
                )
                return "nothing new"
            view = AlertGroupView(snap.labels, tuple(firing), tuple(resolved), reason)
            try:
                status = self._send(route, view)
            except SightOpsError as exc:
                if exc.retryable:
                    raise
                # The webhook can never take it: drop the group, and record every alert
                # that goes with it, those appended while the message was being sent too.
                dropped = self.store.drop(gid)
                late = sorted(
                    iid for iid, entry in dropped.items() if snap.alerts.get(iid) != entry
                )
                self._record_flush(
                    snap, route, "failed", reason, firing, resolved, now, str(exc), late
                )
                raise
            self._record_flush(snap, route, status, reason, firing, resolved, now)
            self.store.commit(
                snap, now, route.grouping, [a.incident_id for a in firing], True, resolved_ids
            )
            return "flushed"
        finally:
            with contextlib.suppress(redis.RedisError):  # else it expires by itself
                self.store.unlock(gid, token)

    def flush_some_due(self) -> int:
        """A delivery's opportunistic flush of other groups: at most ``FLUSH_BATCH``, a new
        one started only within ``flush_due_budget_s``, and none for a while after a
        transient failure, so a slow or down Slack cannot hold every delivery."""
        if time.monotonic() < self._flush_paused_until:
            return 0
        return self.flush_due(FLUSH_BATCH, budget_s=self.settings.flush_due_budget_s)

    def flush_due(self, limit: int = FLUSH_BATCH, *, budget_s: float | None = None) -> int:
        """Flush groups that are due; never raises (they stay pending for the next try).

        Stops at the first transient failure: the next group would wait out the same
        Slack timeouts and retries. With ``budget_s``, no group is started once that much
        time has passed (the first always is, so a backlog still drains).
        """
        if not self.guard.usable():
            return 0
        started = time.monotonic()
        try:
            gids = self.store.due_groups(self.now(), limit)
        except redis.RedisError as exc:
            self.guard.failed(exc)
            return 0
        flushed = 0
        for n, gid in enumerate(gids):
            if n and budget_s is not None and time.monotonic() - started >= budget_s:
                logger.info(
                    "notify: flush budget of %.1fs used; %d due group(s) left for later",
                    budget_s,
                    len(gids) - n,
                )
                break
            try:
                if self.flush(gid) == "flushed":
                    flushed += 1
            except (TransientError, redis.RedisError) as exc:
                if isinstance(exc, redis.RedisError):
                    self.guard.failed(exc)
                self._flush_paused_until = time.monotonic() + FLUSH_COOL_OFF_S
                logger.warning(
                    "notify: flushing group %s failed transiently (%s); %d due group(s) "
                    "left for later",
                    gid,
                    exc,
                    len(gids) - n,
                )
                break
            except Exception as exc:
                logger.warning("notify: flushing group %s failed: %s", gid, exc)
        return flushed

    def _record_flush(
        self,
        snap: Snapshot,
        route: ResolvedRoute,
        status: str,
        reason: str,
        firing: list[AlertEntry],
        resolved: list[AlertEntry],
        flushed_at: float,
        error: str | None = None,
        dropped_late: list[str] | None = None,
    ) -> None:
        detail: dict[str, Any] = {
            "route": route.name,
            "group": snap.gid,
            "labels": snap.labels,
            "reason": reason,
            "flushed_at": flushed_at,
            "firing": [a.incident_id for a in firing],
            "resolved": [a.incident_id for a in resolved],
        }
        if error:
            detail["error"] = error
        if dropped_late:
            # Appended (or changed) while the failed message was being sent: never shown,
            # dropped with the group.
            detail["dropped_unsent"] = dropped_late
        service = snap.labels.get("service") or (firing or resolved)[0].service
        try:
            record_notification(
                self.deps,
                status,
                service,
                snap.gid,
                f"notify:{route.name}:{snap.gid}:{snap.created}:{snap.seq}",
                detail,
            )
        except Exception:  # the message went out; do not resend it for the audit row
            logger.exception("notify: could not record group message %s", snap.gid)


def _redelivery_is_the_timer(gid: str, wait: float, budget: float) -> TransientError:
    return TransientError(
        f"group {gid} is due in {wait:.1f}s, beyond this delivery's {budget:.0f}s wait; "
        "redelivery is its timer"
    )
