"""notify: one Slack message per thing worth a human's attention (docs/notify.md).

The face every area shares: ``parse`` (one parser for five topics), ``dedupe_key`` (the
runtime's receipt key) and ``handle(event, ctx) -> Outcome``; ``prepare`` validates the
config at cold start. The stages (route/filter, dedup, group, render,
deliver) are private modules wired by ``_pipeline``.
"""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.notify._config import (
        NotifyFileConfig,
        check_environment,
        load_config,
        parse_config,
        parse_duration,
        prepare,
    )
    from shared.notify._group import needs_update
    from shared.notify._model import (
        AlertGroupView,
        Notice,
        NotifyEvent,
        alert_entry,
        dedupe_key,
        parse,
        parse_notify_message,
        to_notice,
    )
    from shared.notify._pipeline import Notifier, flush, handle, notifier_for
    from shared.notify._render import (
        SlackMessage,
        render,
        render_alert_group,
        render_budget,
        render_build,
        render_incident,
        render_ops,
    )
else:  # each name is imported on first use (docs/architecture.md, "Cold start")
    __getattr__ = lazy_attributes(
        __name__,
        {
            "_config": (
                "NotifyFileConfig",
                "check_environment",
                "load_config",
                "parse_config",
                "parse_duration",
                "prepare",
            ),
            "_group": ("needs_update",),
            "_model": (
                "AlertGroupView",
                "Notice",
                "NotifyEvent",
                "alert_entry",
                "dedupe_key",
                "parse",
                "parse_notify_message",
                "to_notice",
            ),
            "_pipeline": (
                "flush",
                "Notifier",
                "handle",
                "notifier_for",
            ),
            "_render": (
                "SlackMessage",
                "render",
                "render_alert_group",
                "render_budget",
                "render_build",
                "render_incident",
                "render_ops",
            ),
        },
    )

__all__ = [
    "AlertGroupView",
    "Notice",
    "Notifier",
    "NotifyEvent",
    "NotifyFileConfig",
    "SlackMessage",
    "alert_entry",
    "check_environment",
    "dedupe_key",
    "flush",
    "handle",
    "load_config",
    "needs_update",
    "notifier_for",
    "parse",
    "parse_config",
    "parse_duration",
    "parse_notify_message",
    "prepare",
    "render",
    "render_alert_group",
    "render_budget",
    "render_build",
    "render_incident",
    "render_ops",
    "to_notice",
]
