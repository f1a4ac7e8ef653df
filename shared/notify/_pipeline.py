"""The notify pipeline: Alertmanager's stages, each in its own module, wired in order
(docs/notify.md, "The pipeline"):

    route/filter (``_route``) -> dedup (``_dedup``) -> group (``_group``)
        -> render (``_render``) -> deliver (``_deliver``)

A stage may import the ones before it, never a later one
(``tests/shared/notify/test_stage_imports.py``); this module is the only one that knows
them all. Builds and our ops events are one message each (filter, route, sent-marker,
render, deliver); alerts go into groups, whose messages the group stage sends through
the render and deliver stages handed to it here.

:func:`handle` is the face ``functions/notify/main.py`` calls; the stages are imported
when the first notifier is built, not by ``import main`` (docs/architecture.md, "Cold
start"); ``shared.notify._config.prepare`` validates the config at import.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.errors import PermanentError, SightOpsError
from shared.notify._config import NotifyFileConfig, config_for
from shared.runtime import Context, Deps, HttpContext, Outcome

if TYPE_CHECKING:
    from shared.notify._model import AlertGroupView, Notice, NotifyEvent
    from shared.notify._route import ResolvedRoute

logger = logging.getLogger("sightops.notify")


class Notifier:
    """One per Deps (process): the configured stages, wired."""

    def __init__(
        self,
        deps: Deps,
        config: NotifyFileConfig,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from shared.cache import RedisOutageGuard
        from shared.notify._dedup import SentMarkers
        from shared.notify._deliver import Deliverer
        from shared.notify._group import Grouper
        from shared.notify._group_store import GroupStore
        from shared.notify._route import Router

        self.deps = deps
        self.config = config
        ns = deps.settings.notify
        guard = RedisOutageGuard(ns.redis_retry_s, "alerts are sent ungrouped", logger=logger)
        self.router = Router(config, ns)
        self.deliverer = Deliverer(deps, self.router.every_route)
        self.markers = SentMarkers(deps.redis, ns.redis_prefix, ns.state_ttl_s, guard)
        self.store = GroupStore(deps.redis, ns.redis_prefix, ns.state_ttl_s)
        self.grouper = Grouper(
            deps, config, self.router, self.store, guard, self._send_group, sleep=sleep
        )

    def handle(self, notice: Notice, ctx: Context) -> Outcome:
        """Deliver the notice, then (its own message out first) flush other due groups."""
        outcome = self._deliver(notice, ctx)
        self.flush_some_due()
        return outcome

    def flush(self, gid: str) -> str:
        return self.grouper.flush(gid)

    def flush_some_due(self) -> int:
        return self.grouper.flush_some_due()

    def flush_due(self, limit: int | None = None, *, budget_s: float | None = None) -> int:
        """Flush due groups: at most ``limit`` (default ``_group.FLUSH_BATCH``)."""
        from shared.notify._group import FLUSH_BATCH

        return self.grouper.flush_due(FLUSH_BATCH if limit is None else limit, budget_s=budget_s)

    def _deliver(self, notice: Notice, ctx: Context) -> Outcome:
        skip = self.router.skip_reason(notice)
        if skip is None and notice.kind == "budget":
            skip = self._claim_budget(notice, ctx)
        if skip:
            return Outcome.skipped(skip, **notice.log_fields())
        routes = self.router.route(notice)
        grouped = notice.type in {"alert.open", "alert.closed"}
        results: list[str] = []
        failures: list[str] = []
        for route in routes:
            try:
                result = self.grouper.add(notice, route, ctx) if grouped else None
                if result is None:  # one message, or an alert Redis could not group
                    result = self._send_one(notice, route, ctx, fallback=grouped)
                results.append(f"{route.name}: {result}")
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

    def _claim_budget(self, notice: Notice, ctx: Context) -> str | None:
        """A budget threshold is posted once per period (``_dedup.claim_budget_crossing``)."""
        from shared.events import BudgetNotification
        from shared.notify._dedup import claim_budget_crossing

        assert isinstance(notice.event, BudgetNotification)
        return claim_budget_crossing(ctx.conn, notice.event, self.deps.clock())

    def _send_one(
        self, notice: Notice, route: ResolvedRoute, ctx: Context, *, fallback: bool = False
    ) -> str:
        """One message for one event: sent-marker, render, deliver, record."""
        from shared.notify._dedup import record_notification
        from shared.notify._render import render

        detail = {"route": route.name, "notice_type": notice.type, "key": notice.key}
        detail.update(_ids(notice))
        if fallback:
            detail["ungrouped"] = "redis unavailable"
        marker = self.markers.key(route, notice)
        if self.markers.already_sent(marker):
            # Slack took it but the earlier delivery's commit did not: record, do not resend.
            ctx.record_action(
                "notification",
                "sent",
                service=notice.service,
                detail={**detail, "note": "delivered by an earlier attempt"},
            )
            return "already sent"
        try:
            console = self.deps.settings.console
            message = render(
                notice,
                self.config,
                console.base_url,
                actions=console.slack_signing_secret is not None,
            )
            status = self.deliverer.send(route, message)
        except SightOpsError as exc:
            if exc.retryable:
                raise
            record_notification(
                self.deps,
                "failed",
                notice.service,
                ctx.message.event_id,
                None,
                {**detail, "error": str(exc)},
            )
            raise
        if status == "sent":
            self.markers.mark_sent(marker)
        ctx.record_action("notification", status, service=notice.service, detail=detail)
        return status

    def _send_group(self, route: ResolvedRoute, view: AlertGroupView) -> str:
        from shared.notify._render import render_alert_group

        return self.deliverer.send(route, render_alert_group(view, self.config))


def _ids(notice: Notice) -> dict[str, str]:
    from shared.events import BudgetNotification, Build, IncidentNotification

    event = notice.event
    if isinstance(event, Build):
        return {"build_id": event.id, "build_status": event.status.value}
    if isinstance(event, IncidentNotification):
        return {"incident_id": event.incident.incident_id, "state": event.incident.state or ""}
    if isinstance(event, BudgetNotification):
        return {"budget_id": event.budget_id, "crossing": event.crossing_key()}
    return {"event_id": event.id, "type": event.type.value}


def _build_notifier(deps: Deps) -> Notifier:
    """The notifier of ``deps``, on its config (``_config.config_for``: read once)."""
    return Notifier(deps, config_for(deps))


def notifier_for(deps: Deps) -> Notifier:
    """The notifier of ``deps``, built on first use (``Deps.service``)."""
    return deps.service(_build_notifier)


def handle(event: NotifyEvent, ctx: Context) -> Outcome:
    """notify's handler: one notice per event worth a message; for anything else (a build
    still running, a kpi event) only the due groups are flushed."""
    from shared.notify._model import to_notice

    notifier = notifier_for(ctx.deps)
    notice = to_notice(event, ctx.key)
    if notice is None:
        notifier.flush_some_due()
        return Outcome.skipped("not something notify reports")
    return notifier.handle(notice, ctx)


#: One scheduled flush (notify_flush, every minute) sends at most this many due groups.
SCHEDULED_FLUSH_LIMIT = 1000


def flush(request: object, ctx: HttpContext) -> tuple[dict[str, int], int]:
    """notify_flush's handler: flush every alert group that is due (Cloud Scheduler POSTs
    it; idempotent), so repeat reminders and long group intervals need no traffic."""
    del request
    flushed = notifier_for(ctx.deps).flush_due(limit=SCHEDULED_FLUSH_LIMIT)
    return {"flushed": flushed}, 200
