"""Cloud Billing budget notifications (``billing-budget``; docs/events.md).

A budget with a Pub/Sub topic publishes its state there several times a day, whether or
not anything changed (Google: "Set up programmatic budget notifications", schema 1.0).
The data is a JSON object; the attributes name the budget:

- data: ``budgetDisplayName``, ``costAmount``, ``costIntervalStart`` (the start of the
  budget's current period), ``budgetAmount``, ``budgetAmountType`` (``SPECIFIED_AMOUNT``,
  ``LAST_MONTH_COST`` or ``LAST_PERIODS_COST``), ``currencyCode``, and, only once a
  threshold rule has been exceeded in the period, ``alertThresholdExceeded`` (the highest
  one, a fraction: ``0.9`` is 90 %) and ``forecastThresholdExceeded`` (the same for
  forecasted spend);
- attributes: ``billingAccountId``, ``budgetId``, ``schemaVersion`` (``1.0``).

notify posts each threshold once per budget, period and basis
(:meth:`BudgetNotification.crossing_key`; docs/notify.md, "Budget notifications").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from shared.events._common import (
    EventModel,
    FreeText,
    Identifier,
    UtcDatetime,
    invalid,
    load_json_object,
    quote,
    validate,
)

_WHAT = "budget notification"

#: The attribute that marks a message as a budget notification (notify's parse dispatches on it).
BUDGET_ATTRIBUTE = "budgetId"

Basis = Literal["actual", "forecast"]


class BudgetNotification(EventModel):
    """One budget notification, data and attributes together. Amounts are in
    ``currency_code``; thresholds are fractions of ``budget_amount``."""

    budget_display_name: FreeText = Field(alias="budgetDisplayName")
    cost_amount: float = Field(alias="costAmount", allow_inf_nan=False)
    cost_interval_start: UtcDatetime = Field(alias="costIntervalStart")
    budget_amount: float = Field(alias="budgetAmount", allow_inf_nan=False)
    budget_amount_type: Identifier = Field(default="SPECIFIED_AMOUNT", alias="budgetAmountType")
    currency_code: Identifier = Field(alias="currencyCode", min_length=1, max_length=8)
    alert_threshold_exceeded: float | None = Field(
        default=None, alias="alertThresholdExceeded", ge=0, allow_inf_nan=False
    )
    forecast_threshold_exceeded: float | None = Field(
        default=None, alias="forecastThresholdExceeded", ge=0, allow_inf_nan=False
    )
    billing_account_id: Identifier = Field(alias="billingAccountId", min_length=1)
    budget_id: Identifier = Field(alias="budgetId", min_length=1)
    schema_version: Identifier = Field(default="1.0", alias="schemaVersion")

    @property
    def crossing(self) -> tuple[Basis, float] | None:
        """The threshold this notification says is exceeded: actual spend first, else the
        forecast; None while spend is below every threshold rule."""
        if self.alert_threshold_exceeded is not None:
            return "actual", self.alert_threshold_exceeded
        if self.forecast_threshold_exceeded is not None:
            return "forecast", self.forecast_threshold_exceeded
        return None

    def crossing_key(self) -> str:
        """``budget:<budget id>:<period start>:<basis>:<threshold>`` (``:below`` when
        nothing is exceeded): Billing re-sends the same state many times a day, and the
        same key means the same news."""
        period = self.cost_interval_start.strftime("%Y-%m-%dT%H:%M:%SZ")
        crossing = self.crossing
        what = "below" if crossing is None else f"{crossing[0]}:{crossing[1]:g}"
        return f"budget:{self.budget_id}:{period}:{what}"


def parse_budget_message(data: bytes, attributes: Mapping[str, str]) -> BudgetNotification:
    """Parse a ``billing-budget`` message; ``InvalidEventError`` if it can never be handled
    (no ``budgetId``/``billingAccountId`` attribute, a schema other than 1.x, a body
    that is not the documented JSON object)."""
    for name in ("billingAccountId", BUDGET_ATTRIBUTE):
        if not attributes.get(name):
            raise invalid(_WHAT, f"attribute {name!r} is missing")
    schema = attributes.get("schemaVersion") or "1.0"
    if schema.split(".", 1)[0] != "1":
        raise invalid(_WHAT, f"schemaVersion {quote(schema)} is not 1.x")
    body = load_json_object(data, _WHAT)
    body.update(
        billingAccountId=attributes["billingAccountId"],
        budgetId=attributes[BUDGET_ATTRIBUTE],
        schemaVersion=schema,
    )
    return validate(BudgetNotification, body, _WHAT)
