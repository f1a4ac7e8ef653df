"""notify: one Slack message per thing worth a human's attention (docs/notify.md).

Consumes ``cloud-builds``, ``smoke-tests``, ``ops-events`` and ``monitoring-alerts``;
the pipeline (route/filter, dedup, group, render, deliver) is ``shared.notify``.
``notify_flush`` (HTTP) flushes due alert groups; Cloud Scheduler calls it every minute
so repeat reminders and long group intervals need no traffic (docs/notify.md).
"""

from __future__ import annotations

from typing import Any

from shared.notify import NotifyEvent, dedupe_key, handle, notifier_for, parse, prepare
from shared.runtime import Context, HttpContext, Outcome, http_handler, pubsub_handler

prepare()  # the config is loaded and validated now: a broken file fails the cold start


@pubsub_handler("notify", parse=parse, dedupe_key=dedupe_key)
def notify(event: NotifyEvent, ctx: Context) -> Outcome:
    return handle(event, ctx)


@http_handler("notify_flush", methods=("POST",))
def notify_flush(request: Any, ctx: HttpContext) -> tuple[dict[str, int], int]:
    """Flush every alert group that is due (Cloud Scheduler POSTs; idempotent)."""
    del request
    flushed = notifier_for(ctx.deps).flush_due(limit=1000)
    return {"flushed": flushed}, 200
