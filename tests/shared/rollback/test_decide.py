"""The rollback decision table (shared.rollback.decide), case by case, without I/O."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from shared.events import parse_incident_body
from shared.rollback import (
    BreakingMigration,
    HealthRecord,
    Policy,
    RevisionInfo,
    ServiceState,
    TrafficItem,
    Trigger,
    Verdict,
    decide,
    incident_trigger,
    rollback_traffic,
)
from tests.helpers import GOLDEN

NOW = datetime(2025, 6, 2, 12, 0, tzinfo=UTC)
SERVICE = "sight-api"
V1, V2, V3, V4 = (f"sight-api-0000{i}-abc" for i in range(1, 5))


def revisions(*names: str, not_ready: tuple[str, ...] = ()) -> tuple[RevisionInfo, ...]:
    """Revisions created a day apart, oldest first, V4 created 10 minutes ago."""
    count = len(names)
    return tuple(
        RevisionInfo(
            n, NOW - timedelta(minutes=10) - timedelta(days=count - 1 - i), n not in not_ready
        )
        for i, n in enumerate(names)
    )


def state(
    serving: dict[str, int],
    *,
    names: tuple[str, ...] = (V1, V2, V3, V4),
    not_ready: tuple[str, ...] = (),
    tags: tuple[TrafficItem, ...] = (),
    updated: datetime | None = NOW - timedelta(minutes=10),
) -> ServiceState:
    """``updated``: Cloud Run's last change of the service (default: when the newest
    revision was deployed)."""
    traffic = tuple(TrafficItem("REVISION", rev, pct) for rev, pct in serving.items()) + tags
    return ServiceState(
        "sight-prod",
        "europe-west1",
        SERVICE,
        revisions(*names, not_ready=not_ready),
        traffic,
        traffic,
        latest_ready_revision=names[-1],
        update_time=updated,
    )


def good(*names: str) -> dict[str, HealthRecord]:
    return {n: HealthRecord("good", "smoke.passed", NOW - timedelta(days=9)) for n in names}


def bad(*names: str) -> dict[str, HealthRecord]:
    return {n: HealthRecord("bad", "smoke.failed", NOW - timedelta(days=9)) for n in names}


def smoke(revision: str, at: datetime = NOW) -> Trigger:
    return Trigger("smoke", SERVICE, "evt-1", at, revision=revision)


def alert(revision: str | None, started: datetime) -> Trigger:
    return Trigger(
        "alert", SERVICE, "0.incident", started, revision=revision, incident_started_at=started
    )


@dataclass
class Case:
    trigger: Trigger
    state: ServiceState
    health: dict[str, HealthRecord] = field(default_factory=dict)
    breaking: tuple[BreakingMigration, ...] = ()
    recent: int = 0
    promoted_at: dict[str, datetime] = field(default_factory=dict)
    # expected
    verdict: Verdict = Verdict.ROLLBACK
    to: str | None = None
    mark_bad: str | None = None
    reason: str = ""


CASES = {
    "rollback_moves_to_the_newest_known_good_revision": Case(
        smoke(V4),
        state({V4: 100}),
        good(V1, V2, V3),
        to=V3,
        mark_bad=V4,
        reason="while serving 100%",
    ),
    "rollback_skips_revision_that_serves_no_traffic": Case(
        smoke(V4),
        state({V3: 100}),
        good(V1, V2, V3),
        verdict=Verdict.SKIP,
        mark_bad=V4,
        reason="serves no traffic; marked bad",
    ),
    "rollback_of_an_older_revision_after_a_newer_promotion_changes_nothing": Case(
        smoke(V3),
        state({V4: 100}),
        good(V1, V2, V4),
        verdict=Verdict.SKIP,
        mark_bad=V3,
        reason="serves no traffic",
    ),
    "rollback_without_a_known_good_revision_fails": Case(
        smoke(V4),
        state({V4: 100}),
        {},
        verdict=Verdict.FAIL,
        mark_bad=V4,
        reason="no known-good revision",
    ),
    "rollback_passes_a_bad_previous_revision_over_for_an_older_good_one": Case(
        smoke(V4),
        state({V4: 100}),
        {**good(V1, V2), **bad(V3)},
        to=V2,
        mark_bad=V4,
    ),
    "rollback_never_targets_an_unknown_revision": Case(
        smoke(V4),
        state({V4: 100}),
        good(V1),
        to=V1,
        mark_bad=V4,
    ),
    "rollback_never_targets_a_revision_that_is_not_ready": Case(
        smoke(V4),
        state({V4: 100}, not_ready=(V3,)),
        good(V2, V3),
        to=V2,
        mark_bad=V4,
    ),
    "rollback_acts_when_the_failed_revision_serves_part_of_the_traffic": Case(
        smoke(V4),
        state({V3: 90, V4: 10}),
        good(V3),
        to=V3,
        mark_bad=V4,
        reason="serving 10%",
    ),
    "rollback_freezes_on_a_breaking_migration_after_the_target_was_deployed": Case(
        smoke(V4),
        state({V4: 100}),
        good(V3),
        breaking=(BreakingMigration("a7f3e9b2c410", NOW - timedelta(minutes=5)),),
        verdict=Verdict.FREEZE,
        to=V3,
        mark_bad=V4,
        reason="breaking migration a7f3e9b2c410 applied after",
    ),
    "rollback_ignores_a_breaking_migration_before_the_target_was_deployed": Case(
        smoke(V4),
        state({V4: 100}),
        good(V3),
        breaking=(BreakingMigration("0002", NOW - timedelta(days=5)),),
        to=V3,
        mark_bad=V4,
    ),
    "rollback_escalates_when_the_anti_flap_cap_is_reached": Case(
        smoke(V4),
        state({V4: 100}),
        good(V3),
        recent=2,
        verdict=Verdict.ESCALATE,
        to=V3,
        mark_bad=V4,
        reason="anti-flap cap reached",
    ),
    "rollback_below_the_anti_flap_cap_acts": Case(
        smoke(V4),
        state({V4: 100}),
        good(V3),
        recent=1,
        to=V3,
        mark_bad=V4,
    ),
    "rollback_skips_a_failure_superseded_by_newer_good_evidence": Case(
        smoke(V4, at=NOW - timedelta(minutes=3)),
        state({V4: 100}),
        {**good(V3), V4: HealthRecord("good", "smoke.passed", NOW - timedelta(minutes=1))},
        verdict=Verdict.SKIP,
        reason="superseded",
    ),
    "rollback_on_an_alert_within_the_window_after_promotion_acts": Case(
        alert(V4, NOW - timedelta(minutes=2)),
        state({V4: 100}),
        good(V3),
        to=V3,
        mark_bad=V4,
        reason="auto-rollback incident",
    ),
    "rollback_on_an_alert_outside_the_window_changes_nothing": Case(
        alert(V4, NOW + timedelta(hours=2)),
        state({V4: 100}),
        good(V3),
        verdict=Verdict.SKIP,
        reason="outside the 30min alert window",
    ),
    "rollback_on_an_alert_counts_the_window_from_our_own_promotion": Case(
        alert(V2, NOW + timedelta(minutes=20)),
        state({V2: 100}),
        good(V1),
        promoted_at={V2: NOW},
        to=V1,
        mark_bad=V2,
    ),
    "rollback_on_an_alert_that_started_before_the_promotion_changes_nothing": Case(
        alert(V4, NOW - timedelta(hours=1)),
        state({V4: 100}),
        good(V3),
        verdict=Verdict.SKIP,
        reason="before",
    ),
    "rollback_on_an_alert_about_a_revision_that_serves_no_traffic_changes_nothing": Case(
        alert(V4, NOW),
        state({V3: 100}),
        good(V3),
        verdict=Verdict.SKIP,
        reason="serves no traffic",
    ),
    "rollback_on_an_alert_without_a_revision_label_accuses_the_serving_revision": Case(
        alert(None, NOW - timedelta(minutes=5)),
        state({V4: 100}),
        good(V3),
        to=V3,
        mark_bad=V4,
    ),
    "an_unlabelled_incident_that_started_before_our_own_rollback_does_not_roll_back_again": Case(
        # V4 promoted at T, incident from T+20s, our rollback V4 -> V3 at T+31s.
        alert(None, NOW + timedelta(seconds=20)),
        state({V3: 100}, updated=NOW - timedelta(minutes=10)),
        {**good(V2, V3), **bad(V4)},
        promoted_at={V3: NOW + timedelta(seconds=31)},
        verdict=Verdict.FAIL,
        reason="not after the last traffic change",
    ),
    "an_unlabelled_incident_older_than_the_last_change_of_the_service_is_not_blamed_on_it": Case(
        # V4 created 10 min ago but promoted (the service changed) 10 s ago, after the
        # incident of the old revision had started: the 60 s slack must not blame V4.
        alert(None, NOW - timedelta(seconds=30)),
        state({V4: 100}, updated=NOW - timedelta(seconds=10)),
        good(V3),
        verdict=Verdict.FAIL,
        reason="not guessing which revision it is about, traffic not moved",
    ),
    "an_unlabelled_incident_during_a_traffic_split_never_guesses_the_revision": Case(
        alert(None, NOW - timedelta(minutes=5)),
        state({V3: 90, V4: 10}),
        good(V2),
        verdict=Verdict.FAIL,
        reason="traffic is split (sight-api-00003-abc 90%, sight-api-00004-abc 10%)",
    ),
    "an_unlabelled_incident_is_not_blamed_when_cloud_run_does_not_say_when_traffic_changed": Case(
        alert(None, NOW - timedelta(minutes=5)),
        state({V4: 100}, updated=None),
        good(V3),
        verdict=Verdict.FAIL,
        reason="does not say when",
    ),
    "a_labelled_incident_older_than_our_own_move_to_the_revision_is_skipped_without_slack": Case(
        alert(V3, NOW - timedelta(seconds=5)),
        state({V3: 100}),
        good(V2, V3),
        promoted_at={V3: NOW},
        verdict=Verdict.SKIP,
        reason="before we moved traffic to",
    ),
    "an_automatic_rollback_never_rolls_forward_to_a_newer_candidate_that_was_never_promoted": Case(
        smoke(V3),
        state({V3: 100}),
        good(V2, V4),
        to=V2,
        mark_bad=V3,
    ),
    "an_automatic_rollback_with_only_a_newer_good_revision_fails_rather_than_rolling_forward": Case(
        smoke(V3),
        state({V3: 100}),
        good(V4),
        verdict=Verdict.FAIL,
        mark_bad=V3,
        reason="no Ready revision created before sight-api-00003-abc is marked good",
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_decision_table(case: Case) -> None:
    decision = decide(
        case.trigger,
        case.state,
        case.health,
        case.breaking,
        case.recent,
        case.promoted_at,
        Policy(max_per_window=2, window=timedelta(hours=1), alert_window=timedelta(minutes=30)),
    )
    assert decision.verdict is case.verdict, decision.reason
    assert decision.to_revision == case.to
    assert decision.mark_bad == case.mark_bad
    assert case.reason in decision.reason


def manual(target: str | None = None, force: bool = False) -> Trigger:
    return Trigger("manual", SERVICE, "cli", NOW, target=target, force=force)


@pytest.mark.parametrize(
    ("trigger", "health", "verdict", "to", "reason"),
    [
        (manual(), good(V2, V3), Verdict.ROLLBACK, V3, "manual rollback to"),
        (manual(V2), good(V2), Verdict.ROLLBACK, V2, ""),
        (manual(V2), bad(V2), Verdict.FAIL, V2, "use --force"),
        (manual(V2, force=True), bad(V2), Verdict.ROLLBACK, V2, "(forced)"),
        (manual(V4), good(V4), Verdict.SKIP, V4, "already serves 100%"),
        (manual("nope"), {}, Verdict.FAIL, None, "is not a revision"),
        (manual(), {}, Verdict.FAIL, None, "name one with --to"),
    ],
    ids=[
        "manual_rollback_picks_the_newest_known_good",
        "manual_rollback_to_a_good_revision",
        "manual_rollback_to_a_bad_revision_needs_force",
        "manual_rollback_with_force_moves_to_a_bad_revision",
        "manual_rollback_to_the_serving_revision_is_a_no_op",
        "manual_rollback_to_an_unknown_revision_fails",
        "manual_rollback_without_known_good_asks_for_to",
    ],
)
def test_manual_decisions(
    trigger: Trigger, health: dict[str, HealthRecord], verdict: Verdict, to: str | None, reason: str
) -> None:
    decision = decide(trigger, state({V4: 100}), health, recent_auto_rollbacks=99)
    assert (decision.verdict, decision.to_revision) == (verdict, to), decision.reason
    assert reason in decision.reason
    assert decision.mark_bad is None


def test_manual_rollback_freezes_on_breaking_migration_unless_forced() -> None:
    breaking = (BreakingMigration("0007", NOW - timedelta(minutes=1)),)
    assert decide(manual(V3), state({V4: 100}), good(V3), breaking).verdict is Verdict.FREEZE
    forced = decide(manual(V3, force=True), state({V4: 100}), good(V3), breaking)
    assert forced.verdict is Verdict.ROLLBACK


def test_latest_traffic_status_without_a_revision_resolves_through_latest_ready() -> None:
    latest = (TrafficItem("LATEST", "", 100),)
    svc = ServiceState(
        "p", "r", SERVICE, revisions(V1, V2), latest, latest, latest_ready_revision=V2
    )
    assert svc.serving() == {V2: 100}
    assert decide(smoke(V2), svc, good(V1)).to_revision == V1


def test_new_traffic_pins_the_target_and_keeps_every_tag_at_zero_percent() -> None:
    spec = [
        TrafficItem("LATEST", "", 90),
        TrafficItem("REVISION", V3, 10, "canary"),
        TrafficItem("REVISION", V4, 0, "candidate"),
        TrafficItem("LATEST", "", 0, "latest"),
    ]
    assert rollback_traffic(spec, V2) == [
        TrafficItem("REVISION", V2, 100),
        TrafficItem("REVISION", V3, 0, "canary"),
        TrafficItem("REVISION", V4, 0, "candidate"),
        TrafficItem("LATEST", "", 0, "latest"),
    ]


def incident(**changes: object) -> bytes:
    body = json.loads((GOLDEN / "monitoring" / "incident_auto_rollback.json").read_text())
    body["incident"].update(changes)
    return json.dumps(body).encode()


def test_incident_with_auto_rollback_label_on_cloud_run_is_a_trigger() -> None:
    trigger = incident_trigger(parse_incident_body(incident()), NOW)
    assert isinstance(trigger, Trigger)
    assert (trigger.kind, trigger.service, trigger.revision) == (
        "alert",
        "sight-api",
        "sight-api-00043-vub",
    )
    assert trigger.event_id == "0.ov3d8h5w0k9p"
    assert trigger.incident_started_at == datetime.fromtimestamp(1748863525, UTC)


@pytest.mark.parametrize(
    ("changes", "why"),
    [
        ({"state": "closed", "ended_at": 1748864000}, "is closed"),
        ({"policy_user_labels": {"service": "sight-api"}}, "not labelled auto_rollback"),
        ({"policy_user_labels": {"auto_rollback": "false"}}, "not labelled auto_rollback"),
        ({"resource": {"type": "gce_instance", "labels": {}}}, "not about a Cloud Run"),
    ],
    ids=["closed", "no_label", "label_false", "not_cloud_run"],
)
def test_incidents_that_are_not_triggers_say_why(changes: dict[str, object], why: str) -> None:
    result = incident_trigger(parse_incident_body(incident(**changes)), NOW)
    assert isinstance(result, str)
    assert why in result


def test_test_notification_is_never_a_trigger() -> None:
    body = (GOLDEN / "monitoring" / "test_notification.json").read_bytes()
    assert incident_trigger(parse_incident_body(body), NOW) == "test notification"
