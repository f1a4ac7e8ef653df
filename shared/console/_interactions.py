"""Slack's interactivity endpoint: a button of ours clicked in Slack becomes the CLI's own
command, recorded as manual with the Slack user (docs/console.md, "Acting from Slack").

In order, each refusal before any effect: the signature (Slack's ``v0`` HMAC of the raw
body, within 5 minutes: ``slack_sdk.signature.SignatureVerifier``; anything else is 401),
the button (ours, with names that are names; else 400), the click's claim (one
``ops.actions`` row per click, ``dedupe_key`` ``slack:<team>:<action_ts>:<action_id>``: a
repeated delivery finds it and does nothing), the user (``CONSOLE__SLACK_ALLOWED``: user
ids, or user group ids expanded through ``usergroups.users.list``; a refusal is recorded).
Then the same code path as ``sightops rollback`` / ``sightops canary`` / ``sightops
revisions --mark-bad``, with actor ``manual:slack:<user id>``, its outcome recorded, and
the original message updated through the payload's ``response_url`` (its buttons replaced
by who did what).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from shared.errors import SightOpsError
from shared.notify._buttons import BLOCK_ID, VERBS, Intent
from shared.runtime import HttpError

if TYPE_CHECKING:
    from flask import Request, Response

    from shared.runtime import Deps, HttpContext

logger = logging.getLogger("sightops.console.slack")

#: Slack posts response URLs under this origin; make dev's stand-in under CONSOLE__SLACK_API_URL's.
SLACK_HOOKS = "https://hooks.slack.com/"
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


@dataclass(frozen=True)
class Done:
    ok: bool
    said: str


def _secret(deps: Deps) -> str:
    configured = deps.settings.console.slack_signing_secret
    if configured is None:
        raise HttpError(503, "not_configured", "Slack interactivity is not configured")
    value = deps.secrets.resolve(configured.get_secret_value())
    if not value:
        raise HttpError(503, "not_configured", "Slack interactivity is not configured")
    return value


def verify(deps: Deps, body: bytes, headers: Any) -> None:
    """401 unless Slack signed exactly this body within the last 5 minutes."""
    from slack_sdk.signature import Clock, SignatureVerifier

    class _DepsClock(Clock):
        def now(self) -> float:
            return deps.clock().timestamp()

    verifier = SignatureVerifier(_secret(deps), clock=_DepsClock())
    try:
        valid = verifier.is_valid_request(body, dict(headers))
    except ValueError:  # a timestamp that is not a number
        valid = False
    if not valid:
        raise HttpError(
            401,
            "invalid_signature",
            "the request is not signed by Slack, or too old",
            reason="bad or stale X-Slack-Signature",
        )


def _payload(body: bytes) -> dict[str, Any]:
    try:
        raw = parse_qs(body.decode("utf-8"), strict_parsing=True)["payload"][0]
        payload = json.loads(raw)
    except (UnicodeDecodeError, KeyError, IndexError, ValueError):
        raise HttpError(400, "bad_payload", "expected a form field payload with JSON") from None
    if not isinstance(payload, dict):
        raise HttpError(400, "bad_payload", "expected a form field payload with JSON")
    return payload


def _members(deps: Deps, group: str) -> set[str]:
    """A user group's members, through the Web API (``usergroups.users.list``)."""
    from slack_sdk import WebClient

    token = deps.settings.console.slack_bot_token
    if token is None:
        return set()
    kwargs: dict[str, Any] = {}
    if deps.settings.console.slack_api_url:
        kwargs["base_url"] = deps.settings.console.slack_api_url.rstrip("/") + "/api/"
    client = WebClient(token=deps.secrets.resolve(token.get_secret_value()), timeout=5, **kwargs)
    try:
        answer = client.usergroups_users_list(usergroup=group)
    except Exception as exc:  # an unknown group or Slack down: nobody through it
        logger.warning("console: members of Slack group %s unknown: %s", group, type(exc).__name__)
        return set()
    return {str(u) for u in answer.get("users") or []}


def allowed(deps: Deps, user: str) -> bool:
    for entry in deps.settings.console.slack_allowed:
        if entry == user:
            return True
        if entry.startswith("S") and user in _members(deps, entry):
            return True
    return False


def _run(deps: Deps, intent: Intent, actor: str) -> Done:
    """The CLI's code path for the verb (docs/rollback.md "Manual commands", docs/canary.md)."""
    from shared.rollback import Verdict, manual_mark, manual_rollback

    try:
        if intent.verb in {"undo_rollback", "unfreeze", "rollback_now"}:
            forced = intent.verb != "rollback_now"
            target = intent.revision if forced else None
            report = manual_rollback(deps, intent.service, to=target, force=forced, actor=actor)
            return Done(report.verdict is Verdict.ROLLBACK, report.reason)
        if intent.verb in {"canary_promote", "canary_rollback"}:
            from shared.canary import manual_promote
            from shared.canary import manual_rollback as canary_rollback

            act: Callable[..., Any] = (
                manual_promote if intent.verb == "canary_promote" else canary_rollback
            )
            found = act(deps, intent.service, actor=actor)
            lines = [d.line() for d in found.decisions]
            return Done(bool(lines), "; ".join(lines) or "no active canary")
        assert intent.revision is not None
        changed = manual_mark(
            deps, intent.service, intent.revision, "bad", f"marked bad from Slack by {actor}", actor
        )
        return Done(True, f"{intent.revision} marked bad" + ("" if changed else " (already)"))
    except SightOpsError as exc:
        if exc.retryable:
            raise
        return Done(False, str(exc))


def _record(
    deps: Deps,
    status: str,
    intent: Intent,
    user: str,
    detail: dict[str, Any],
    dedupe_key: str | None = None,
) -> bool:
    """One ``ops.actions`` row (kind ``interaction``); False when ``dedupe_key`` was taken."""
    from shared.db import transaction
    from shared.runtime import write_action

    with transaction(deps.engine) as conn:
        found = write_action(
            conn,
            kind="interaction",
            status=status,
            now=deps.clock(),
            service=intent.service,
            actor=f"slack:{user}",
            detail={"verb": intent.verb, "revision": intent.revision, **detail},
            dedupe_key=dedupe_key,
            on_conflict="ignore",
            release_id=intent.release_id,
        )
    return found is not None


def _response_url(deps: Deps, url: object) -> str | None:
    """Slack's, or make dev's stand-in's; nothing else is ever posted to."""
    if not isinstance(url, str):
        return None
    origins = [SLACK_HOOKS]
    local = deps.settings.console.slack_api_url
    if local and deps.settings.environment != "production":
        parts = urlsplit(local)
        origins.append(f"{parts.scheme}://{parts.netloc}/")
    return url if any(url.startswith(o) for o in origins) else None


def _update(deps: Deps, payload: dict[str, Any], said: str) -> None:
    """The original message, its buttons replaced by what was done and by whom."""
    import httpx

    url = _response_url(deps, payload.get("response_url"))
    message = payload.get("message")
    if url is None or not isinstance(message, dict):
        return
    blocks = [b for b in message.get("blocks") or [] if b.get("block_id") != BLOCK_ID]
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": said}]})
    body = {"replace_original": True, "text": str(message.get("text") or ""), "blocks": blocks}
    try:
        httpx.post(url, json=body, timeout=5.0).raise_for_status()
    except httpx.HTTPError as exc:  # the action is done and recorded; the message stays
        logger.warning("console: could not update the Slack message: %s", type(exc).__name__)


def _ephemeral(text: str) -> tuple[dict[str, Any], int]:
    return {"response_type": "ephemeral", "replace_original": False, "text": text}, 200


def serve_interactions(request: Request, ctx: HttpContext) -> Response | tuple[Any, int]:
    """``POST /slack/interactions`` (also ``/``): Slack's Request URL for interactivity."""
    from shared.log import mrkdwn_escape

    if request.path.rstrip("/") not in {"", "/slack/interactions"}:
        raise HttpError(404, "not_found", "no such path")
    deps = ctx.deps
    verify(deps, ctx.body, request.headers)
    payload = _payload(ctx.body)
    if payload.get("type") != "block_actions" or not payload.get("actions"):
        ctx.outcome = "ignored"
        return {}, 200
    action = payload["actions"][0]
    try:
        intent = Intent.parse(str(action.get("action_id")), str(action.get("value")))
    except (ValueError, TypeError):
        raise HttpError(400, "unknown_action", "not a sight-ops button") from None
    user = str((payload.get("user") or {}).get("id") or "")
    team = str((payload.get("team") or {}).get("id") or "")
    key = f"slack:{team}:{action.get('action_ts')}:{action.get('action_id')}"
    ctx.fields.update(verb=intent.verb, service=intent.service, slack_user=user)
    if not user or not allowed(deps, user):
        ctx.outcome = "refused"
        _record(deps, "refused", intent, user, {"reason": "not in CONSOLE__SLACK_ALLOWED"}, key)
        return _ephemeral("You are not allowed to act on releases from Slack.")
    if not _record(deps, "accepted", intent, user, {"action_ts": action.get("action_ts")}, key):
        ctx.outcome = "duplicate"
        return _ephemeral("This click was already handled.")
    done = _run(deps, intent, f"manual:slack:{user}")
    _record(deps, "succeeded" if done.ok else "failed", intent, user, {"result": done.said})
    ctx.outcome = "acted" if done.ok else "failed"
    label = VERBS[intent.verb][0]
    mark = ":white_check_mark:" if done.ok else ":x:"
    who = f"<@{user}>" if _USER_ID.fullmatch(user) else mrkdwn_escape(user)
    _update(deps, payload, f"{mark} *{label}* by {who}: {mrkdwn_escape(done.said)}")
    return {}, 200
