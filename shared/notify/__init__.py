"""Slack rendering and delivery for the notify function."""

from shared.notify._render import SlackMessage, render_build
from shared.notify._send import deliver

__all__ = ["SlackMessage", "deliver", "render_build"]
