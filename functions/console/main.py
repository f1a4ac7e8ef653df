"""console: the release console's pages, server-rendered; slack_actions: Slack's
buttons on notify's messages (docs/console.md).

console is behind Cloud Run IAM (or IAP) in production and checks no one itself
(terraform/console.tf grants the invoker role to the console's readers only);
slack_actions is public and acts only on requests Slack signed, from allowed users.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from shared.console import serve, serve_interactions
from shared.runtime import HttpContext, http_handler

if TYPE_CHECKING:
    import flask


@http_handler("console", methods=("GET",))
def console(request: flask.Request, ctx: HttpContext) -> flask.Response:
    """Every page: ``/``, ``/releases``, ``/releases/<release_id>``, ``/messages``, ``/metrics``."""
    return serve(request, ctx)


@http_handler("slack_actions", methods=("POST",))
def slack_actions(request: flask.Request, ctx: HttpContext) -> flask.Response | tuple[Any, int]:
    """Slack's Request URL for interactivity: public, but only a request Slack signed, from
    an allowed user, acts (docs/console.md, "Acting from Slack")."""
    return serve_interactions(request, ctx)
