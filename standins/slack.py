"""Slack incoming-webhook stand-in: a sink that answers like ``hooks.slack.com``.

``POST /services/<anything>`` with a JSON body (or a form body with ``payload=``) is
recorded and answered ``200`` with the text body ``ok`` -- exactly what Slack answers.
Errors use Slack's real status codes and plain-text bodies (see
https://api.slack.com/changelog/2016-05-17-changes-to-errors-for-incoming-webhooks and
Slack's incoming-webhook docs): ``400 invalid_payload``, ``403 invalid_token``,
``403 action_prohibited``, ``404 channel_not_found``, ``404 no_service``,
``410 channel_is_archived``, ``429 rate_limited`` (with ``Retry-After``), ``500
rollup_error``.

By default the sink also enforces the Block Kit limits that make Slack reject a message
(``400 invalid_blocks``: more than 50 blocks, a section text over 3000 characters, a
header over 150) and answers ``400 no_text`` for a payload with neither ``text`` nor
``blocks`` nor ``attachments``; ``strict=False`` turns that off.

Interactivity, as a Slack app with interactive buttons does it (docs/console.md, "Acting
from Slack"): :meth:`SlackState.send_interaction` (``POST /_admin/interactions``) clicks a
button of a received message as a user: it POSTs Slack's ``block_actions`` payload
(``application/x-www-form-urlencoded``, ``payload=<json>``) to the app's Request URL,
signed as Slack signs (``v0`` HMAC-SHA256 of ``v0:<timestamp>:<body>`` with the signing
secret, headers ``X-Slack-Request-Timestamp`` and ``X-Slack-Signature``). Its
``response_url`` points back here (``POST /actions/<message>/<token>``), where the app's
update of the original message is recorded (``updates`` of the message). The Web API's
``usergroups.users.list`` answers from :meth:`SlackState.set_usergroup`.

Admin API under ``/_admin/`` (JSON); the same operations are methods of
:class:`SlackState`. See ``docs/standins.md``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import re
import secrets
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlencode

from flask import Flask, Response, request

from standins._common import (
    JSON,
    Clock,
    StandinError,
    admin_json,
    json_response,
    rfc3339,
    utcnow,
)

logger = logging.getLogger("standins.slack")

# Slack's incoming-webhook errors: text body -> HTTP status.
SLACK_ERRORS: dict[str, int] = {
    "invalid_payload": 400,
    "user_not_found": 400,
    "no_text": 400,
    "invalid_blocks": 400,
    "invalid_blocks_format": 400,
    "too_many_attachments": 400,
    "no_service_id": 400,
    "invalid_token": 403,
    "action_prohibited": 403,
    "posting_to_general_channel_denied": 403,
    "team_disabled": 403,
    "channel_not_found": 404,
    "no_service": 404,
    "no_team": 404,
    "channel_is_archived": 410,
    "rate_limited": 429,
    "rollup_error": 500,
}
# The body an injected status answers with when no error name is given.
DEFAULT_BODY_FOR_STATUS: dict[int, str] = {
    400: "invalid_payload",
    403: "invalid_token",
    404: "no_service",
    410: "channel_is_archived",
    429: "rate_limited",
    500: "rollup_error",
    # Slack documents no body for 503 (its edge answers those); an empty body it is.
    503: "",
}

MAX_BLOCKS = 50
MAX_SECTION_TEXT = 3000
MAX_HEADER_TEXT = 150


@dataclass
class SlackFault:
    """The next ``remaining`` posts (to ``path``, or to any path) get ``status`` + ``body``."""

    status: int
    body: str
    remaining: int = 1
    path: str | None = None
    retry_after: int | None = None
    hits: int = 0

    def to_json(self) -> JSON:
        return {
            "status": self.status,
            "body": self.body,
            "remaining": self.remaining,
            "path": self.path,
            "retry_after": self.retry_after,
            "hits": self.hits,
        }


@dataclass(frozen=True)
class SlackMessage:
    path: str
    body: Any
    received_at: datetime
    status: int
    response_body: str
    headers: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> JSON:
        return {
            "path": self.path,
            "body": self.body,
            "received_at": rfc3339(self.received_at),
            "status": self.status,
            "response_body": self.response_body,
        }


class SlackState:
    """Received posts, injected faults and counters; every method is thread-safe."""

    def __init__(self, *, strict: bool = True, clock: Clock = utcnow) -> None:
        self._lock = threading.RLock()
        self._clock = clock
        self.strict = strict
        self._faults: list[SlackFault] = []
        self._received: list[SlackMessage] = []
        self._updates: dict[int, list[Any]] = {}
        self._usergroups: dict[str, list[str]] = {}

    # ----------------------------------------------------------------- faults

    def inject_fault(
        self,
        status: int | None = None,
        *,
        error: str | None = None,
        count: int = 1,
        path: str | None = None,
        retry_after: int | None = None,
    ) -> SlackFault:
        """Answer the next ``count`` posts (to ``path``, or any) with a Slack error.

        Give ``error`` (a Slack error name such as ``"channel_is_archived"``, whose
        status is known) or ``status`` (the body then is Slack's usual one for it), or
        both. ``retry_after`` adds a ``Retry-After`` header (seconds; Slack sends one
        with every 429, so a 429 without it gets ``1``).
        """
        if status is None and error is None:
            raise ValueError("give a status or an error name")
        if status is None:
            if error not in SLACK_ERRORS:
                raise ValueError(f"unknown Slack error {error!r}; give its status too")
            status = SLACK_ERRORS[str(error)]
        if not 100 <= status <= 599:
            raise ValueError(f"not an HTTP status: {status}")
        if count < 1:
            raise ValueError("count must be at least 1")
        body = error if error is not None else DEFAULT_BODY_FOR_STATUS.get(status, "")
        if status == 429 and retry_after is None:
            retry_after = 1
        fault = SlackFault(status, body, count, path, retry_after)
        with self._lock:
            self._faults.append(fault)
        return fault

    def rate_limit(self, count: int = 1, retry_after: int = 1, path: str | None = None) -> None:
        """The next ``count`` posts get ``429 rate_limited`` with ``Retry-After``."""
        self.inject_fault(
            429, error="rate_limited", count=count, path=path, retry_after=retry_after
        )

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def faults(self) -> list[SlackFault]:
        with self._lock:
            return list(self._faults)

    def _take_fault(self, path: str) -> SlackFault | None:
        with self._lock:
            # A fault for this very path wins over a global one.
            ordered = [f for f in self._faults if f.path == path] + [
                f for f in self._faults if f.path is None
            ]
            for fault in ordered:
                fault.remaining -= 1
                fault.hits += 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ----------------------------------------------------------------- receiving

    def receive(self, path: str, raw: bytes, content_type: str) -> tuple[int, str, dict[str, str]]:
        """Handle one post: returns (status, text body, headers) and records it."""
        body, error = _parse_payload(raw, content_type)
        headers: dict[str, str] = {}
        fault = self._take_fault(path)
        if fault is not None:
            status, text = fault.status, fault.body
            if fault.retry_after is not None:
                headers["Retry-After"] = str(fault.retry_after)
        elif error is not None:
            status, text = SLACK_ERRORS[error], error
        elif self.strict and (problem := _check_limits(body)) is not None:
            status, text = SLACK_ERRORS[problem], problem
        else:
            status, text = 200, "ok"
        with self._lock:
            self._received.append(
                SlackMessage(path, body, self._clock(), status, text, dict(headers))
            )
        return status, text, headers

    # ----------------------------------------------------------------- inspection

    def messages(self, path: str | None = None) -> list[SlackMessage]:
        """Accepted messages (answered 200), oldest first, optionally for one webhook path."""
        with self._lock:
            return [
                m for m in self._received if m.status == 200 and (path is None or m.path == path)
            ]

    def received(self, path: str | None = None) -> list[SlackMessage]:
        """Every post, whatever it was answered."""
        with self._lock:
            return [m for m in self._received if path is None or m.path == path]

    def stats(self) -> JSON:
        with self._lock:
            by_status = Counter(str(m.status) for m in self._received)
            by_path = Counter(m.path for m in self._received if m.status == 200)
            return {
                "received": len(self._received),
                "accepted": sum(1 for m in self._received if m.status == 200),
                "by_status": dict(by_status),
                "accepted_by_path": dict(by_path),
            }

    # ----------------------------------------------------------------- interactivity

    def set_usergroup(self, group_id: str, users: list[str]) -> None:
        """What ``usergroups.users.list`` answers for ``group_id``."""
        with self._lock:
            self._usergroups[group_id] = list(users)

    def usergroup(self, group_id: str) -> list[str] | None:
        with self._lock:
            found = self._usergroups.get(group_id)
            return list(found) if found is not None else None

    def interaction_payload(
        self,
        index: int,
        action_id: str,
        *,
        user_id: str,
        response_url: str,
        user_name: str = "someone",
        team_id: str = "T0LOCAL",
    ) -> JSON:
        """Slack's ``block_actions`` payload for a click on the button ``action_id`` of the
        accepted message ``index`` (0 = the oldest)."""
        with self._lock:
            accepted = [m for m in self._received if m.status == 200]
            if not 0 <= index < len(accepted):
                raise StandinError(404, f"no message {index}")
            message = accepted[index]
        blocks = message.body.get("blocks", []) if isinstance(message.body, dict) else []
        for block in blocks:
            for element in block.get("elements", []) if block.get("type") == "actions" else []:
                if element.get("action_id") == action_id:
                    action_ts = f"{time.time():.6f}"
                    return {
                        "type": "block_actions",
                        "team": {"id": team_id, "domain": "sight-local"},
                        "user": {"id": user_id, "username": user_name, "team_id": team_id},
                        "api_app_id": "A0LOCAL",
                        "container": {
                            "type": "message",
                            "message_ts": f"{message.received_at.timestamp():.6f}",
                            "channel_id": "C0LOCAL",
                            "is_ephemeral": False,
                        },
                        "trigger_id": secrets.token_hex(8),
                        "channel": {"id": "C0LOCAL", "name": "sight-ops"},
                        "message": {
                            "type": "message",
                            "ts": f"{message.received_at.timestamp():.6f}",
                            "text": message.body.get("text", ""),
                            "blocks": blocks,
                        },
                        "response_url": response_url,
                        "actions": [
                            {
                                "type": "button",
                                "block_id": block.get("block_id", ""),
                                "action_id": action_id,
                                "value": element.get("value", ""),
                                "text": element.get("text"),
                                "action_ts": action_ts,
                            }
                        ],
                    }
        raise StandinError(404, f"message {index} has no button {action_id!r}")

    def send_interaction(
        self,
        url: str,
        payload: JSON,
        *,
        signing_secret: str,
        timestamp: int | None = None,
        signature: str | None = None,
        timeout_s: float = 60.0,
    ) -> tuple[int, str, bytes, dict[str, str]]:
        """POST ``payload`` to the app's Request URL as Slack does: form-encoded, signed.
        ``timestamp`` / ``signature`` override what Slack would send (tests of a stale or
        forged request). Returns (status, body, the request body, the request headers),
        so the very same request can be delivered again."""
        body = urlencode({"payload": json.dumps(payload)}).encode()
        stamp = str(int(time.time()) if timestamp is None else timestamp)
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": stamp,
            "X-Slack-Signature": signature or slack_signature(signing_secret, stamp, body),
        }
        status, text = deliver(url, body, headers, timeout_s)
        return status, text, body, headers

    def respond(self, index: int, body: Any) -> None:
        """The app's answer on a ``response_url``: kept as an update of message ``index``."""
        with self._lock:
            self._updates.setdefault(index, []).append(body)

    def updates(self, index: int) -> list[Any]:
        with self._lock:
            return list(self._updates.get(index, []))

    def clear(self) -> None:
        """Forget received posts (faults stay)."""
        with self._lock:
            self._received.clear()

    def reset(self) -> None:
        with self._lock:
            self._received.clear()
            self._faults.clear()


def slack_signature(signing_secret: str, timestamp: str, body: bytes) -> str:
    """``v0=<hex>``: HMAC-SHA256 of ``v0:<timestamp>:<body>`` (Slack's request signing)."""
    base = b"v0:" + timestamp.encode() + b":" + body
    return "v0=" + hmac.new(signing_secret.encode(), base, hashlib.sha256).hexdigest()


def deliver(url: str, body: bytes, headers: dict[str, str], timeout_s: float) -> tuple[int, str]:
    """One POST to the app (stdlib: the stand-in needs no HTTP client of its own)."""
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310 - the test names the app's URL
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as answer:  # noqa: S310
            return answer.status, answer.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode("utf-8", "replace")


def _parse_payload(raw: bytes, content_type: str) -> tuple[Any, str | None]:
    """The JSON payload, or the Slack error its absence earns."""
    text = raw.decode("utf-8", errors="replace")
    if "application/x-www-form-urlencoded" in content_type:
        values = parse_qs(text).get("payload")
        if not values:
            return text, "invalid_payload"
        text = values[0]
    try:
        payload = json.loads(text)
    except ValueError:
        return text, "invalid_payload"
    if not isinstance(payload, dict):
        return payload, "invalid_payload"
    return payload, None


def _text_of(obj: Any) -> str:
    if isinstance(obj, Mapping):
        value = obj.get("text", "")
        return value if isinstance(value, str) else ""
    return ""


def _check_limits(payload: Any) -> str | None:
    if not isinstance(payload, Mapping):
        return "invalid_payload"
    blocks = payload.get("blocks")
    if not payload.get("text") and not blocks and not payload.get("attachments"):
        return "no_text"
    if blocks is None:
        return None
    if not isinstance(blocks, list) or len(blocks) > MAX_BLOCKS:
        return "invalid_blocks"
    for block in blocks:
        if not isinstance(block, Mapping) or not isinstance(block.get("type"), str):
            return "invalid_blocks"
        kind = block["type"]
        if kind == "section":
            if len(_text_of(block.get("text"))) > MAX_SECTION_TEXT:
                return "invalid_blocks"
            for item in block.get("fields") or []:
                if len(_text_of(item)) > 2000:
                    return "invalid_blocks"
        elif kind == "header" and len(_text_of(block.get("text"))) > MAX_HEADER_TEXT:
            return "invalid_blocks"
    return None


_SERVICES_PATH = re.compile(r"^(/services/)([^/]+)(.*)$")


def redact_path(path: str) -> str:
    """Keep the team id of a webhook path, hide the rest (webhook URLs are secrets)."""
    match = _SERVICES_PATH.match(path)
    return f"{match.group(1)}{match.group(2)}/***" if match else path


def create_app(state: SlackState | None = None) -> Flask:
    """The Slack webhook sink as a Flask app (``app.extensions["standin"]``)."""
    st = state or SlackState()
    app = Flask("standins.slack")
    app.extensions["standin"] = st

    @app.after_request
    def _log(response: Response) -> Response:
        logger.info("%s %s -> %d", request.method, redact_path(request.path), response.status_code)
        return response

    @app.errorhandler(StandinError)
    def _admin_error(exc: StandinError) -> Response:
        return json_response({"error": exc.message}, exc.code)

    @app.post("/services/<path:rest>")
    def webhook(rest: str) -> Response:
        status, text, headers = st.receive(
            request.path, request.get_data(), request.content_type or ""
        )
        resp = Response(text, status=status, content_type="text/html")
        for key, value in headers.items():
            resp.headers[key] = value
        return resp

    @app.get("/_admin/messages")
    def admin_messages() -> Response:
        path = request.args.get("path")
        which = st.received(path) if request.args.get("all") else st.messages(path)
        shown = [m.to_json() for m in which]
        if not path and not request.args.get("all"):
            for index, item in enumerate(shown):
                item["updates"] = st.updates(index)
        return json_response({"messages": shown})

    @app.post("/actions/<int:index>/<token>")
    def response_url(index: int, token: str) -> Response:
        """A response_url handed out with an interaction: the app updates the message."""
        body, error = _parse_payload(request.get_data(), request.content_type or "")
        if error is not None:
            return Response(error, status=400, content_type="text/plain")
        st.respond(index, body)
        return Response("ok", status=200, content_type="text/plain")

    @app.post("/_admin/interactions")
    def admin_interaction() -> Response:
        """Click a button of message ``message`` as ``user_id``, signed with
        ``signing_secret``; answers what the app answered (and the request, to replay it)."""
        body = admin_json()
        try:
            index = int(body.get("message", -1))
            payload = st.interaction_payload(
                index,
                str(body["action_id"]),
                user_id=str(body.get("user_id", "U0LOCAL")),
                user_name=str(body.get("user_name", "someone")),
                response_url=f"{request.host_url.rstrip('/')}/actions/{index}/"
                f"{secrets.token_hex(8)}",
            )
            status, text, sent, headers = st.send_interaction(
                str(body["url"]),
                payload,
                signing_secret=str(body["signing_secret"]),
                timestamp=int(body["timestamp"]) if body.get("timestamp") is not None else None,
                signature=body.get("signature"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise StandinError(400, f"bad interaction request: {exc}") from exc
        return json_response(
            {"status": status, "body": text, "request_body": sent.decode(), "headers": headers}
        )

    @app.post("/_admin/usergroups")
    def admin_usergroup() -> Response:
        body = admin_json()
        st.set_usergroup(str(body["id"]), [str(u) for u in body.get("users", [])])
        return json_response({}, 201)

    @app.route("/api/usergroups.users.list", methods=["GET", "POST"])
    def usergroups_users_list() -> Response:
        """The Web API method, as slack_sdk's WebClient calls it (token in the header)."""
        if not (request.headers.get("Authorization") or "").startswith("Bearer "):
            return json_response({"ok": False, "error": "not_authed"})
        group = request.values.get("usergroup", "")
        users = st.usergroup(group)
        if users is None:
            return json_response({"ok": False, "error": "no_such_subteam"})
        return json_response({"ok": True, "users": users})

    @app.delete("/_admin/messages")
    def admin_clear() -> Response:
        st.clear()
        return json_response({})

    @app.post("/_admin/faults")
    def admin_fault() -> Response:
        body = admin_json()
        try:
            fault = st.inject_fault(
                int(body["status"]) if body.get("status") is not None else None,
                error=body.get("error"),
                count=int(body.get("count", 1)),
                path=body.get("path"),
                retry_after=(
                    int(body["retry_after"]) if body.get("retry_after") is not None else None
                ),
            )
        except (TypeError, ValueError) as exc:
            raise StandinError(400, str(exc)) from exc
        return json_response(fault.to_json(), 201)

    @app.get("/_admin/faults")
    def admin_faults() -> Response:
        return json_response({"faults": [f.to_json() for f in st.faults()]})

    @app.delete("/_admin/faults")
    def admin_clear_faults() -> Response:
        st.clear_faults()
        return json_response({})

    @app.get("/_admin/stats")
    def admin_stats() -> Response:
        return json_response(st.stats())

    @app.post("/_admin/reset")
    def admin_reset() -> Response:
        st.reset()
        return json_response({})

    return app
