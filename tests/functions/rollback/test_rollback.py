"""rollback through functions-framework, against real PostgreSQL, the Pub/Sub emulator
(what it publishes) and the Cloud Run stand-in served in-process (docs/rollback.md)."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from shared.events import EventType, RollbackResult
from shared.rollback import Verdict, manual_rollback
from standins import serve
from tests.functions.rollback.conftest import REGION as REGION_
from tests.functions.rollback.conftest import Env
from tests.helpers import envelope, post_cloudevent, push

HERE = os.path.dirname(__file__)
REGEN = os.environ.get("REGEN_GOLDEN") == "1"


def deliver(env: Env, message: tuple[bytes, dict[str, str]], topic: str = "smoke-tests") -> Any:
    return push(env.client, topic, envelope(*message))


def deliver_incident(env: Env, body: bytes) -> Any:
    return push(env.client, "monitoring-alerts", envelope(body, {}))


# ------------------------------------------------------------------------ smoke.failed


def test_rollback_moves_traffic_to_the_last_known_good_revision(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good", v3: "good"})
    message = env.smoke(False, v3)
    assert deliver(env, message).status_code == 200
    assert env.serving() == {v2: 100}
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SUCCEEDED
    assert (result.from_revision, result.to_revision) == (v3, v2)
    assert result.trigger_event_id == message[1]["id"]
    assert env.health()[v3] == "bad"
    [action] = env.actions("rollback")
    assert (action["status"], action["actor"]) == ("succeeded", "automation")
    assert action["detail"]["from"] == v3 and action["detail"]["to"] == v2
    assert action["detail"]["serving_after"] == {v2: 100}
    assert action["trigger_event_id"] == message[1]["id"]


def test_rollback_keeps_tags_when_it_pins_the_revision(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    deliver(env, env.smoke(False, v3))
    spec = env.cloudrun.get_service("sight-local", "europe-west1", env.service)["traffic"]
    assert {
        "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
        "revision": v1,
        "percent": 100,
    } in spec
    assert {
        "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
        "revision": v2,
        "tag": "stable",
    } in spec


def test_rollback_arrives_by_eventarc_cloudevent_too(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    response = post_cloudevent(env.client, "smoke-tests", envelope(*env.smoke(False, v3)))
    assert response.status_code == 200
    assert env.serving() == {v1: 100}


def test_rollback_skips_revision_that_serves_no_traffic(env: Env) -> None:
    v1, v2, _ = env.deploy()
    env.seed_health(**{v1: "good"})
    assert deliver(env, env.smoke(False, v2)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SKIPPED
    assert result.reason == f"{v2} serves no traffic; marked bad"
    assert env.health()[v2] == "bad"


def test_rollback_of_an_older_revision_after_a_newer_promotion_changes_nothing(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good", v3: "good"})
    old = env.smoke(False, v2, at=datetime.now(UTC) - timedelta(minutes=5))
    assert deliver(env, old).status_code == 200
    assert env.patches() == 0
    assert env.serving() == {v3: 100}
    assert env.published.one()[0] is EventType.ROLLBACK_SKIPPED


def test_rollback_without_a_known_good_revision_fails_and_changes_nothing(env: Env) -> None:
    _, _, v3 = env.deploy()
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "no known-good revision" in result.reason
    assert env.health() == {v3: "bad"}, "the accused revision is never the baseline"
    [action] = env.actions("rollback")
    assert action["status"] == "failed"


def test_rollback_passes_a_bad_previous_revision_over_for_an_older_good_one(env: Env) -> None:
    v1, v2, v3, _v4 = env.deploy(4)
    env.pin(v3)
    env.seed_health(**{v1: "good", v2: "bad"})
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v1: 100}


def test_rollback_freezes_on_a_breaking_migration_after_the_target_was_deployed(
    env: Env, breaking_migration: Callable[..., None]
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    breaking_migration(datetime.now(UTC) - timedelta(minutes=30), label="b2c4d6e8f0a1")
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FROZEN
    assert result.reason == (
        f"breaking migration b2c4d6e8f0a1 applied after {v2} was deployed; traffic not moved"
    )
    [action] = env.actions("freeze")
    assert action["status"] == "frozen"


@pytest.mark.parametrize("status", ["failed", "started"])
def test_rollback_freezes_on_a_breaking_migration_from_a_run_that_did_not_succeed(
    env: Env, breaking_migration: Callable[..., None], status: str
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    breaking_migration(datetime.now(UTC) - timedelta(minutes=30), status=status)
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    kind, _ = env.published.one()
    assert kind is EventType.ROLLBACK_FROZEN


def test_rollback_ignores_non_breaking_and_older_migrations(
    env: Env, breaking_migration: Callable[..., None]
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v2: "good"})
    breaking_migration(datetime.now(UTC) - timedelta(minutes=30), breaking=False)
    breaking_migration(datetime.now(UTC) - timedelta(days=30))
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v2: 100}
    del v1


def test_ten_concurrent_failures_for_one_service_update_traffic_exactly_once(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    bodies = [envelope(*env.smoke(False, v3)) for _ in range(10)]
    app = env.client.application
    statuses: list[int] = []
    with serve(app) as server:
        barrier = threading.Barrier(10)

        def post(body: dict[str, Any]) -> None:
            barrier.wait()
            r = httpx.post(
                f"{server.url}/projects/sight-local/topics/smoke-tests", json=body, timeout=60
            )
            statuses.append(r.status_code)

        threads = [threading.Thread(target=post, args=(b,)) for b in bodies]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert statuses == [200] * 10
    assert env.patches() == 1
    assert env.serving() == {v2: 100}
    kinds = sorted(e.type.value for e in env.published.wait(10))
    assert kinds == ["sight.ops.rollback.skipped"] * 9 + ["sight.ops.rollback.succeeded"]


def test_duplicate_delivery_acts_once(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    body = envelope(*env.smoke(False, v3))
    for _ in range(3):
        assert push(env.client, "smoke-tests", body).status_code == 200
    assert env.patches() == 1
    assert len(env.actions("rollback")) == 1


def test_conflict_is_reread_and_retried_once(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.cloudrun.inject_fault(409, method="PATCH")
    deliver(env, env.smoke(False, v3))
    assert env.patches() == 2
    assert env.serving() == {v1: 100}
    assert env.published.one()[0] is EventType.ROLLBACK_SUCCEEDED


def test_second_conflict_fails_cleanly_without_a_change(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.cloudrun.inject_fault(409, method="PATCH", count=2)
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.serving() == {v3: 100}
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "409 twice" in result.reason and "traffic not moved" in result.reason


@pytest.mark.parametrize("status", [503, 429])
def test_unavailable_cloud_run_is_transient_and_the_redelivery_succeeds(
    env: Env, status: int
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.cloudrun.inject_fault(status, method="PATCH")
    body = envelope(*env.smoke(False, v3))
    assert push(env.client, "smoke-tests", body).status_code == 503
    assert env.serving() == {v3: 100}
    assert env.actions("rollback") == [], "no outcome yet: Cloud Run did not take it"
    assert [d["status"] for d in env.decisions()] == ["intent"], "the decision is kept..."
    assert env.health()[v3] == "bad", "...and so is its mark"
    assert push(env.client, "smoke-tests", body).status_code == 200  # Pub/Sub redelivers
    assert env.serving() == {v1: 100}
    assert env.published.one()[0] is EventType.ROLLBACK_SUCCEEDED
    assert [(d["status"], d["verdict"]) for d in env.decisions()] == [("done", "succeeded")]
    assert len(env.actions("rollback")) == 1


def test_anti_flap_cap_reached_escalates_without_a_change(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    for minutes in (50, 20):
        env.insert_decision(v2, ago=timedelta(minutes=minutes))
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FROZEN
    assert result.reason.startswith("anti-flap cap reached: 2 automatic rollbacks")
    [action] = env.actions("escalation")
    assert action["status"] == "frozen"


def test_rollbacks_outside_the_anti_flap_window_do_not_count(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    for hours in (3, 2):
        env.insert_decision(v1, ago=timedelta(hours=hours))
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v1: 100}


def test_dry_run_decides_records_and_publishes_but_never_moves_traffic(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.configure(dry_run=True)
    deliver(env, env.smoke(False, v3))
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SKIPPED
    assert result.dry_run and result.to_revision == v1
    assert result.reason.startswith(f"dry run: would move 100% of {env.service} from {v3} to {v1}")


def test_stale_event_is_dropped_without_acting(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    old = env.smoke(False, v3, at=datetime.now(UTC) - timedelta(hours=2))
    assert deliver(env, old).status_code == 200
    assert env.patches() == 0
    assert env.actions() == []
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="stale") >= 1


def test_unknown_service_fails_with_a_reason(env: Env) -> None:
    assert deliver(env, env.smoke(False, "ghost-00001-aaa")).status_code == 200
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "not found" in result.reason


# ------------------------------------------------------------------------ smoke.passed


def test_smoke_passed_marks_the_revision_known_good(env: Env) -> None:
    _, v2, _ = env.deploy()
    assert deliver(env, env.smoke(True, v2)).status_code == 200
    assert env.health()[v2] == "good"
    [_baseline, mark] = env.actions("health")
    assert (mark["status"], mark["detail"]["revision"]) == ("good", v2)


def test_first_sight_of_a_service_records_the_serving_revision_as_baseline(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    deliver(env, env.smoke(True, v1))
    assert env.health() == {v1: "good", v3: "good"}
    # ... so a failure of the next promotion has somewhere to go.
    env.cloudrun.create_revision(
        "sight-local", "europe-west1", env.service, image="img:v4", revision="v4", promote=True
    )
    deliver(env, env.smoke(False, "v4"))
    assert env.serving() == {v3: 100}
    del v2


def test_a_later_smoke_passed_for_a_bad_revision_flips_it_only_if_newer(env: Env) -> None:
    v1, v2, _ = env.deploy()
    env.seed_health(**{v1: "good"})
    now = datetime.now(UTC)
    deliver(env, env.smoke(False, v2, at=now - timedelta(minutes=2)))
    assert env.health()[v2] == "bad"
    # An older pass, delivered late, changes nothing...
    deliver(env, env.smoke(True, v2, at=now - timedelta(minutes=3)))
    assert env.health()[v2] == "bad"
    # ... a newer one is newer evidence.
    deliver(env, env.smoke(True, v2, at=now - timedelta(minutes=1)))
    assert env.health()[v2] == "good"


def test_an_older_smoke_failed_after_a_newer_pass_is_superseded(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    now = datetime.now(UTC)
    deliver(env, env.smoke(True, v3, at=now - timedelta(minutes=1)))
    deliver(env, env.smoke(False, v3, at=now - timedelta(minutes=2)))
    assert env.patches() == 0
    assert env.health()[v3] == "good"
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SKIPPED and "superseded" in result.reason


# ------------------------------------------------------------------------ alerts


def test_auto_rollback_alert_within_the_window_rolls_back(env: Env) -> None:
    v1, _, v3 = env.deploy(newest_age=timedelta(minutes=10))
    env.seed_health(**{v1: "good"})
    assert deliver_incident(env, env.incident(v3)).status_code == 200
    assert env.serving() == {v1: 100}
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SUCCEEDED
    assert result.trigger_event_id and result.trigger_event_id.startswith("0.")
    assert env.health()[v3] == "bad"


def test_auto_rollback_alert_without_a_revision_label_accuses_the_serving_revision(
    env: Env,
) -> None:
    v1, _, _ = env.deploy(newest_age=timedelta(minutes=10))
    env.seed_health(**{v1: "good"})
    deliver_incident(env, env.incident(None))
    assert env.serving() == {v1: 100}


def test_alert_outside_the_window_changes_nothing(env: Env) -> None:
    v1, _, v3 = env.deploy(newest_age=timedelta(hours=3))
    env.seed_health(**{v1: "good"})
    assert deliver_incident(env, env.incident(v3)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SKIPPED
    assert "outside the 30min alert window" in result.reason
    assert v3 not in env.health(), "an alert outside the window is no evidence"


def test_alert_window_starts_at_our_own_promotion(env: Env) -> None:
    """A revision created long ago that we moved traffic to recently is "just promoted"."""
    v1, v2, v3 = env.deploy(newest_age=timedelta(hours=3))
    env.seed_health(**{v1: "good", v2: "good"})
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v2: 100}
    time.sleep(1.1)  # incidents carry whole seconds: this one starts after our move
    deliver_incident(env, env.incident(v2))
    assert env.serving() == {v1: 100}


def test_duplicate_incident_notifications_act_once(env: Env) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    body = env.incident(v3)
    deliver_incident(env, body)  # the Pub/Sub channel...
    deliver_incident(env, body)  # ...and the webhook through alert_intake
    assert env.patches() == 1


@pytest.mark.parametrize(
    "changes",
    [
        {"state": "closed", "ended_at": 1748864000},
        {"policy_user_labels": {"service": "x"}},
    ],
    ids=["closed", "no_auto_rollback_label"],
)
def test_incidents_that_are_not_auto_rollback_triggers_are_skipped_quietly(
    env: Env, changes: dict[str, Any]
) -> None:
    _, _, v3 = env.deploy()
    assert deliver_incident(env, env.incident(v3, **changes)).status_code == 200
    assert env.patches() == 0
    # Only the ledger's fact of the incident (docs/rollback.md, "Ledger rows").
    assert [a["kind"] for a in env.actions()] == ["incident"]


def test_test_notification_is_skipped(env: Env) -> None:
    from tests.helpers import GOLDEN

    body = (GOLDEN / "monitoring" / "test_notification.json").read_bytes()
    assert deliver_incident(env, body).status_code == 200
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="skipped") >= 1


def test_a_message_that_is_neither_is_rejected_not_retried(env: Env) -> None:
    response = push(env.client, "smoke-tests", envelope(b"{not json", {}))
    assert response.status_code == 200
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="rejected") >= 1


# ------------------------------------------------------------------------ golden events


def _normalised(event: Any, service: str, names: dict[str, str]) -> dict[str, Any]:
    data = json.loads(event.data.model_dump_json(by_alias=True))
    text = json.dumps(data)
    for real, placeholder in names.items():
        text = text.replace(real, placeholder)
    data = json.loads(text.replace(service, "sight-api"))
    data["trigger_event_id"] = "<trigger>" if data["trigger_event_id"] else None
    return {"type": event.type.value, "source": event.source, "data": data}


@pytest.mark.parametrize("case", ["succeeded", "skipped", "failed", "frozen", "escalation"])
def test_published_rollback_events_match_golden(
    env: Env, case: str, breaking_migration: Callable[..., None]
) -> None:
    v1, v2, v3 = env.deploy()
    accused = v3
    if case == "succeeded":
        env.seed_health(**{v2: "good"})
    elif case == "skipped":
        accused = v2
    elif case == "frozen":
        env.seed_health(**{v2: "good"})
        breaking_migration(datetime.now(UTC) - timedelta(minutes=1), label="a7f3e9b2c410")
    elif case == "escalation":
        env.seed_health(**{v2: "good"})
        for minutes in (30, 10):
            env.insert_decision(v2, ago=timedelta(minutes=minutes))
    deliver(env, env.smoke(False, accused))
    [event] = env.published.wait(1)
    rendered = _normalised(
        event,
        env.service,
        {v1: "sight-api-00001-r1", v2: "sight-api-00002-r2", v3: "sight-api-00003-r3"},
    )
    path = os.path.join(HERE, "golden", f"rollback_{case}.json")
    if REGEN:
        with open(path, "w") as f:
            f.write(json.dumps(rendered, indent=2) + "\n")
    with open(path) as f:
        assert rendered == json.load(f)
    RollbackResult.model_validate(rendered["data"])


# ------------------------------------------------------------------------ review findings


def test_an_unlabelled_incident_that_started_before_our_own_rollback_does_not_roll_back_again(
    env: Env,
) -> None:
    """R3 promoted at T, an incident from T+20s, smoke fails and we roll R3 -> R2 at T+31s;
    then the label-less incident arrives: it must not be blamed on R2."""
    v1, v2, v3 = env.deploy(newest_age=timedelta(minutes=1))
    env.seed_health(**{v1: "good", v2: "good"})
    incident = env.incident(None, started=datetime.now(UTC) - timedelta(seconds=30))
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v2: 100}
    assert deliver_incident(env, incident).status_code == 200
    assert env.patches() == 1
    assert env.serving() == {v2: 100}
    assert env.health()[v2] == "good"
    first, second = env.published.wait(2)
    assert first.type is EventType.ROLLBACK_SUCCEEDED
    assert second.type is EventType.ROLLBACK_FAILED, "escalated, not silently dropped"
    reason = second.data_as(RollbackResult).reason
    assert "has no revision label" in reason and "traffic not moved" in reason
    assert "not after the last traffic change" in reason


def test_an_unlabelled_incident_that_started_before_a_promotion_is_not_blamed_on_the_new_revision(
    env: Env,
) -> None:
    """Created before, promoted after the incident started (the smoke run in between): the
    incident is the old revision's, whatever create_time and the 60 s slack suggest."""
    v1, v2, _ = env.deploy(newest_age=timedelta(hours=1))
    env.seed_health(**{v1: "good", v2: "good"})
    started = datetime.now(UTC) - timedelta(seconds=30)
    env.cloudrun.create_revision(
        "sight-local", REGION_, env.service, image="img:v4", revision="v4", create_time=started
    )  # created under LATEST: v4 serves from now on
    assert deliver_incident(env, env.incident(None, started=started)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "not guessing which revision it is about" in result.reason
    assert "v4" not in env.health()


def test_an_unlabelled_incident_during_a_traffic_split_escalates_without_guessing(
    env: Env,
) -> None:
    v1, v2, v3 = env.deploy(newest_age=timedelta(hours=1))
    env.seed_health(**{v1: "good"})
    env.clock.shift = -timedelta(minutes=20)  # the split was set up 20 minutes ago
    env.cloudrun.set_traffic(
        "sight-local",
        REGION_,
        env.service,
        [
            {"type": "REVISION", "revision": v2, "percent": 90},
            {"type": "REVISION", "revision": v3, "percent": 10},
        ],
    )
    env.clock.shift = timedelta(0)
    assert deliver_incident(env, env.incident(None)).status_code == 200
    assert env.patches() == 0
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert f"traffic is split ({v2} 90%, {v3} 10%)" in result.reason
    assert set(env.health()) == {v1}, "nobody is accused on a guess"


def test_a_revision_rolled_back_from_by_an_alert_is_bad_even_after_an_earlier_smoke_pass(
    env: Env,
) -> None:
    """Smoke on the service URL passed after the incident had started; the incident still
    moves traffic away from v3, so v3 must end up bad and never be picked again."""
    v1, _, v3 = env.deploy(newest_age=timedelta(minutes=10))
    env.seed_health(**{v1: "good"})
    now = datetime.now(UTC)
    deliver(env, env.smoke(True, v3, at=now - timedelta(minutes=1)))
    assert env.health()[v3] == "good"
    deliver_incident(env, env.incident(v3, started=now - timedelta(minutes=5)))
    assert env.serving() == {v1: 100}
    assert env.health()[v3] == "bad"
    later = manual_rollback(env.deps, env.service, dry_run=True, region=REGION_)
    assert later.decision.to_revision != v3
    assert later.verdict is Verdict.FAIL and "no known-good revision" in later.reason


def test_a_traffic_change_by_a_human_during_the_decision_is_not_overwritten(env: Env) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    # The human's `update-traffic --to-revisions v1=100` lands while we are deciding.
    env.cloudrun.interleave(lambda: env.pin(v1), method="GET", path_regex=r"/revisions$")
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    assert env.serving() == {v1: 100}
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert result.reason == (
        f"traffic of {env.service} changed since the decision (was {v3} 100%, now {v1} 100%); "
        "not touching it"
    )
    [action] = env.actions("rollback")
    assert action["status"] == "failed"


def test_a_conflict_caused_by_a_human_traffic_change_is_not_retried_over_it(env: Env) -> None:
    """The human's change lands between our re-read and our PATCH: a real 409. The re-read
    after it shows different traffic, so there is no second PATCH."""
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    env.cloudrun.interleave(lambda: env.pin(v1), method="PATCH")
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 1
    assert env.serving() == {v1: 100}
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "changed since the decision" in result.reason and "not touching it" in result.reason


def test_a_failed_check_read_after_the_update_is_recorded_as_an_unknown_outcome_not_retried(
    env: Env,
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.configure(api_timeout_s=0.5)
    service_path = rf"/services/{env.service}$"
    env.cloudrun.interleave(
        lambda: env.cloudrun.inject_fault(503, method="GET", path_regex=service_path, count=1000),
        method="PATCH",
    )
    body = envelope(*env.smoke(False, v3))
    assert push(env.client, "smoke-tests", body).status_code == 200
    assert env.serving() == {v1: 100}, "the update did happen"
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "outcome unknown" in result.reason
    assert "check the service's traffic by hand" in result.reason
    [action] = env.actions("rollback")
    assert (action["status"], action["detail"]["to"]) == ("failed", v1)
    assert push(env.client, "smoke-tests", body).status_code == 200  # a redelivery...
    assert len(env.actions("rollback")) == 1, "...is a duplicate, not a 'serves no traffic'"


def test_a_client_timeout_on_an_update_that_cloud_run_applied_is_recorded_as_unknown(
    env: Env,
) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.configure(api_timeout_s=0.3)
    env.cloudrun.interleave(lambda: time.sleep(1.0), method="PATCH")  # slow, then applied
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_FAILED
    assert "was sent, then" in result.reason and "outcome unknown" in result.reason
    assert env.actions("rollback")[0]["status"] == "failed"
    deadline = time.monotonic() + 5
    while env.serving() != {v1: 100} and time.monotonic() < deadline:
        time.sleep(0.05)
        env.cloudrun.settle()  # the operation completes in Cloud Run whether we poll or not
    assert env.serving() == {v1: 100}, "Cloud Run applied it: hence 'unknown', not 'not moved'"


class _DownPublisher:
    def publish_event(self, topic: str, event: Any) -> str:
        raise RuntimeError("Pub/Sub unreachable")


def test_a_failed_publish_after_an_unfinished_operation_keeps_the_record(env: Env) -> None:
    """The outcome is committed before the event: a publish outage after traffic may have
    moved keeps the record and has the trigger redelivered (503), and a redelivery never
    decides or records again."""
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.configure(publisher=_DownPublisher(), operation_timeout_s=0.5)
    env.cloudrun.configure(operation_polls=10_000)
    body = envelope(*env.smoke(False, v3))
    assert push(env.client, "smoke-tests", body).status_code == 503
    [action] = env.actions("rollback")
    assert action["status"] == "failed"
    assert action["detail"]["event_published"] is False
    assert "did not finish within" in action["detail"]["reason"]
    assert push(env.client, "smoke-tests", body).status_code == 503
    assert len(env.actions("rollback")) == 1


def test_an_event_not_published_after_a_rollback_goes_out_on_the_redelivery(env: Env) -> None:
    """Pub/Sub down once traffic moved: the trigger comes back until the event is out,
    exactly once, and traffic is moved once."""
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    env.configure(publisher=_DownPublisher())
    body = envelope(*env.smoke(False, v3))
    assert push(env.client, "smoke-tests", body).status_code == 503
    assert env.serving() == {v1: 100}
    assert env.published.seen == []
    env.configure()  # Pub/Sub is back
    assert push(env.client, "smoke-tests", body).status_code == 200
    event_type, result = env.published.one()
    assert event_type is EventType.ROLLBACK_SUCCEEDED
    assert result.to_revision == v1
    assert env.patches() == 1
    [action] = env.actions("rollback")
    assert action["status"] == "succeeded"
    assert push(env.client, "smoke-tests", body).status_code == 200
    assert len(env.published.wait(1)) == 1


def test_a_newer_candidate_that_passed_its_tag_smoke_is_never_the_automatic_target(
    env: Env,
) -> None:
    v1, _, v3 = env.deploy()
    env.cloudrun.create_revision(
        "sight-local",
        REGION_,
        env.service,
        image="img:v4",
        revision="v4",
        no_traffic=True,
        tag="candidate",
    )
    env.seed_health(**{v1: "good", "v4": "good"})
    deliver(env, env.smoke(False, v3))
    assert env.serving() == {v1: 100}
    _, result = env.published.one()
    assert result.to_revision == v1


def test_a_late_open_notification_of_an_incident_already_reported_closed_changes_nothing(
    env: Env,
) -> None:
    """The open delivery got a 503, the closed one arrived, then the open one came back."""
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    incident_id = "0.late0open0001"
    closed = env.incident(v3, incident_id=incident_id, state="closed", ended_at=1748864000)
    assert deliver_incident(env, closed).status_code == 200
    assert deliver_incident(env, env.incident(v3, incident_id=incident_id)).status_code == 200
    assert env.patches() == 0
    assert env.serving() == {v3: 100}
    # Both states are facts for the ledger; nothing was decided.
    assert [(a["kind"], a["status"]) for a in env.actions()] == [
        ("incident", "closed"),
        ("incident", "open"),
    ]
    assert env.deps.metrics.counter("events", consumer="rollback", outcome="skipped") >= 2
