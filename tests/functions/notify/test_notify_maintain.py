"""notify and ``sight.ops.maintain.completed``, through notify's entry point into the Slack
stand-in: a run is posted only when something was done or is wrong (docs/maintain.md)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from shared.runtime import Deps
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.functions.notify.test_notify_events import golden
from tests.helpers import envelope, push


def receipt(deps: Deps, event_id: str) -> str:
    with deps.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT outcome FROM ops.event_receipts WHERE consumer = 'notify'"
                     " AND event_id = :id"),
                {"id": event_id},
            ).scalar_one()
        )  # fmt: skip


def test_a_run_that_rebuilt_an_index_and_found_a_failed_one_is_posted(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, deps = make_notify()
    data, attributes = golden("ops", "maintain_completed")
    assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["text"].startswith(":warning: Database maintenance: rebuilt 1 index")
    assert receipt(deps, attributes["id"]) == "handled"


def test_a_run_that_did_nothing_and_found_nothing_wrong_is_not_posted(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    client, deps = make_notify()
    quiet = golden("ops", "maintain_completed", indexes=[], graph=[], problems=[])
    skipped = golden(
        "ops", "maintain_completed", status="skipped", reason="a migration holds the lock",
        indexes=[], graph=[], problems=[],
    )  # fmt: skip
    for data, attributes in (quiet, skipped):
        assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
        assert receipt(deps, attributes["id"]) == "skipped"
    assert state.received() == []
