"""The notify pipeline, Alertmanager's stages kept apart from the integrations:

    filter -> route -> dedup -> group -> render -> deliver (retry)

- filter: which builds (status, trigger) and which of our event types are worth a message;
- route: ordered routes by kind, type, severity and service (first match wins unless
  ``continue``), each naming a webhook reference and grouping settings;
- dedup: the runtime receipt (one delivery per build status / ops event / incident
  state) plus a Redis sent-marker per (route, event) that covers the gap between a Slack
  post that succeeded and a database commit that did not;
- group: alerts only (``_group.py``); builds and ops events are one message each;
- render: ``_render.py`` (pure); deliver: ``_send.py`` (Slack or the log).

Grouping without timers (docs/notify.md): the delivery that opens a group, or finds its
group pending with nobody responsible for it, takes the group's *timer lease* and waits
in-process (at most ``inline_wait_max_s``) until the group falls due, flushes it, and
only then acknowledges. A group due later than that is handed to Pub/Sub: the holder
answers 503 and its redelivery comes back as the timer. Every delivery, once its own
message is out, also flushes other groups that are due, within a small time budget and
never past a transient failure (a Slack outage must not cost every delivery its whole
timeout); ``notify_flush`` / ``sightops notify flush`` flush every due group on a
schedule (repeat reminders). With Redis down every alert is sent on its own.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import redis

from shared.db import transaction
from shared.errors import PermanentError, SightOpsError, TransientError
from shared.events import Build, EventType, IncidentNotification, OpsEvent
from shared.notify._config import Grouping, Match, NotifyFileConfig, load_config
from shared.notify._group import GroupSettings, GroupStore, Snapshot, needs_update
from shared.notify._model import Notice
from shared.notify._render import (
    AlertEntry,
    AlertGroupView,
    SlackMessage,
    alert_entry,
    render_alert_group,
    render_build,
    render_incident,
    render_ops,
)
from shared.notify._send import Integration, integration_for
from shared.runtime import Context, Deps, Outcome, write_action

logger = logging.getLogger("sightops.notify")

#: A flush lock outlives the slowest Slack post we allow (retries included).
FLUSH_LOCK_S = 30.0
#: Groups flushed opportunistically per delivery (and within ``flush_due_budget_s``).
FLUSH_BATCH = 10
#: After a Redis error, skip Redis this long: a dead Redis must not cost every
#: delivery the client's connect retries.
REDIS_COOL_OFF_S = 10.0
#: After a transient failure while flushing other groups (Slack down or throttling),
#: deliveries skip that opportunistic flush this long: each would only wait out the same
#: timeouts. Holders still flush their own group; the scheduled flush is never skipped.
FLUSH_COOL_OFF_S = 10.0
_POLL_S = 0.1


@dataclass(frozen=True)
class ResolvedRoute:
    name: str
    match: Match
    integration: Integration
    grouping: GroupSettings
    continue_: bool = False


def _group_settings(grouping: Grouping) -> GroupSettings:
    assert grouping.group_by is not None
    assert grouping.group_wait is not None
    assert grouping.group_interval is not None
    assert grouping.repeat_interval is not None
    return GroupSettings(
        grouping.group_by, grouping.group_wait, grouping.group_interval, grouping.repeat_interval
    )


def matches(match: Match, notice: Notice) -> bool:
    """An empty criterion matches anything; all given criteria must match."""
    if match.kinds and notice.kind not in match.kinds:
        return False
    if match.types and not any(fnmatchcase(notice.type, p) for p in match.types):
        return False
    if match.severities and notice.severity not in match.severities:
        return False
    return not (match.services and (notice.service or "") not in match.services)


class Notifier:
    """One per Deps (process): the configured pipeline."""

    def __init__(
        self,
        deps: Deps,
        config: NotifyFileConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.deps = deps
        self.config = config
        self._sleep = sleep
        ns = deps.settings.notify
        self.inline_wait_max_s = ns.inline_wait_max_s
        self.scheduled_flush = ns.scheduled_flush
        self.flush_due_budget_s = ns.flush_due_budget_s
        base = config.grouping.merged(
            Grouping(
                group_by=("policy_name", "service"),
                group_wait=ns.group_wait_s,
                group_interval=ns.group_interval_s,
                repeat_interval=ns.repeat_interval_s,
            )
        )
        self.routes = [
            ResolvedRoute(
                r.name,
                r.match,
                integration_for(deps, r.webhook),
                _group_settings(r.grouping.merged(base)),
                r.continue_,
            )
            for r in config.routes
        ]
        self.default = ResolvedRoute(
            "default", Match(), integration_for(deps, config.default_webhook), _group_settings(base)
        )
        self.store = GroupStore(deps.redis, ns.redis_prefix, ns.state_ttl_s)
        self._redis_down_until = 0.0
        self._flush_paused_until = 0.0

    # ---- redis health --------------------------------------------------------------
    def redis_usable(self) -> bool:
        return time.monotonic() >= self._redis_down_until

    def redis_failed(self, exc: Exception) -> None:
        if self.redis_usable():
            logger.warning(
                "notify: redis unavailable (%s); alerts are sent ungrouped for %.0fs",
                type(exc).__name__,
                REDIS_COOL_OFF_S,
            )
        self._redis_down_until = time.monotonic() + REDIS_COOL_OFF_S

    # ---- clock ---------------------------------------------------------------------
    def now(self) -> float:
        return self.deps.clock().timestamp()

    # ---- filter and route ------------------------------------------------------------
    def skip_reason(self, notice: Notice) -> str | None:
        """Why a notice is not worth a message (None: it is)."""
        filters = self.config.filters
        event = notice.event
        if isinstance(event, Build):
            if event.status not in filters.builds.statuses:
                return f"build status {event.status.value} is filtered out"
            selector = filters.builds.triggers
            if not selector.is_empty and not selector.selects(event):
                return f"build {event.id} is not from a selected trigger"
            return None
        if isinstance(event, OpsEvent):
            if not any(fnmatchcase(notice.type, p) for p in filters.ops_types):
                return f"{notice.type} is not notified"
            if event.type is EventType.MIGRATION_SKIPPED and not filters.migration_skipped:
                return "migration skips are recorded, not posted (filters.migration_skipped)"
            return None
        if notice.type == "alert.test" and not filters.alert_test_notifications:
            return "test notifications are filtered out"
        return None

    def route(self, notice: Notice) -> list[ResolvedRoute]:
        """Matching routes in order; the default route when none matches."""
        chosen: list[ResolvedRoute] = []
        for route in self.routes:
            if matches(route.match, notice):
                chosen.append(route)
                if not route.continue_:
                    break
        return chosen or [self.default]

    def route_named(self, name: str) -> ResolvedRoute:
        for route in self.routes:
            if route.name == name:
                return route
        return self.default

    # ---- render --------------------------------------------------------------------
    def render(self, notice: Notice) -> SlackMessage:
        event = notice.event
        if isinstance(event, Build):
            return render_build(event, self.config.templates)
        if isinstance(event, IncidentNotification):
            return render_incident(event, self.config)
        return render_ops(event, self.config)

    # ---- the handler -----------------------------------------------------------------
    def handle(self, notice: Notice, ctx: Context) -> Outcome:
        """Deliver the notice, then (its own message out first) flush other due groups."""
        outcome = self._deliver(notice, ctx)
        self.flush_some_due()
        return outcome

    def _deliver(self, notice: Notice, ctx: Context) -> Outcome:
        skip = self.skip_reason(notice)
        if skip:
            return Outcome.skipped(skip, **notice.log_fields())
        routes = self.route(notice)
        grouped = notice.type in {"alert.open", "alert.closed"}
        results: list[str] = []
        failures: list[str] = []
        for route in routes:
            try:
                if grouped:
                    results.append(f"{route.name}: {self._group(notice, route, ctx)}")
                else:
                    results.append(f"{route.name}: {self._send_one(notice, route, ctx)}")
            except SightOpsError as exc:
                # One route that can never succeed (a 404/410 webhook, a secret that cannot
                # be read) must not make the others post again on redelivery.
                if exc.retryable:
                    raise
                failures.append(f"{route.name}: {exc}")
        if failures and not results:
            raise PermanentError("; ".join(failures))
        if failures:
            logger.error("notify: some routes failed permanently: %s", "; ".join(failures))
        return Outcome.handled(
            "; ".join(results + [f"FAILED {f}" for f in failures]),
            routes=[r.name for r in routes],
            **notice.log_fields(),
        )

    # ---- one message per event -------------------------------------------------------
    def _marker(self, route: ResolvedRoute, notice: Notice) -> str:
        return f"{self.store.prefix}sent:{route.name}:{notice.key}"

    def _already_sent(self, marker: str) -> bool:
        if not self.redis_usable():
            return False
        try:
            return bool(self.deps.redis.exists(marker))
        except redis.RedisError as exc:
            self.redis_failed(exc)
            return False

    def _mark_sent(self, marker: str) -> None:
        if not self.redis_usable():
            return
        try:
            self.deps.redis.set(marker, "1", ex=self.deps.settings.notify.state_ttl_s)
        except redis.RedisError as exc:
            self.redis_failed(exc)

    def _send_one(
        self, notice: Notice, route: ResolvedRoute, ctx: Context, *, fallback: bool = False
    ) -> str:
        detail = {"route": route.name, "notice_type": notice.type, "key": notice.key}
        detail.update(_ids(notice))
        if fallback:
            detail["ungrouped"] = "redis unavailable"
        marker = self._marker(route, notice)
        if self._already_sent(marker):
            # Slack took it but the earlier delivery's commit did not: record, do not resend.
            ctx.record_action(
                "notification",
                "sent",
                service=notice.service,
                detail={**detail, "note": "delivered by an earlier attempt"},
            )
            return "already sent"
        try:
            status = route.integration.notify(self.render(notice))
        except SightOpsError as exc:
            if exc.retryable:
                raise
            record_action(
                self.deps,
                "failed",
                notice.service,
                ctx.message.event_id,
                None,
                {**detail, "error": str(exc)},
            )
            raise
        if status == "sent":
            self._mark_sent(marker)
        ctx.record_action("notification", status, service=notice.service, detail=detail)
        return status

    # ---- alerts: grouping ------------------------------------------------------------
    def _labels(
        self, notice: Notice, entry: AlertEntry, group_by: tuple[str, ...]
    ) -> dict[str, str]:
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

    def _group(self, notice: Notice, route: ResolvedRoute, ctx: Context) -> str:
        event = notice.event
        assert isinstance(event, IncidentNotification)
        entry = alert_entry(event, self.config)
        labels = self._labels(notice, entry, route.grouping.group_by)
        if not self.redis_usable():
            logger.warning(
                "notify: redis unavailable; incident %s sent on its own", entry.incident_id
            )
            return self._send_one(notice, route, ctx, fallback=True)
        try:
            appended = self.store.append(
                route.name,
                labels,
                entry,
                route.grouping,
                self.now(),
                timer_ttl_s=self.inline_wait_max_s + FLUSH_LOCK_S + 5,
            )
        except redis.RedisError as exc:
            self.redis_failed(exc)
            logger.warning(
                "notify: redis unavailable; incident %s sent on its own", entry.incident_id
            )
            return self._send_one(notice, route, ctx, fallback=True)
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
            self.redis_failed(exc)
            logger.warning(
                "notify: redis failed while group %s was pending; incident %s sent on its own",
                appended.gid,
                entry.incident_id,
            )
            return self._send_one(notice, route, ctx, fallback=True)

    def _hold_timer(self, gid: str, token: str) -> str:
        """Be the group's timer: wait until it is due, flush, acknowledge only then."""
        try:
            return self._run_timer(gid, token)
        except BaseException:
            with contextlib.suppress(redis.RedisError):  # else the lease expires by itself
                self.store.release_timer(gid, token)
            raise

    def _run_timer(self, gid: str, token: str) -> str:
        deadline = time.monotonic() + self.inline_wait_max_s
        flushes = 0
        while True:
            due = self.store.due_at(gid)
            if due is None:
                if self.store.release_timer_if_idle(gid, token):
                    return f"group {gid} flushed ({flushes} by this delivery)"
                continue
            wait = due - self.now()
            left = deadline - time.monotonic()
            if wait > left and self.scheduled_flush:
                self.store.release_timer(gid, token)
                return f"group {gid} due in {wait:.0f}s; the scheduled flush sends it"
            if wait > left and left <= 0:
                raise _redelivery_is_the_timer(gid, wait, self.inline_wait_max_s)
            if wait > 0:
                # Waiting out the whole budget first stretches Pub/Sub's retry budget.
                self._sleep(max(0.0, min(wait, left, _POLL_S * 5)))
            elif self.flush(gid) == "flushed":
                flushes += 1
            else:
                self._sleep(_POLL_S)

    def flush(self, gid: str) -> str:
        """Flush one group under its lock: decide, render, deliver, commit."""
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
            route = self.route_named(snap.route)
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
                status = route.integration.notify(render_alert_group(view, self.config))
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
        return self.flush_due(FLUSH_BATCH, budget_s=self.flush_due_budget_s)

    def flush_due(self, limit: int = FLUSH_BATCH, *, budget_s: float | None = None) -> int:
        """Flush groups that are due; never raises (they stay pending for the next try).

        Stops at the first transient failure: the next group would wait out the same
        Slack timeouts and retries. With ``budget_s``, no group is started once that much
        time has passed (the first always is, so a backlog still drains).
        """
        if not self.redis_usable():
            return 0
        started = time.monotonic()
        try:
            gids = self.store.due_groups(self.now(), limit)
        except redis.RedisError as exc:
            self.redis_failed(exc)
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
                    self.redis_failed(exc)
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
            record_action(
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


def _ids(notice: Notice) -> dict[str, str]:
    event = notice.event
    if isinstance(event, Build):
        return {"build_id": event.id, "build_status": event.status.value}
    if isinstance(event, IncidentNotification):
        return {"incident_id": event.incident.incident_id, "state": event.incident.state or ""}
    return {"event_id": event.id, "type": event.type.value}


def record_action(
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


_NOTIFIERS: weakref.WeakKeyDictionary[Deps, Notifier] = weakref.WeakKeyDictionary()
_NOTIFIERS_LOCK = threading.Lock()


def notifier_for(deps: Deps) -> Notifier:
    """The process's notifier, built (config loaded and validated) on first use."""
    with _NOTIFIERS_LOCK:
        notifier = _NOTIFIERS.get(deps)
        if notifier is None:
            notifier = Notifier(deps, load_config(deps.settings.notify.config_file))
            _NOTIFIERS[deps] = notifier
        return notifier
