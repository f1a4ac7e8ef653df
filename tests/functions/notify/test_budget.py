"""Budget notifications through notify's entry point into the Slack stand-in
(docs/notify.md, "Budget notifications"): Cloud Billing re-sends a budget's state many
times a day, and each threshold is posted once per budget period.

``REGEN_GOLDEN=1`` rewrites tests/fixtures/golden/slack/budget_exceeded.json; review the diff.
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

from sqlalchemy import text

from shared.events import parse_budget_message
from shared.notify import parse_config, render_budget
from shared.runtime import Deps
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.helpers import GOLDEN, envelope, push

TOPIC = "billing-budget"


def budget_message(
    name: str, budget_id: str, message_id: str | None = None, **changes: Any
) -> dict[str, Any]:
    """A golden notification for budget ``budget_id``, as Pub/Sub pushes it (each re-send
    by Cloud Billing is a new message with a new id)."""
    loaded = json.loads((GOLDEN / "billing" / f"{name}.json").read_text())
    attributes = {**loaded["attributes"], "budgetId": budget_id}
    return envelope({**loaded["data"], **changes}, attributes, message_id=message_id)


def claims(deps: Deps, budget_id: str) -> list[tuple[str, float]]:
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT detail->>'basis', CAST(detail->>'threshold' AS float) FROM ops.actions"
                " WHERE kind = 'budget' AND detail->>'budget_id' = :b ORDER BY id"
            ),
            {"b": budget_id},
        ).all()
    return [(basis, threshold) for basis, threshold in rows]


def forget_receipts(deps: Deps, budget_id: str) -> None:
    """What expires long before a budget period ends: the runtime's receipts (7 days) and
    notify's sent-markers in Redis (2 days)."""
    prefix = deps.settings.notify.redis_prefix
    markers = list(deps.redis.scan_iter(f"{prefix}sent:*:budget:{budget_id}:*"))
    assert markers and deps.redis.delete(*markers) == len(markers)
    with deps.engine.begin() as conn:
        deleted = conn.execute(
            text("DELETE FROM ops.event_receipts WHERE consumer = 'notify' AND event_id LIKE :k"),
            {"k": f"budget:{budget_id}:%"},
        ).rowcount
    assert deleted >= 1  # the re-sends were deduplicated by receipt until now


def test_a_threshold_is_posted_once_per_period_and_below_threshold_never(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    notify, deps = make_notify()
    budget = str(uuid.uuid4())

    def posted() -> list[Any]:
        return state.messages(WEBHOOK_PATH)

    below = push(notify, TOPIC, budget_message("budget_below_threshold", budget))
    assert below.status_code == 200 and posted() == []

    assert push(notify, TOPIC, budget_message("budget_exceeded", budget)).status_code == 200
    [first] = posted()
    assert first.body["text"].startswith(
        ":warning: Budget sight-prod monthly: spend passed 90 % of the budget:"
        " 183.47 USD of 200.00 USD"
    )

    # Billing's re-sends: the same state with more spend, hours later (new message ids).
    for cost in (185.0, 187.5):
        again = budget_message("budget_exceeded", budget, costAmount=cost)
        assert push(notify, TOPIC, again).status_code == 200
    assert len(posted()) == 1
    # Weeks later receipts and sent-markers are gone (docs/schema.md, "Pruning"); the
    # claim in ops.actions is not.
    forget_receipts(deps, budget)
    late = budget_message("budget_exceeded", budget, costAmount=195.0)
    assert push(notify, TOPIC, late).status_code == 200
    assert len(posted()) == 1

    # The next threshold is news; a late copy of the lower one after it is not.
    assert (
        push(
            notify, TOPIC, budget_message("budget_exceeded", budget, alertThresholdExceeded=1.0)
        ).status_code
        == 200
    )
    assert (
        push(
            notify, TOPIC, budget_message("budget_exceeded", budget, alertThresholdExceeded=0.5)
        ).status_code
        == 200
    )
    assert len(posted()) == 2
    assert posted()[1].body["text"].startswith(":money_with_wings: Budget sight-prod monthly")

    # A new budget period starts over.
    next_month = budget_message("budget_exceeded", budget, costIntervalStart="2025-07-01T07:00:00Z")
    assert push(notify, TOPIC, next_month).status_code == 200
    assert len(posted()) == 3
    assert claims(deps, budget) == [("actual", 0.9), ("actual", 1.0), ("actual", 0.9)]


def test_a_forecast_is_posted_apart_from_actual_spend(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    notify, deps = make_notify()
    budget = str(uuid.uuid4())
    assert push(notify, TOPIC, budget_message("budget_forecast", budget)).status_code == 200
    assert push(notify, TOPIC, budget_message("budget_exceeded", budget)).status_code == 200
    texts = [m.body["text"] for m in state.messages(WEBHOOK_PATH)]
    assert texts[0].startswith(":crystal_ball: Budget sight-prod monthly: spend is forecast")
    assert texts[1].startswith(":warning: Budget sight-prod monthly: spend passed 90 %")
    assert claims(deps, budget) == [("forecast", 1.0), ("actual", 0.9)]


def test_the_budget_name_is_escaped_and_the_runbook_linked(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    notify, _ = make_notify({"runbook_base_url": "https://runbooks.example/docs/runbooks/"})
    hostile = "<!channel> & <https://evil.example|click>"
    message = budget_message("budget_exceeded", str(uuid.uuid4()), budgetDisplayName=hostile)
    assert push(notify, TOPIC, message).status_code == 200
    [sent] = state.messages(WEBHOOK_PATH)
    shown = json.dumps(sent.body)
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in shown
    assert "<!channel>" not in shown and "<https://evil" not in shown
    assert "https://runbooks.example/docs/runbooks/budget.md" in shown


def test_a_message_without_the_budget_attributes_is_rejected_not_retried(
    make_notify: NotifyFactory, sink: Any
) -> None:
    state, _ = sink
    notify, _ = make_notify()
    body = budget_message("budget_exceeded", str(uuid.uuid4()))
    body["message"]["attributes"].pop("billingAccountId")
    assert push(notify, TOPIC, body).status_code == 200  # acknowledged: it never can be handled
    assert state.messages(WEBHOOK_PATH) == []


def test_golden_slack_payload() -> None:
    """The rendered message, pinned (Block Kit, escaping, the runbook button)."""
    data = budget_message("budget_exceeded", "de72f49d-779b-4945-a127-4d6ce8def0bb")
    raw = json.loads((GOLDEN / "billing" / "budget_exceeded.json").read_text())
    notification = parse_budget_message(json.dumps(raw["data"]).encode(), raw["attributes"])
    assert data["message"]["attributes"] == raw["attributes"]
    config = parse_config({"runbook_base_url": "https://runbooks.example/docs/runbooks/"})
    rendered = render_budget(notification, config.runbook_base_url).to_dict()
    path = GOLDEN / "slack" / "budget_exceeded.json"
    if os.environ.get("REGEN_GOLDEN") == "1":
        path.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n")
    assert rendered == json.loads(path.read_text())
