"""Cloud Billing budget notifications: the documented JSON body and attributes (schema 1.0)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.errors import InvalidEventError
from shared.events import BudgetNotification, parse_budget_message
from tests.helpers import GOLDEN

BILLING = GOLDEN / "billing"


def message(name: str, **changes: Any) -> tuple[bytes, dict[str, str]]:
    loaded = json.loads((BILLING / f"{name}.json").read_text())
    return json.dumps({**loaded["data"], **changes}).encode(), loaded["attributes"]


def parse(name: str, **changes: Any) -> BudgetNotification:
    return parse_budget_message(*message(name, **changes))


@pytest.mark.parametrize("name", sorted(p.stem for p in BILLING.glob("*.json")))
def test_every_golden_message_parses(name: str) -> None:
    notification = parse(name)
    assert notification.budget_id == "de72f49d-779b-4945-a127-4d6ce8def0bb"
    assert notification.billing_account_id == "01D4EE-079462-DFD6EC"
    assert notification.cost_interval_start == datetime(2025, 6, 1, 7, tzinfo=UTC)


def test_an_exceeded_threshold_is_an_actual_crossing_keyed_by_budget_period_and_threshold() -> None:
    notification = parse("budget_exceeded")
    assert notification.budget_display_name == "sight-prod monthly"
    assert (notification.cost_amount, notification.budget_amount) == (183.47, 200.0)
    assert (notification.currency_code, notification.budget_amount_type) == (
        "USD",
        "SPECIFIED_AMOUNT",
    )
    assert notification.crossing == ("actual", 0.9)
    assert notification.crossing_key() == (
        "budget:de72f49d-779b-4945-a127-4d6ce8def0bb:2025-06-01T07:00:00Z:actual:0.9"
    )
    # A re-send with more spend is the same news; the next threshold is not.
    assert parse("budget_exceeded", costAmount=190.0).crossing_key() == (
        notification.crossing_key()
    )
    assert parse("budget_exceeded", alertThresholdExceeded=1.0).crossing_key().endswith(":actual:1")


def test_a_forecast_crossing_and_no_crossing() -> None:
    assert parse("budget_forecast").crossing == ("forecast", 1.0)
    below = parse("budget_below_threshold")
    assert below.crossing is None
    assert below.crossing_key().endswith(":2025-06-01T07:00:00Z:below")


def test_actual_spend_wins_when_both_thresholds_are_given() -> None:
    both = parse("budget_forecast", alertThresholdExceeded=0.5)
    assert both.crossing == ("actual", 0.5)


@pytest.mark.parametrize(
    ("attributes", "said"),
    [
        ({"billingAccountId": "01D4EE-079462-DFD6EC"}, "attribute 'budgetId' is missing"),
        ({"budgetId": "b-1"}, "attribute 'billingAccountId' is missing"),
        (
            {"billingAccountId": "a", "budgetId": "b", "schemaVersion": "2.0"},
            "schemaVersion '2.0' is not 1.x",
        ),
    ],
)
def test_attributes_that_do_not_name_a_budget_are_refused(
    attributes: dict[str, str], said: str
) -> None:
    data, _ = message("budget_exceeded")
    with pytest.raises(InvalidEventError, match=said):
        parse_budget_message(data, attributes)


@pytest.mark.parametrize(
    ("data", "said"),
    [
        (b"", "data is empty"),
        (b"[1]", "must be a JSON object"),
        (b'{"budgetDisplayName": "x"}', "field 'costAmount'"),
        (
            b'{"budgetDisplayName": "x", "costAmount": NaN, "budgetAmount": 1,'
            b' "costIntervalStart": "2025-06-01T07:00:00Z", "currencyCode": "USD"}',
            "field 'costAmount'",
        ),
        (
            b'{"budgetDisplayName": "x", "costAmount": 1, "budgetAmount": 1,'
            b' "costIntervalStart": "2025-06-01T07:00:00Z", "currencyCode": "USD",'
            b' "alertThresholdExceeded": -0.5}',
            "field 'alertThresholdExceeded'",
        ),
    ],
)
def test_a_body_that_is_not_the_documented_object_is_refused(data: bytes, said: str) -> None:
    _, attributes = message("budget_exceeded")
    with pytest.raises(InvalidEventError, match=said):
        parse_budget_message(data, attributes)
