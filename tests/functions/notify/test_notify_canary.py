"""The canary's messages through notify's entry point (docs/notify.md, docs/canary.md):
one message per outcome with every step's evidence, never one per step by default, and
never a second message for the release the canary ended."""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text

from shared.release import release_trace_id
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.functions.notify.test_notify_events import golden
from tests.helpers import envelope, push

RELEASE = "sight-api@4f1c2a9e7b3d"


def deliver(client: Any, name: str, **changes: Any) -> str:
    """Push one golden ops event (fresh id) into notify; its event id."""
    data, attributes = golden("ops", name, **changes)
    assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    return attributes["id"]


def test_a_rolled_back_canary_posts_one_message_with_the_evidence_numbers(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, deps = make_notify()

    event_id = deliver(client, "canary_rolled_back")

    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["text"].startswith(":rewind: Canary rolled back: sight-api: errors:")
    blocks = json.dumps(message.body["blocks"], ensure_ascii=False)
    # canary vs stable counts and rates, the boundaries, the traffic it moved
    for shown in ("24/600", "4.00 %", "57/11400", "0.50 %", "rollback at 3.00", "5 % → 0 %"):
        assert shown in blocks, shown
    assert "`sight-api-00043-vub` serves 100 % again" in blocks
    assert f"release `{RELEASE}`" in blocks
    assert f"trace `{release_trace_id(RELEASE)}`" in blocks
    with deps.engine.connect() as conn:
        [row] = conn.execute(
            text(
                "SELECT status, release_id FROM ops.actions"
                " WHERE kind = 'notification' AND trigger_event_id = :id"
            ),
            {"id": event_id},
        ).all()
    assert (row.status, row.release_id) == ("sent", RELEASE)


@pytest.mark.parametrize(
    ("config", "posted"),
    [({}, 0), ({"filters": {"canary_stepped": True}}, 1)],
    ids=["default", "opted-in"],
)
def test_a_canary_step_is_posted_only_when_the_config_opts_in(
    make_notify: NotifyFactory, sink: Any, config: dict[str, Any], posted: int
) -> None:
    state, _ = sink
    client, _ = make_notify(config)

    deliver(client, "canary_stepped")
    deliver(client, "canary_requested")  # the canary's input: never a message
    deliver(client, "canary_tick")

    assert len(state.messages(WEBHOOK_PATH)) == posted


def test_a_release_the_canary_ended_is_posted_once_as_the_canarys_message(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify()

    deliver(client, "canary_promoted")
    deliver(client, "release_promoted", via="canary")

    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["text"].startswith(":large_green_circle: Canary promoted: sight-api")
    deliver(client, "release_promoted")  # a release sightops deploy promoted: posted
    assert len(state.messages(WEBHOOK_PATH)) == 2


def test_a_held_canary_escalates_with_the_configured_mention(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, _ = make_notify({"escalation": {"mention": "<!here>"}})

    deliver(client, "canary_held")

    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["text"].startswith("<!here> :double_vertical_bar: Canary held")
    assert "sightops canary status sight-api" in json.dumps(message.body["blocks"])
