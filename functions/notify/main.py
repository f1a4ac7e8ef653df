"""notify: one Slack message per thing worth a human's attention (docs/notify.md).

Consumes ``cloud-builds``, ``smoke-tests``, ``ops-events``, ``monitoring-alerts`` and
``billing-budget`` (Cloud Billing's budget notifications); the pipeline (route/filter,
dedup, group, render, deliver) is ``shared.notify``.
``notify_flush`` (HTTP) flushes due alert groups; Cloud Scheduler calls it every minute
so repeat reminders and long group intervals need no traffic (docs/notify.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.notify import NotifyEvent, dedupe_key, flush, handle, parse, prepare
from shared.runtime import Context, HttpContext, Outcome, http_handler, pubsub_handler

if TYPE_CHECKING:
    from flask import Request

prepare()  # the config is loaded and validated now: a broken file fails the cold start


@pubsub_handler("notify", parse=parse, dedupe_key=dedupe_key)
def notify(event: NotifyEvent, ctx: Context) -> Outcome:
    return handle(event, ctx)


@http_handler("notify_flush", methods=("POST",))
def notify_flush(request: Request, ctx: HttpContext) -> tuple[dict[str, int], int]:
    return flush(request, ctx)
