"""The deliver stage, the last one: integrations, where a rendered message goes. Slack
is one; the log is the other (docs/notify.md, "Delivery").

The earlier stages (route/filter -> dedup -> group -> render) hand a finished
``SlackMessage`` and its route to :class:`Deliverer` and get back ``sent`` or
``logged``, or one of our errors (``TransientError``: retry later; ``PermanentError``:
never deliverable). Webhook references are resolved here, through ``deps.secrets``, so
the URL is registered with the log redactor before anything could print it.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable
from typing import Protocol

from shared.errors import ConfigError
from shared.notify._render import SlackMessage
from shared.notify._route import ResolvedRoute
from shared.runtime import Deps
from shared.slack import SlackWebhook

logger = logging.getLogger("sightops.notify")


class Integration(Protocol):
    """A receiver of rendered messages."""

    name: str

    def notify(self, message: SlackMessage) -> str: ...


class LogIntegration:
    """No webhook configured: the message is rendered to the log (docs/notify.md)."""

    def __init__(self, name: str = "log") -> None:
        self.name = name

    def notify(self, message: SlackMessage) -> str:
        logger.info(
            "slack message (no webhook configured): %s",
            message.to_json()[:4000],
            extra={"route_webhook": self.name},
        )
        return "logged"


class SlackIntegration:
    """An incoming webhook, resolved on first use (a Secret Manager read may be slow or
    fail transiently; that must not break start-up)."""

    def __init__(self, name: str, deps: Deps, reference: str) -> None:
        self.name = name
        self._deps = deps
        self._reference = reference
        self._webhook: SlackWebhook | None = None
        self._lock = threading.Lock()

    def _client(self) -> SlackWebhook | None:
        with self._lock:
            if self._webhook is None:
                url = self._deps.secrets.resolve(self._reference)
                if not url:
                    return None
                settings = self._deps.settings
                self._webhook = SlackWebhook(
                    url,
                    timeout_s=settings.slack_timeout_s,
                    max_retry_wait_s=settings.slack_max_retry_wait_s,
                )
            return self._webhook

    def notify(self, message: SlackMessage) -> str:
        client = self._client()
        if client is None:
            return LogIntegration(self.name).notify(message)
        payload = message.to_dict()
        client.send(payload["text"], payload["blocks"])
        return "sent"


def integration_for(deps: Deps, reference: str) -> Integration:
    """The integration a webhook reference names (validated in the config already)."""
    if reference == "log":
        return LogIntegration()
    if reference == "default":
        configured = deps.settings.slack_webhook_url
        if configured is None or not configured.get_secret_value().strip():
            return LogIntegration("default")
        return SlackIntegration("default", deps, configured.get_secret_value())
    if reference.startswith("env:"):
        name = reference[4:]
        value = os.environ.get(name)
        if not value:
            raise ConfigError(f"webhook reference {reference}: environment variable is not set")
        return SlackIntegration(reference, deps, value)
    return SlackIntegration(reference, deps, reference)


class Deliverer:
    """One integration per route, built up front: an ``env:`` reference whose variable is
    unset fails when the notifier is built (the cold start), not at the first message."""

    def __init__(self, deps: Deps, routes: Iterable[ResolvedRoute]) -> None:
        self._integrations = {(r.name, r.webhook): integration_for(deps, r.webhook) for r in routes}

    def send(self, route: ResolvedRoute, message: SlackMessage) -> str:
        """``sent`` or ``logged``; raises ``TransientError`` or ``PermanentError``."""
        return self._integrations[(route.name, route.webhook)].notify(message)
