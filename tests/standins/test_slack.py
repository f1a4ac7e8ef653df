"""The Slack incoming-webhook sink, driven by slack_sdk's WebhookClient."""

from __future__ import annotations

import logging
import time

import pytest
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.models.blocks import SectionBlock
from slack_sdk.webhook import WebhookClient

from standins import RunningServer
from standins.slack import SlackState, redact_path

HOOK = "/services/T0TEAM/B0BOT/s3cr3tw3bh00kt0k3n"
OTHER_HOOK = "/services/T0TEAM/B0OTHER/an0th3rt0k3n"


def client(server: RunningServer, path: str = HOOK, **kwargs) -> WebhookClient:
    return WebhookClient(f"{server.url}{path}", **kwargs)


def test_post_is_recorded_and_answered_200_ok(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    response = client(slack_server).send(
        text="Build 42 failed", blocks=[SectionBlock(text="*Build 42* failed")]
    )

    assert response.status_code == 200
    assert response.body == "ok"
    [message] = slack_state.messages()
    assert message.path == HOOK
    assert message.body["text"] == "Build 42 failed"
    assert message.body["blocks"][0]["type"] == "section"
    assert message.received_at.tzinfo is not None


def test_rate_limited_post_is_retried_after_retry_after_and_recorded_once(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    slack_state.rate_limit(count=1, retry_after=1)
    webhook = client(slack_server, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=2)])

    started = time.monotonic()
    response = webhook.send(text="deploy promoted")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 1.0  # slept Retry-After (+ up to 1 s of jitter)
    assert len(slack_state.messages()) == 1
    [limited, accepted] = slack_state.received()
    assert (limited.status, limited.response_body) == (429, "rate_limited")
    assert limited.headers == {"Retry-After": "1"}
    assert accepted.status == 200
    assert slack_state.stats()["by_status"] == {"429": 1, "200": 1}


def test_rate_limit_past_the_retry_budget_comes_back_as_429(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    slack_state.rate_limit(count=5, retry_after=0)
    webhook = client(slack_server, retry_handlers=[RateLimitErrorRetryHandler(max_retry_count=1)])

    response = webhook.send(text="storm")

    assert response.status_code == 429
    assert response.body == "rate_limited"
    assert response.headers["Retry-After"] == "0"
    assert slack_state.messages() == []
    assert len(slack_state.received()) == 2


def test_channel_is_archived_comes_back_as_410_and_is_not_retried(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    slack_state.inject_fault(error="channel_is_archived")
    webhook = client(
        slack_server,
        retry_handlers=[
            RateLimitErrorRetryHandler(max_retry_count=2),
            ServerErrorRetryHandler(max_retry_count=2),
        ],
    )

    response = webhook.send(text="anyone there?")

    assert response.status_code == 410
    assert response.body == "channel_is_archived"
    assert len(slack_state.received()) == 1
    assert slack_state.messages() == []


@pytest.mark.parametrize(
    ("status", "error", "body"),
    [
        (None, "invalid_token", "invalid_token"),
        (None, "no_service", "no_service"),
        (None, "invalid_payload", "invalid_payload"),
        (None, "action_prohibited", "action_prohibited"),
        (404, None, "no_service"),
        (403, None, "invalid_token"),
        (500, None, "rollup_error"),
        (503, None, ""),
    ],
)
def test_injected_errors_use_slacks_status_codes_and_text_bodies(
    slack_server: RunningServer,
    slack_state: SlackState,
    status: int | None,
    error: str | None,
    body: str,
) -> None:
    slack_state.inject_fault(status, error=error)

    response = client(slack_server).send(text="x")

    expected = {
        "invalid_token": 403,
        "no_service": 404,
        "invalid_payload": 400,
        "action_prohibited": 403,
    }
    assert response.status_code == (status or expected[str(error)])
    assert response.body == body


def test_server_errors_are_retried_by_slack_sdks_server_error_handler(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    slack_state.inject_fault(503)
    webhook = client(slack_server, retry_handlers=[ServerErrorRetryHandler(max_retry_count=1)])

    response = webhook.send(text="retry me")

    assert response.status_code == 200
    assert slack_state.stats()["by_status"] == {"503": 1, "200": 1}


def test_fault_for_one_webhook_does_not_touch_another(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    slack_state.inject_fault(error="channel_is_archived", path=HOOK)

    assert client(slack_server, OTHER_HOOK).send(text="a").status_code == 200
    assert client(slack_server, HOOK).send(text="b").status_code == 410
    assert client(slack_server, HOOK).send(text="c").status_code == 200
    assert [m.body["text"] for m in slack_state.messages(OTHER_HOOK)] == ["a"]
    assert [m.body["text"] for m in slack_state.messages(HOOK)] == ["c"]
    assert slack_state.stats()["accepted_by_path"] == {OTHER_HOOK: 1, HOOK: 1}


def test_body_that_is_not_json_is_invalid_payload(slack_server: RunningServer, web) -> None:
    status, _, text = web.request(
        "POST", f"{slack_server.url}{HOOK}", headers={"Content-Type": "application/json"}
    )
    assert (status, text) == (400, "invalid_payload")


def test_payload_without_text_or_blocks_is_no_text(slack_server: RunningServer, web) -> None:
    status, _, text = web.request("POST", f"{slack_server.url}{HOOK}", {"username": "bot"})
    assert (status, text) == (400, "no_text")


def test_form_encoded_payload_is_accepted(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    import urllib.parse
    import urllib.request

    data = urllib.parse.urlencode({"payload": '{"text": "legacy form post"}'}).encode()
    with urllib.request.urlopen(f"{slack_server.url}{HOOK}", data=data, timeout=5) as resp:
        assert (resp.status, resp.read()) == (200, b"ok")
    assert slack_state.messages()[0].body == {"text": "legacy form post"}


def test_more_than_50_blocks_is_invalid_blocks(
    slack_server: RunningServer, slack_state: SlackState
) -> None:
    blocks = [SectionBlock(text=f"line {i}") for i in range(51)]

    response = client(slack_server).send(text="too long", blocks=blocks)

    assert (response.status_code, response.body) == (400, "invalid_blocks")
    assert slack_state.messages() == []


def test_header_over_150_characters_is_invalid_blocks(slack_server: RunningServer) -> None:
    header = {"type": "header", "text": {"type": "plain_text", "text": "h" * 150}}
    assert client(slack_server).send(text="x", blocks=[header]).status_code == 200
    header["text"]["text"] += "h"  # slack_sdk's HeaderBlock refuses this; raw dicts do not
    response = client(slack_server).send(text="x", blocks=[header])
    assert (response.status_code, response.body) == (400, "invalid_blocks")


def test_section_text_at_the_3000_character_limit_is_accepted(
    slack_server: RunningServer,
) -> None:
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 3000}}
    assert client(slack_server).send(text="x", blocks=[section]).status_code == 200
    section["text"]["text"] += "s"
    assert client(slack_server).send(text="x", blocks=[section]).body == "invalid_blocks"


def test_limits_are_not_enforced_when_not_strict(
    slack_state: SlackState, slack_server: RunningServer
) -> None:
    slack_state.strict = False
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "s" * 5000}}
    assert client(slack_server).send(blocks=[section]).status_code == 200


def test_admin_http_api_lists_clears_injects_and_counts(slack_server: RunningServer, web) -> None:
    base = slack_server.url
    status, fault = web.json(
        "POST",
        f"{base}/_admin/faults",
        {"status": 429, "retry_after": 2, "count": 1, "path": HOOK},
    )
    assert status == 201
    assert fault["body"] == "rate_limited"
    status, headers, text = web.request("POST", f"{base}{HOOK}", {"text": "one"})
    assert (status, text, headers["Retry-After"]) == (429, "rate_limited", "2")
    assert web.request("POST", f"{base}{HOOK}", {"text": "two"})[0] == 200
    assert web.request("POST", f"{base}{OTHER_HOOK}", {"text": "three"})[0] == 200

    _, listed = web.json("GET", f"{base}/_admin/messages?path={HOOK}")
    assert [m["body"]["text"] for m in listed["messages"]] == ["two"]
    _, every = web.json("GET", f"{base}/_admin/messages?all=1")
    assert [m["status"] for m in every["messages"]] == [429, 200, 200]
    _, stats = web.json("GET", f"{base}/_admin/stats")
    assert stats["by_status"] == {"429": 1, "200": 2}
    assert web.json("POST", f"{base}/_admin/faults", {"error": "no_such_error"})[0] == 400

    assert web.json("DELETE", f"{base}/_admin/messages")[0] == 200
    assert web.json("GET", f"{base}/_admin/messages")[1] == {"messages": []}
    web.json("POST", f"{base}/_admin/faults", {"error": "channel_is_archived"})
    assert web.json("POST", f"{base}/_admin/reset")[0] == 200
    assert web.request("POST", f"{base}{HOOK}", {"text": "after reset"})[0] == 200


def test_log_lines_do_not_reveal_the_webhook_token(
    slack_server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="standins.slack"):
        client(slack_server).send(text="hello")

    assert "s3cr3tw3bh00kt0k3n" not in caplog.text
    assert "POST /services/T0TEAM/*** -> 200" in caplog.text
    assert redact_path("/_admin/messages") == "/_admin/messages"
