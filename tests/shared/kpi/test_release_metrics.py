"""The release metrics as a decision table: each row a small ledger and the numbers it
must give (docs/metrics.md). Pure: no database, no clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from shared.kpi.release_metrics import (
    IncidentFact,
    LedgerFacts,
    ReleaseFact,
    RollbackFact,
    compute_report,
)

SINCE = datetime(2021, 2, 1, tzinfo=UTC)  # a Monday: the window is ISO weeks 5-8
UNTIL = SINCE + timedelta(days=28)
H = timedelta(hours=1)


def at(day: int, hour: float = 10) -> datetime:
    """February 2021, day ``day`` at ``hour`` UTC."""
    return datetime(2021, 2, day, tzinfo=UTC) + timedelta(hours=hour)


def promoted(day: int, revision: str, hour: float = 10, **more: Any) -> ReleaseFact:
    return ReleaseFact("api", "promoted", at(day, hour), f"api@{revision}", revision, **more)


def rollback(when: datetime, from_revision: str, **more: Any) -> RollbackFact:
    fields: dict[str, Any] = {"kind": "rollback", "status": "succeeded", "trigger": "smoke"}
    fields.update(more)
    return RollbackFact("api", at=when, from_revision=from_revision, **fields)


def incident(incident_id: str, state: str, when: datetime, **more: Any) -> IncidentFact:
    return IncidentFact(incident_id, state, when, service="api", **more)


@dataclass
class Row:
    """One line of the table: a ledger and the expected fields of the ``api`` metrics."""

    name: str
    releases: list[ReleaseFact] = field(default_factory=list)
    rollbacks: list[RollbackFact] = field(default_factory=list)
    incidents: list[IncidentFact] = field(default_factory=list)
    builds: dict[str, datetime] = field(default_factory=dict)
    failure_window: timedelta = 24 * H
    expect: dict[str, Any] = field(default_factory=dict)


def value(metrics: Any, path: str) -> Any:
    for part in path.split("."):
        metrics = getattr(metrics, part)
    return metrics


TABLE = [
    Row(
        "no releases: every ratio and duration is None, never 0/0",
        expect={
            "promoted": 0,
            "deployment_success_rate.value": None,
            "deployment_success_rate.denominator": 0,
            "rollback_rate.value": None,
            "change_failure_rate.value": None,
            "lead_time.median_s": None,
            "time_to_restore.mean_s": None,
            "mttr_s": None,
            "deployment_frequency.per_week": 0.0,
            "deployment_frequency.bucket": None,
        },
    ),
    Row(
        "a promotion exactly at the window's start counts, one exactly at its end does not",
        releases=[
            ReleaseFact("api", "promoted", SINCE, revision="r1"),
            ReleaseFact("api", "promoted", UNTIL, revision="r2"),
            ReleaseFact("api", "promoted", SINCE - timedelta(seconds=1), revision="r0"),
        ],
        expect={"promoted": 1, "deployment_frequency.per_week": 0.25},
    ),
    Row(
        "a failed deploy counts against success; a deployed-only release counts nowhere",
        releases=[
            promoted(1, "r1"),
            promoted(2, "r2"),
            promoted(3, "r3"),
            ReleaseFact("api", "failed", at(4)),
            ReleaseFact("api", "deployed", at(5), revision="r4"),
        ],
        # 3 / (3 + 1)
        expect={"promoted": 3, "failed": 1, "deployment_success_rate.value": 0.75},
    ),
    Row(
        "the same revision promoted twice (a re-published event) is one deployment",
        releases=[promoted(1, "r1"), promoted(1, "r1", hour=10.5)],
        expect={"promoted": 1},
    ),
    Row(
        "lead time: build created -> promoted, median of the positive spans",
        releases=[
            promoted(1, "r1", build_id="b1"),  # 1 h
            promoted(2, "r2", build_id="b2"),  # 3 h
            promoted(3, "r3", build_id="b3"),  # -1 h: clock skew, ignored (as fourkeys)
            promoted(4, "r4", build_id="unknown"),  # no build record: no sample
        ],
        builds={"b1": at(1, 9), "b2": at(2, 7), "b3": at(3, 11)},
        # median(3600, 10800) = 7200
        expect={"lead_time.median_s": 7200.0, "lead_time.samples": 2},
    ),
    Row(
        "a rolled-back release is a failed change; the rollback restores in decision -> move",
        releases=[promoted(1, "r1"), promoted(2, "r2")],
        rollbacks=[rollback(at(2, 10.5), "r2", decided_at=at(2, 10.5) - timedelta(seconds=90))],
        # cfr 1/2; rollback rate 1/2; restore 90 s
        expect={
            "change_failure_rate.value": 0.5,
            "rollback_rate.value": 0.5,
            "time_to_restore.median_s": 90.0,
            "mttr_s": 90.0,
            "failures.0.cause": "rolled_back",
        },
    ),
    Row(
        "a dry-run rollback counts nowhere",
        releases=[promoted(1, "r1")],
        rollbacks=[rollback(at(1, 11), "r1", status="skipped", dry_run=True)],
        expect={"rollbacks": 0, "change_failure_rate.value": 0.0, "rollback_rate.value": 0.0},
    ),
    Row(
        "a manual rollback counts as a rollback, but has no detection time to restore from",
        releases=[promoted(1, "r1")],
        rollbacks=[rollback(at(1, 11), "r1", trigger="manual", manual=True)],
        expect={"rollbacks": 1, "change_failure_rate.value": 1.0, "time_to_restore.samples": 0},
    ),
    Row(
        "a freeze is a failed change without a rollback",
        releases=[promoted(1, "r1")],
        rollbacks=[rollback(at(1, 11), "r1", kind="freeze", status="frozen")],
        expect={"rollbacks": 0, "change_failure_rate.value": 1.0, "failures.0.cause": "frozen"},
    ),
    Row(
        "a rollback away from a revision promoted before the window is not this window's change",
        releases=[promoted(3, "r3")],
        rollbacks=[rollback(at(2), "r0")],
        # rollback rate counts it (1 rollback / 1 promotion), the failure rate does not
        expect={"rollback_rate.value": 1.0, "change_failure_rate.value": 0.0},
    ),
    Row(
        "an auto_rollback incident exactly N hours after a promotion counts against it",
        releases=[promoted(1, "r1")],
        incidents=[incident("i1", "open", at(2), auto_rollback=True, started_at=at(2))],
        expect={"change_failure_rate.value": 1.0, "failures.0.evidence": "i1"},
    ),
    Row(
        "one second later it does not",
        releases=[promoted(1, "r1")],
        incidents=[
            incident(
                "i1", "open", at(2), auto_rollback=True, started_at=at(2) + timedelta(seconds=1)
            )
        ],
        expect={"change_failure_rate.value": 0.0},
    ),
    Row(
        "a longer failure window catches it",
        releases=[promoted(1, "r1")],
        incidents=[incident("i1", "open", at(3), auto_rollback=True)],
        failure_window=48 * H,
        expect={"change_failure_rate.value": 1.0},
    ),
    Row(
        "an incident without auto_rollback is no change failure, but its duration counts",
        releases=[promoted(1, "r1")],
        incidents=[
            incident("i1", "open", at(1, 12), started_at=at(1, 12)),
            incident("i1", "closed", at(1, 12.5), started_at=at(1, 12), ended_at=at(1, 12.5)),
        ],
        expect={"change_failure_rate.value": 0.0, "incident_duration.median_s": 1800.0},
    ),
    Row(
        "an incident naming an older revision blames that release, not the latest",
        releases=[promoted(1, "r1"), promoted(1, "r2", hour=12)],
        incidents=[incident("i1", "open", at(1, 13), auto_rollback=True, revision="r1")],
        expect={"change_failure_rate.value": 0.5, "failures.0.revision": "r1"},
    ),
    Row(
        "without a revision the latest promotion before the incident is blamed",
        releases=[promoted(1, "r1"), promoted(1, "r2", hour=12)],
        incidents=[incident("i1", "open", at(1, 13), auto_rollback=True)],
        expect={"failures.0.revision": "r2"},
    ),
    Row(
        "an alert rollback restores from the incident's start",
        releases=[promoted(1, "r1")],
        rollbacks=[
            rollback(
                at(1, 12.1), "r1", trigger="alert", trigger_event_id="i1", decided_at=at(1, 12.05)
            )
        ],
        incidents=[incident("i1", "open", at(1, 12), auto_rollback=True, started_at=at(1, 12))],
        # 12:06 - 12:00; rolled back after the incident began: the incident is the cause
        expect={"time_to_restore.median_s": 360.0, "failures.0.cause": "incident"},
    ),
    Row(
        "deploys on three days of every week are daily",
        releases=[promoted(d, f"r{d}") for d in (1, 2, 3, 8, 9, 10, 15, 16, 17, 22, 23, 24)],
        expect={"deployment_frequency.bucket": "daily", "deployment_frequency.per_week": 3.0},
    ),
    Row(
        "a deploy in most weeks is weekly",
        releases=[promoted(d, f"r{d}") for d in (1, 8, 15)],
        expect={"deployment_frequency.bucket": "weekly"},
    ),
    Row(
        "one week of four with deploys is monthly (the month had a deploy)",
        releases=[promoted(d, f"r{d}") for d in (2, 3)],
        expect={"deployment_frequency.bucket": "monthly", "deployment_frequency.deploy_days": 2},
    ),
]


@pytest.mark.parametrize("row", TABLE, ids=[row.name for row in TABLE])
def test_release_metrics_decision_table(row: Row) -> None:
    facts = LedgerFacts(row.releases, row.rollbacks, row.incidents, row.builds)
    report = compute_report(
        facts,
        since=SINCE,
        until=UNTIL,
        computed_at=UNTIL,
        service="api",
        failure_window=row.failure_window,
    )
    [metrics] = report.services
    assert metrics == report.overall.model_copy(update={"service": "api"})
    for path, expected in row.expect.items():
        head, _, rest = path.partition(".")
        if head == "failures":
            index, _, attribute = rest.partition(".")
            assert getattr(metrics.failures[int(index)], attribute) == expected, path
        else:
            assert value(metrics, path) == expected, path


def test_yearly_when_the_months_of_most_weeks_had_no_deploy() -> None:
    """Nine weeks over three months, one deploy: the median week's month saw none."""
    since = datetime(2021, 1, 4, tzinfo=UTC)
    facts = LedgerFacts([ReleaseFact("api", "promoted", at(1), revision="r1")])
    report = compute_report(facts, since=since, until=since + timedelta(weeks=9), computed_at=UNTIL)
    assert report.overall.deployment_frequency.bucket == "yearly"


def test_weeks_are_counted_back_from_the_window_end_so_a_week_is_never_split() -> None:
    """Monday 09:00 to Monday 09:00 touches two ISO weeks; it is one week of deploys."""
    until = datetime(2021, 2, 8, 9, tzinfo=UTC)
    facts = LedgerFacts([promoted(2, "r2"), promoted(4, "r4")])
    report = compute_report(facts, since=until - timedelta(days=7), until=until, computed_at=until)
    assert report.overall.deployment_frequency.model_dump() == {
        "per_week": 2.0,
        "deploy_days": 2,
        "bucket": "weekly",
    }


def test_targets_are_judged_only_when_there_is_a_value() -> None:
    facts = LedgerFacts([promoted(1, "r1")])
    report = compute_report(facts, since=SINCE, until=UNTIL, computed_at=UNTIL)
    verdicts = {t.name: (t.op, t.threshold, t.value, t.ok) for t in report.overall.targets}
    assert verdicts == {
        "deployment_success_rate": (">=", 0.99, 1.0, True),
        "rollback_rate": ("<", 0.01, 0.0, True),
        "mttr_s": ("<", 900.0, None, None),
    }


def test_services_are_listed_from_every_kind_of_fact_in_the_window() -> None:
    facts = LedgerFacts(
        releases=[ReleaseFact("web", "failed", at(2))],
        rollbacks=[RollbackFact("api", "rollback", "succeeded", at(3), "r1")],
        incidents=[
            IncidentFact("i1", "open", at(4), service="db"),
            IncidentFact("i2", "open", at(5)),  # no service: only in the overall numbers
            IncidentFact("i3", "open", UNTIL, service="late"),
        ],
    )
    report = compute_report(facts, since=SINCE, until=UNTIL, computed_at=UNTIL)
    assert [m.service for m in report.services] == ["api", "db", "web"]
    assert report.overall.service is None


def test_a_window_that_does_not_end_after_it_starts_is_refused() -> None:
    with pytest.raises(ValueError, match="must end after it starts"):
        compute_report(LedgerFacts(), since=UNTIL, until=UNTIL, computed_at=UNTIL)
