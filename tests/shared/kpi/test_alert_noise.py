"""Alert noise as a decision table: each row a small ledger and the (policy, month)
figures it must give (docs/metrics.md, "Alert noise"). Pure: no database, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.kpi.release_metrics import (
    ActionFact,
    IncidentFact,
    LedgerFacts,
    NoiseRule,
    compute_alert_noise,
    compute_report,
)

SINCE = datetime(2021, 3, 10, tzinfo=UTC)  # mid-March: the month is counted from March 1
UNTIL = datetime(2021, 3, 24, tzinfo=UTC)
MIN = timedelta(minutes=1)
POLICY = "api 5xx"


def at(day: int, hour: float = 10) -> datetime:
    """March 2021, day ``day`` at ``hour`` UTC."""
    return datetime(2021, 3, day, tzinfo=UTC) + timedelta(hours=hour)


def incident(
    incident_id: str,
    start: datetime,
    minutes: float | None,
    *,
    service: str | None = "api",
    policy: str | None = POLICY,
) -> list[IncidentFact]:
    """The ledger's rows of one incident: open at ``start``, closed ``minutes`` later
    (None: still open), as rollback's ledger writes them."""
    rows = [IncidentFact(incident_id, "open", start, service, started_at=start, policy=policy)]
    if minutes is not None:
        end = start + timedelta(minutes=minutes)
        rows.append(
            IncidentFact(
                incident_id, "closed", end, service, started_at=start, ended_at=end, policy=policy
            )
        )
    return rows


def action(kind: str, status: str, when: datetime, **more: Any) -> ActionFact:
    return ActionFact(more.pop("service", "api"), kind, status, when, **more)


@dataclass
class Row:
    """One line of the table: a ledger and the expected ``(policy, month): (incidents,
    likely false positives, over target)``."""

    name: str
    incidents: list[IncidentFact]
    actions: list[ActionFact] = field(default_factory=list)
    rule: NoiseRule = field(default_factory=NoiseRule)
    service: str | None = None
    expect: dict[tuple[str, str], tuple[int, int, bool]] = field(default_factory=dict)


TABLE = [
    Row(
        "an incident that closed by itself within 15 minutes is a likely false positive",
        incident("i1", at(11), 5),
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "exactly 15 minutes still counts; one second more does not",
        incident("i1", at(11), 15) + incident("i2", at(12), 15 + 1 / 60),
        expect={(POLICY, "2021-03"): (2, 1, False)},
    ),
    Row(
        "a still-open incident is counted, never as a false positive",
        incident("i1", at(11), None),
        expect={(POLICY, "2021-03"): (1, 0, False)},
    ),
    Row(
        "a rollback that moved traffic while it was open means it was real",
        incident("i1", at(11), 10),
        actions=[action("rollback", "succeeded", at(11) + 4 * MIN)],
        expect={(POLICY, "2021-03"): (1, 0, False)},
    ),
    Row(
        "a freeze (escalated to a human) is an action too",
        incident("i1", at(11), 10),
        actions=[action("freeze", "frozen", at(11) + 4 * MIN)],
        expect={(POLICY, "2021-03"): (1, 0, False)},
    ),
    Row(
        "a skipped rollback and a dry run are not",
        incident("i1", at(11), 10),
        actions=[
            action("rollback", "skipped", at(11) + 1 * MIN),
            action("rollback", "succeeded", at(11) + 2 * MIN, dry_run=True),
        ],
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "an operator's action of any kind (a health mark) is one",
        incident("i1", at(11), 10),
        actions=[action("health", "bad", at(11) + 6 * MIN, actor="manual:alice")],
        expect={(POLICY, "2021-03"): (1, 0, False)},
    ),
    Row(
        "automation's health marks are not",
        incident("i1", at(11), 10),
        actions=[action("health", "good", at(11) + 6 * MIN)],
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "a canary decision and a promotion on the service are actions",
        incident("i1", at(11), 10) + incident("i2", at(12), 10),
        actions=[
            action("canary", "step", at(11) + 3 * MIN),
            action("release", "promoted", at(12) + 2 * MIN),
        ],
        expect={(POLICY, "2021-03"): (2, 0, False)},
    ),
    Row(
        "a deploy that only tagged a revision is not",
        incident("i1", at(11), 10),
        actions=[action("release", "deployed", at(11) + 2 * MIN)],
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "an action on another service, or outside the incident, does not count",
        incident("i1", at(11), 10),
        actions=[
            action("rollback", "succeeded", at(11) + 4 * MIN, service="web"),
            action("rollback", "succeeded", at(11) - 1 * MIN),
            action("rollback", "succeeded", at(11) + 11 * MIN),
        ],
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "an action exactly at the open or the close counts",
        incident("i1", at(11), 10) + incident("i2", at(12), 10),
        actions=[
            action("rollback", "succeeded", at(11)),
            action("rollback", "succeeded", at(12) + 10 * MIN),
        ],
        expect={(POLICY, "2021-03"): (2, 0, False)},
    ),
    Row(
        "five in a month is within the target, six is over it",
        [r for n in range(5) for r in incident(f"a{n}", at(11 + n), 5, policy="five")]
        + [r for n in range(6) for r in incident(f"b{n}", at(11 + n, 12), 5, policy="six")],
        expect={("five", "2021-03"): (5, 5, False), ("six", "2021-03"): (6, 6, True)},
    ),
    Row(
        "the whole month the window touches counts, not only the window",
        incident("early", at(2), 5) + incident("before", datetime(2021, 2, 28, 23, tzinfo=UTC), 5),
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "an incident starting at the window's end is not in it",
        incident("late", UNTIL, 5),
        expect={},
    ),
    Row(
        "the rule is a setting: 5 minutes and at most 0 a month",
        incident("i1", at(11), 5) + incident("i2", at(12), 6),
        rule=NoiseRule(close_within=timedelta(minutes=5), max_per_month=0),
        expect={(POLICY, "2021-03"): (2, 1, True)},
    ),
    Row(
        "an incident without a policy name is counted under one",
        incident("i1", at(11), 5, policy=None),
        expect={("(unnamed policy)", "2021-03"): (1, 1, False)},
    ),
    Row(
        "an incident without a service: nothing can have acted on it",
        incident("i1", at(11), 5, service=None),
        actions=[action("rollback", "succeeded", at(11) + 1 * MIN)],
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
    Row(
        "one service's report counts its incidents only",
        incident("i1", at(11), 5) + incident("w1", at(12), 5, service="web"),
        service="web",
        expect={(POLICY, "2021-03"): (1, 1, False)},
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_alert_noise_decision_table(row: Row) -> None:
    facts = LedgerFacts(incidents=row.incidents, actions=row.actions)
    noise = compute_alert_noise(facts, since=SINCE, until=UNTIL, service=row.service, rule=row.rule)
    found = {
        (p.policy, p.month): (p.incidents, p.likely_false_positives, p.over_target)
        for p in noise.policies
    }
    assert found == row.expect
    assert noise.counted_from == datetime(2021, 3, 1, tzinfo=UTC)
    assert all(not p.month_complete for p in noise.policies)  # March runs past the window


def test_months_are_complete_once_the_window_reaches_their_end() -> None:
    facts = LedgerFacts(
        incidents=incident("feb", datetime(2021, 2, 20, tzinfo=UTC), 5) + incident("mar", at(1), 5)
    )
    noise = compute_alert_noise(facts, since=datetime(2021, 2, 25, tzinfo=UTC), until=at(1, 12))
    assert [(p.month, p.month_complete) for p in noise.policies] == [
        ("2021-02", True),
        ("2021-03", False),
    ]
    assert noise.counted_from == datetime(2021, 2, 1, tzinfo=UTC)


def test_flagged_lists_the_noisiest_first() -> None:
    rows = [r for n in range(7) for r in incident(f"a{n}", at(11 + n), 5, policy="seven")]
    rows += [r for n in range(6) for r in incident(f"b{n}", at(11 + n, 12), 5, policy="six")]
    noise = compute_alert_noise(LedgerFacts(incidents=rows), since=SINCE, until=UNTIL)
    assert [(p.policy, p.likely_false_positives) for p in noise.flagged] == [
        ("seven", 7),
        ("six", 6),
    ]


def test_the_release_report_carries_the_noise_with_its_rule() -> None:
    facts = LedgerFacts(incidents=incident("i1", at(11), 5))
    rule = NoiseRule(close_within=timedelta(minutes=10), max_per_month=3)
    report = compute_report(facts, since=SINCE, until=UNTIL, computed_at=UNTIL, noise=rule)
    assert report.alert_noise is not None
    assert (report.alert_noise.close_within_s, report.alert_noise.max_per_month) == (600.0, 3)
    assert report.alert_noise.policies[0].likely_false_positives == 1
