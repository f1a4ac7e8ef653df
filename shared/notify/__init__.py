"""notify: filter, route, group, render and deliver messages worth a human's attention."""

from shared.notify._config import (
    NotifyFileConfig,
    check_environment,
    load_config,
    parse_config,
    parse_duration,
)
from shared.notify._group import GroupStore, needs_update
from shared.notify._model import (
    Notice,
    NotifyEvent,
    dedupe_key,
    parse_notify_message,
    to_notice,
)
from shared.notify._pipeline import Notifier, notifier_for
from shared.notify._render import (
    AlertEntry,
    AlertGroupView,
    SlackMessage,
    alert_entry,
    render_alert_group,
    render_build,
    render_incident,
    render_migration,
    render_ops,
    render_rollback,
    render_smoke,
)
from shared.notify._send import LogIntegration, SlackIntegration, integration_for

__all__ = [
    "AlertEntry",
    "AlertGroupView",
    "GroupStore",
    "LogIntegration",
    "Notice",
    "Notifier",
    "NotifyEvent",
    "NotifyFileConfig",
    "SlackIntegration",
    "SlackMessage",
    "alert_entry",
    "check_environment",
    "dedupe_key",
    "integration_for",
    "load_config",
    "needs_update",
    "notifier_for",
    "parse_config",
    "parse_duration",
    "parse_notify_message",
    "render_alert_group",
    "render_build",
    "render_incident",
    "render_migration",
    "render_ops",
    "render_rollback",
    "render_smoke",
    "to_notice",
]
