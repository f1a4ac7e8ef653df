"""Send a rendered message, or log it when no webhook is configured."""

from __future__ import annotations

import json
import logging

from shared.notify._render import SlackMessage
from shared.runtime import Deps
from shared.slack import SlackWebhook

logger = logging.getLogger("sightops.notify")


def deliver(deps: Deps, message: SlackMessage) -> str:
    """Returns ``sent`` or ``logged`` (no webhook configured)."""
    configured = deps.settings.slack_webhook_url
    url = deps.secrets.resolve(configured.get_secret_value()) if configured else None
    if not url:
        logger.info(
            "slack message (no webhook configured): %s", json.dumps(message.to_dict())[:4000]
        )
        return "logged"
    webhook = SlackWebhook(
        url,
        timeout_s=deps.settings.slack_timeout_s,
        max_retry_wait_s=deps.settings.slack_max_retry_wait_s,
    )
    payload = message.to_dict()
    webhook.send(payload["text"], payload["blocks"])
    return "sent"
