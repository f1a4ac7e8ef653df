"""notify: one Slack message per thing worth a human's attention (DESIGN.md 4.3).

Consumes ``cloud-builds``, ``smoke-tests``, ``ops-events`` and ``monitoring-alerts``;
the pipeline (filter, route, dedup, group, render, deliver) is ``shared.notify``.
``notify_flush`` (HTTP) flushes due alert groups; Cloud Scheduler calls it every minute
so repeat reminders and long group intervals need no traffic (docs/notify.md).
"""

from __future__ import annotations

import os
from typing import Any

import functions_framework

from shared.notify import (
    NotifyEvent,
    check_environment,
    dedupe_key,
    load_config,
    notifier_for,
    parse_notify_message,
    to_notice,
)
from shared.runtime import Context, Outcome, process_deps, pubsub_handler
from shared.settings import get_settings

# Start-up validation: a broken config file fails the cold start, not the first alert.
check_environment(load_config(get_settings().notify.config_file), os.environ)


@pubsub_handler("notify", parse=parse_notify_message, dedupe_key=dedupe_key)
def notify(event: NotifyEvent, ctx: Context) -> Outcome:
    notice = to_notice(event, dedupe_key(event, ctx.message))
    notifier = notifier_for(ctx.deps)
    if notice is None:
        notifier.flush_some_due()
        return Outcome.skipped("not something notify reports")
    return notifier.handle(notice, ctx)


@functions_framework.http
def notify_flush(request: Any) -> tuple[dict[str, int], int]:
    """Flush every alert group that is due (scheduled; idempotent)."""
    del request
    flushed = notifier_for(process_deps()).flush_due(limit=1000)
    return {"flushed": flushed}, 200
