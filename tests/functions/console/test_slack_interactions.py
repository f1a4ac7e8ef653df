"""Slack's buttons, end to end over HTTP: notify's message with its buttons in the Slack
stand-in, the stand-in clicking one as a user (signed as Slack signs), the
slack_actions function served by functions-framework acting through the CLI's code on
the Cloud Run stand-in and the real ledger, and updating the message through its
response_url (docs/console.md, "Acting from Slack")."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import functions_framework
import httpx
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from shared.notify import parse_config
from shared.notify._render import render_ops
from shared.rollback import manual_mark, manual_rollback
from shared.runtime import Deps, set_process_deps
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from standins import slack as slack_standin
from tests.functions.console.conftest import CONSOLE_SECRETS, REGION, SOURCE
from tests.helpers import PROJECT

SECRET = f"signing-{uuid.uuid4().hex}"  # pragma: allowlist secret
ALLOWED, GROUP, GROUPIE = "U0ALLOWED", "S0ONCALL", "U0GROUPIE"
HOOK = "/services/T0CON/B0CON/interactions"


@pytest.fixture(scope="module")
def slack() -> Iterator[tuple[slack_standin.SlackState, RunningServer]]:
    state = slack_standin.SlackState()
    state.set_usergroup(GROUP, [GROUPIE])
    with serve(slack_standin.create_app(state)) as running:
        yield state, running


@dataclass
class World:
    deps: Deps
    slack: slack_standin.SlackState
    slack_url: str
    endpoint: str
    cloudrun: cloudrun_standin.CloudRunState
    service: str
    bad: str
    good: str
    message: int  # the rollback's Slack message, by index in the stand-in

    def click(self, user: str, action: str = "sightops:undo_rollback", **extra: Any) -> Any:
        answer = httpx.post(
            f"{self.slack_url}/_admin/interactions",
            json={
                "url": self.endpoint,
                "message": self.message,
                "action_id": action,
                "user_id": user,
                "signing_secret": SECRET,
                **extra,
            },
            timeout=60,
        )
        answer.raise_for_status()
        return answer.json()

    def serving(self) -> dict[str, int]:
        svc = self.cloudrun.get_service(PROJECT, REGION, self.service)
        return {s["revision"]: s["percent"] for s in svc["trafficStatuses"] if s.get("percent")}

    def rows(self, kind: str) -> list[tuple[str, str]]:
        with self.deps.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT status, actor FROM ops.actions WHERE service = :s AND kind = :k"
                    " ORDER BY id"
                ),
                {"s": self.service, "k": kind},
            )
            return [(r.status, r.actor) for r in found]


@pytest.fixture
def world(
    deps: Deps,
    console_deps: Deps,
    cloudrun: tuple[cloudrun_standin.CloudRunState, RunningServer],
    slack: tuple[slack_standin.SlackState, RunningServer],
) -> Iterator[World]:
    """sight-ops rolled a service back from its bad revision: the rollback's message, with
    its Undo button, is in the Slack stand-in."""
    from google.cloud import pubsub_v1

    from sightops.pubsub_admin import ensure_topic

    state, server = slack
    console_deps.settings = console_deps.settings.model_copy(
        update={
            "console": console_deps.settings.console.model_copy(
                update={
                    "slack_signing_secret": SecretStr(SECRET),
                    "slack_allowed": [ALLOWED, GROUP],
                    "slack_bot_token": SecretStr("xoxb-console-test"),
                    "slack_api_url": server.url,
                }
            )
        }
    )
    CONSOLE_SECRETS.append(SECRET)
    os.environ["PUBSUB_EMULATOR_HOST"] = console_deps.settings.pubsub_emulator_host or ""
    ensure_topic(pubsub_v1.PublisherClient(), PROJECT, console_deps.settings.topics.ops_events)
    cloud, _ = cloudrun
    service = f"slack-{uuid.uuid4().hex[:8]}"
    good, bad = f"{service}-00001-aaa", f"{service}-00002-bbb"
    cloud.create_service(PROJECT, REGION, service, "img:1", revision=good)
    cloud.create_revision(PROJECT, REGION, service, image="img:2", revision=bad, promote=True)
    manual_mark(console_deps, service, good, "good", "baseline", "automation")
    report = manual_rollback(console_deps, service, to=good, actor="automation")
    assert report.serving_after == {good: 100}
    config = parse_config({})
    payload = render_ops(report.event, config, None, actions=True).to_dict()
    httpx.post(server.url + HOOK, json=payload, timeout=10).raise_for_status()
    app = functions_framework.create_app(
        target="slack_actions", source=str(SOURCE), signature_type="http"
    )
    with serve(app) as endpoint:
        yield World(
            console_deps,
            state,
            server.url,
            endpoint.url + "/slack/interactions",
            cloud,
            service,
            bad,
            good,
            len(state.messages()) - 1,
        )
    set_process_deps(deps)


def test_a_signed_click_by_an_allowed_user_acts_once_and_updates_the_message(
    world: World,
) -> None:
    answer = world.click(ALLOWED)
    assert answer["status"] == 200, answer
    assert world.serving() == {world.bad: 100}  # undone: traffic back on the revision
    assert ("succeeded", f"manual:slack:{ALLOWED}") in world.rows("rollback")
    assert world.rows("interaction") == [
        ("accepted", f"slack:{ALLOWED}"),
        ("succeeded", f"slack:{ALLOWED}"),
    ]
    [update] = world.slack.updates(world.message)
    assert update["replace_original"] is True
    assert not any(b.get("block_id") == "sightops_actions" for b in update["blocks"])
    assert f"*Undo rollback* by <@{ALLOWED}>" in update["blocks"][-1]["elements"][0]["text"]

    # the very same delivery again (a retry, a replay within the window): nothing more
    again = slack_standin.deliver(
        world.endpoint, answer["request_body"].encode(), answer["headers"], 30
    )
    assert again[0] == 200 and "already handled" in again[1]
    assert [r for r in world.rows("rollback") if r[1].startswith("manual:slack:")] == [
        ("succeeded", f"manual:slack:{ALLOWED}")
    ]
    assert len(world.rows("interaction")) == 2
    assert len(world.slack.updates(world.message)) == 1


@pytest.mark.parametrize(
    "forgery",
    [
        {"signature": "v0=" + "0" * 64},  # not Slack's signature
        {"timestamp": int(time.time()) - 6 * 60},  # Slack's, but older than 5 minutes
        {"signing_secret": "not-the-apps-secret"},  # pragma: allowlist secret
    ],
    ids=["wrong-signature", "stale", "other-secret"],
)
def test_a_wrong_or_stale_signature_is_401_and_changes_nothing(
    world: World, forgery: dict[str, Any]
) -> None:
    answer = world.click(ALLOWED, **forgery)
    assert answer["status"] == 401
    assert '"invalid_signature"' in answer["body"]
    assert world.serving() == {world.good: 100}
    assert world.rows("interaction") == []
    assert world.slack.updates(world.message) == []


def test_an_unknown_user_is_refused_and_recorded(world: World) -> None:
    answer = world.click("U0STRANGER")
    assert answer["status"] == 200 and "not allowed" in answer["body"]
    assert world.serving() == {world.good: 100}
    assert world.rows("interaction") == [("refused", "slack:U0STRANGER")]
    assert not any(r[1].startswith("manual:") for r in world.rows("rollback"))
    assert world.slack.updates(world.message) == []


def test_a_member_of_an_allowed_user_group_may_act(world: World) -> None:
    answer = world.click(GROUPIE)
    assert answer["status"] == 200, answer
    assert world.serving() == {world.bad: 100}
    assert ("succeeded", f"manual:slack:{GROUPIE}") in world.rows("rollback")
