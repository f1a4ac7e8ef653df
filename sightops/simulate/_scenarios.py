"""The scenario table: what each scenario does to the stack and what its verdict checks
(docs/simulate.md). Each is also a test (tests/simulate/test_scenarios.py)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from sightops.simulate._run import Facts, Run

PROMOTED = "sight.ops.release.promoted"
DEPLOYED = "sight.ops.release.deployed"
RELEASE_FAILED = "sight.ops.release.failed"
MIGRATION_OK = "sight.ops.migration.succeeded"
MIGRATION_FAILED = "sight.ops.migration.failed"
SMOKE_PASSED = "sight.ops.smoke.passed"
SMOKE_FAILED = "sight.ops.smoke.failed"
ROLLED_BACK = "sight.ops.rollback.succeeded"
FROZEN = "sight.ops.rollback.frozen"
ROLLBACK_SKIPPED = "sight.ops.rollback.skipped"
CANARY_STARTED = "sight.ops.canary.started"
CANARY_PROMOTED = "sight.ops.canary.promoted"
CANARY_ROLLED_BACK = "sight.ops.canary.rolled_back"
CANARY_HELD = "sight.ops.canary.held"
CANARY_STOPPED = "sight.ops.canary.stopped"
CANARY_ENDED = (CANARY_PROMOTED, CANARY_ROLLED_BACK, CANARY_HELD, CANARY_STOPPED)

Check = tuple[str, bool, str]
STORM_INCIDENTS = 8

#: The canary scenarios' plan (CANARY__SERVICES, set when the stack starts): one analysed
#: step, 50 % then 100 %; a healthy canary without a verdict within ``max_step_s`` is
#: promoted at the limit when its evidence leans "not worse" (docs/canary.md, "The step
#: plan"), so no run waits for the statistics' slowest tail.
CANARY_PLAN = {"steps": [50, 100], "max_step_s": 20}
#: Traffic through the service URL while a canary runs, and the error rate of both images
#: (the stable's too): errors on both sides give the errors test evidence to pass on.
#: At 100 requests/s and 5 %, the analysis reaches a verdict on a healthy canary in a
#: median of 7 s (1 %: 17 s, up to 80 s, too slow for a test).
CANARY_RPS = 100.0
BASE_ERROR_RATE = 0.05


@dataclass(frozen=True)
class Scenario:
    name: str
    summary: str
    drive: Callable[[Run], None]
    expect: Callable[[Facts], list[Check]]
    #: its service is opted in to the canary (a name fixed when the stack starts)
    canary: bool = False


def _table(tag: str) -> str:
    return f"sim_{tag}_{uuid.uuid4().hex[:8]}"


def clean_migration() -> tuple[str, str, str | None]:
    """A new table: what most releases bring."""
    name = _table("notes")
    return (
        "add_notes",
        f'op.execute("CREATE TABLE {name} (id bigint PRIMARY KEY, body text)")',
        None,
    )


# ---- the checks every release shares -------------------------------------------------


def check(name: str, ok: bool, detail: object = "") -> Check:
    return (name, bool(ok), str(detail))


def promoted_checks(f: Facts) -> list[Check]:
    new = f.new_revision
    return [
        check(
            "the migration ran once and succeeded",
            f.count("migration", "succeeded") == 1,
            [(a.kind, a.status) for a in f.actions if a.kind == "migration"],
        ),
        check(
            # one per delivered migration.succeeded, as Cloud Build's trigger runs them: a
            # duplicate finds its release already deployed and exits 0 doing nothing
            "every deploy exited 0",
            bool(f.deploy_exit_codes) and set(f.deploy_exit_codes) == {0},
            f.deploy_exit_codes,
        ),
        check("a new revision was deployed", new is not None and new != f.last_good, new),
        check(
            "deployed, both smokes passed, promoted: each event once",
            f.events.get(DEPLOYED) == 1
            and f.events.get(SMOKE_PASSED) == 2
            and f.events.get(PROMOTED) == 1,
            f.events,
        ),
        check(
            "the ledger has the release deployed and promoted",
            f.count("release", "deployed") == 1 and f.count("release", "promoted") == 1,
            [(a.kind, a.status) for a in f.actions if a.kind == "release"],
        ),
    ]


# ---- green ---------------------------------------------------------------------------


def drive_green(run: Run) -> None:
    run.seed()
    run.release(clean_migration())
    run.wait_any(PROMOTED, RELEASE_FAILED)
    run.wait_traffic({run.promoted_revision(): 100})
    run.wait_actions("release", "promoted")
    run.wait_slack("promoted")
    run.wait_deploy()


def expect_green(f: Facts) -> list[Check]:
    order = [t for t in f.event_order if t.startswith(("build.", "sight.ops."))]
    expected = ["build.SUCCESS", MIGRATION_OK, DEPLOYED, SMOKE_PASSED, SMOKE_PASSED, PROMOTED]
    return [
        *promoted_checks(f),
        check(
            "traffic moved: the new revision serves 100 %",
            f.new_revision is not None and f.traffic_after == {f.new_revision: 100},
            f"{f.traffic_before} -> {f.traffic_after}",
        ),
        check("events in pipeline order", order == expected, order),
        check(
            "nothing rolled back",
            not any(k.startswith("sight.ops.rollback.") for k in f.events),
            f.events,
        ),
        check(
            "Slack was told the release was promoted",
            any("promoted" in s for s in f.slack),
            f.slack,
        ),
        check(
            "one trace: every event, action and log line of the release carries its id",
            all(f.trace_ids.get(k) == [f.release_trace_id] for k in ("events", "actions", "logs")),
            f"{f.trace_ids} (expected {f.release_trace_id})",
        ),
    ]


# ---- failed migration ----------------------------------------------------------------


def drive_failed_migration(run: Run) -> None:
    run.seed()
    table = _table("half")
    try:
        run.release(
            (
                "fails_halfway",
                f'op.execute("CREATE TABLE {table} (id int PRIMARY KEY)")\n'
                f'op.execute("INSERT INTO {table} VALUES (1), (1)")',
                None,
            )
        )
        run.wait_event(MIGRATION_FAILED)
        run.wait_slack("Migration failed")
        run.settle(1.0)  # a deploy, if one were wrongly triggered, would show by now
    finally:
        run.h.drop_migration(run.migration)  # rolled back: it leaves with its release


def expect_failed_migration(f: Facts) -> list[Check]:
    return [
        check("migration.failed published once", f.events.get(MIGRATION_FAILED) == 1, f.events),
        check(
            "the ledger has the failed run",
            f.count("migration", "failed") == 1 and f.count("migration", "succeeded") == 0,
            [(a.kind, a.status) for a in f.actions],
        ),
        check("no deploy ran", f.deploy_exit_codes == [], f.deploy_exit_codes),
        check(
            "no release event",
            not any(k.startswith("sight.ops.release.") for k in f.events),
            f.events,
        ),
        check("no revision was created", f.revisions == [f.last_good], f.revisions),
        check("traffic untouched", f.traffic_after == f.traffic_before, f.traffic_after),
        check("Slack was told", any("Migration failed" in s for s in f.slack), f.slack),
    ]


# ---- bad release: the smoke run on the service URL fails after promotion -------------


def _promote_then_break(
    run: Run, migration: tuple[str, str, str | None] | None = None, **how: object
) -> str:
    """A release promoted as usual, whose image then goes bad (``how``: the Sight API
    stand-in's image behaviour; default: its health check answers 503)."""
    run.seed()
    run.release(migration)
    run.wait_any(PROMOTED, RELEASE_FAILED)
    revision = run.promoted_revision()
    run.wait_traffic({revision: 100})
    run.wait_deploy()
    run.h.break_image(run.current.image, **(how or {"failing_checks": ["health"]}))
    return revision


def _rolled_back(run: Run) -> None:
    """rollback.succeeded, the last good revision serving 100 % again, Slack told."""
    run.wait_event(ROLLED_BACK)
    assert run.last_good is not None
    run.wait_traffic({run.last_good: 100})
    run.wait_slack("Rollback succeeded")


def drive_bad_release(run: Run) -> None:
    revision = _promote_then_break(run)
    run.smoke_service(revision)
    _rolled_back(run)


def expect_bad_release(f: Facts) -> list[Check]:
    return [
        *promoted_checks(f),
        check("the smoke run after promotion failed", f.events.get(SMOKE_FAILED) == 1, f.events),
        check(
            "traffic is back on the last good revision",
            f.traffic_after == {f.last_good: 100},
            f"{f.traffic_before} -> {f.traffic_after}",
        ),
        check(
            "one rollback",
            f.events.get(ROLLED_BACK) == 1 and f.count("rollback", "succeeded") == 1,
            [(a.kind, a.status) for a in f.actions if a.kind == "rollback"],
        ),
        check(
            "Slack was told of the rollback",
            any("Rollback succeeded" in s for s in f.slack),
            f.slack,
        ),
    ]


# ---- breaking migration, then the smoke fails: freeze and escalate -------------------


def drive_breaking_then_bad(run: Run) -> None:
    table = _table("legacy")
    # The schema before the release: a table the release's migration drops a column of.
    run.h.execute(f"CREATE TABLE {table} (id int PRIMARY KEY, legacy text)")
    revision = _promote_then_break(
        run, ("drop_legacy", f'op.drop_column("{table}", "legacy")', "drop-column")
    )
    run.smoke_service(revision)
    run.wait_event(FROZEN)
    run.wait_slack("Rollback frozen")


def expect_breaking_then_bad(f: Facts) -> list[Check]:
    migration = [a for a in f.actions if a.kind == "migration"]
    return [
        *promoted_checks(f),
        check(
            "the migration was breaking",
            [a.breaking for a in migration] == [True],
            [a.breaking for a in migration],
        ),
        check("the smoke run after promotion failed", f.events.get(SMOKE_FAILED) == 1, f.events),
        check(
            "rollback froze: frozen event and freeze row",
            f.events.get(FROZEN) == 1 and f.count("freeze") == 1 and not f.events.get(ROLLED_BACK),
            [(a.kind, a.status) for a in f.actions],
        ),
        check("traffic not moved back", f.traffic_after == {f.new_revision: 100}, f.traffic_after),
        check(
            "Slack escalated: the frozen message mentions the channel",
            any("frozen" in s.lower() and "<!here>" in s for s in f.slack),
            f.slack,
        ),
    ]


# ---- late alert -----------------------------------------------------------------------


def drive_late_alert(run: Run) -> None:
    revision = _promote_then_break(run, error_rate=0.3)
    run.h.publish_incident(run.service, revision, policy=f"{run.service} 5xx error rate")
    _rolled_back(run)


def expect_late_alert(f: Facts) -> list[Check]:
    return [
        *promoted_checks(f),
        check("no smoke failed: the alert caught it", not f.events.get(SMOKE_FAILED), f.events),
        check(
            "the incident is in the ledger",
            f.count("incident", "open") == 1,
            [(a.kind, a.status) for a in f.actions],
        ),
        check("one rollback", f.events.get(ROLLED_BACK) == 1, f.events),
        check(
            "traffic is back on the last good revision",
            f.traffic_after == {f.last_good: 100},
            f.traffic_after,
        ),
    ]


# ---- alert storm ----------------------------------------------------------------------


def drive_alert_storm(run: Run) -> None:
    revision = _promote_then_break(run, error_rate=0.3)
    policy = f"{run.service} 5xx error rate"
    for _ in range(STORM_INCIDENTS):
        run.h.publish_incident(run.service, revision, policy=policy)
    # One decision per incident in the ledger (skips are logged at DEBUG only).
    run.wait_actions("rollback", "succeeded")
    run.wait_actions("rollback", "skipped", STORM_INCIDENTS - 1)
    run.wait_outcomes("notify", STORM_INCIDENTS, event_type="monitoring-alerts")
    run.wait_slack(policy)
    run.settle(2.0)  # a second group message would come now: none should


def expect_alert_storm(f: Facts) -> list[Check]:
    alerts = [s for s in f.slack if "error rate" in s]
    after = [s for s in f.slack if "Migration" not in s and "promoted" not in s]
    return [
        *promoted_checks(f),
        check(
            f"{STORM_INCIDENTS} incidents, all in the ledger",
            f.count("incident", "open") == STORM_INCIDENTS,
            f.count("incident", "open"),
        ),
        check(
            "one rollback",
            f.events.get(ROLLED_BACK) == 1 and f.count("rollback", "succeeded") == 1,
            f.events,
        ),
        check(
            "traffic is back on the last good revision",
            f.traffic_after == {f.last_good: 100},
            f.traffic_after,
        ),
        check(
            "notify grouped the storm: one Slack message for the alerts", len(alerts) == 1, alerts
        ),
        check(
            "no Slack spam: the alerts' message and the rollback's, nothing more",
            len(after) <= 2,
            after,
        ),
    ]


# ---- duplicated and reordered deliveries -----------------------------------------------


def drive_duplicates(run: Run) -> None:
    h = run.h
    seen: set[str] = set()

    def duplicate(entry: object) -> None:
        from sightops.stack import TimelineEntry

        assert isinstance(entry, TimelineEntry)
        if entry.source != "topic" or not run.concerns(entry):
            return
        kind = entry.event_type or ("build" if "buildId" in entry.attributes else "")
        if kind in ("build", MIGRATION_OK, DEPLOYED) and kind not in seen:
            seen.add(kind)
            h.republish(entry)  # the same message twice more, in the middle of the release
            h.republish(entry)

    h.recorder.add_hook(duplicate)
    try:
        run.seed()
        run.release(clean_migration())
        run.wait_any(PROMOTED, RELEASE_FAILED)
        revision = run.promoted_revision()
        run.wait_traffic({revision: 100})
        # Reordered: the tag's smoke.passed comes again after the promotion (older news).
        [first_pass] = [
            e
            for e in h.recorder.entries(run.mark)
            if e.source == "topic" and run.concerns(e) and e.event_type == SMOKE_PASSED
        ][:1]
        h.republish(first_pass)
        run.wait_actions("release", "promoted")
        run.wait_slack("promoted")
        run.wait_deploy()
        run.settle(2.0)
    finally:
        h.recorder.clear_hooks()


def expect_duplicates(f: Facts) -> list[Check]:
    return [
        *promoted_checks(f),
        check(
            "duplicates were delivered",
            f.messages.get(MIGRATION_OK, 0) >= 3 and f.messages.get("build.SUCCESS", 0) >= 3,
            f.messages,
        ),
        check(
            "the runtime answered them as duplicates",
            f.outcomes.get("migrate:duplicate", 0) >= 2,
            f.outcomes,
        ),
        check("one new revision", len(f.revisions) == 2, f.revisions),
        check(
            "traffic on the new revision", f.traffic_after == {f.new_revision: 100}, f.traffic_after
        ),
        check(
            "one Slack message per release event",
            sum("promoted" in s for s in f.slack) == 1,
            f.slack,
        ),
    ]


# ---- canary: the release steps its traffic by evidence ---------------------------------


def _canary(run: Run, image: Mapping[str, object], *, human: bool = False) -> None:
    """A release of a service opted in to the canary, through the deploy path: `sightops
    deploy` hands it to the canary function after its tag smoke, the canary gives it
    50 %; then ``image`` is how the new image behaves (the Sight API stand-in), real
    requests go through the service URL and a tick comes every second until the canary
    ends. ``human``: someone moves the traffic mid-canary."""
    from standins.traffic import Traffic

    h = run.h
    run.seed()
    assert run.baseline is not None
    h.break_image(run.baseline.image, error_rate=BASE_ERROR_RATE)
    run.release()
    started = run.wait_event(CANARY_STARTED)[0].json_data()
    # Only now: the tag smoke must pass for the canary to start at all.
    h.break_image(run.current.image, **{"error_rate": BASE_ERROR_RATE, **image})
    url = str(h.service(run.service)["uri"])
    with Traffic(url, rps=CANARY_RPS, path="/health", seed=14) as traffic:
        if human:
            assert run.last_good is not None
            h.publish_tick(run.service)  # one analysis first: the canary is under way
            run.wait_outcomes("canary", 1, event_type="sight.ops.canary.tick")
            split = {run.last_good: 90, str(started["revision"]): 10}
            h.set_traffic(run.service, split)
            run.wait_traffic(split)
        run.tick_until(*CANARY_ENDED)
    report = traffic.stop()
    run.notes.append(f"traffic: {report.to_json()}")


def canary_checks(f: Facts, status: str) -> list[Check]:
    canary = f.canary or {}
    return [
        check("every deploy exited 0", f.deploy_exit_codes == [0], f.deploy_exit_codes),
        check(
            "deployed, handed to the canary, started once",
            f.events.get(DEPLOYED) == 1
            and f.events.get(CANARY_STARTED) == 1
            and f.events.get(SMOKE_PASSED) == 1,
            f.events,
        ),
        check(f"ops.canaries says {status}", canary.get("status") == status, canary),
    ]


def drive_canary_good(run: Run) -> None:
    _canary(run, {})
    run.wait_event(PROMOTED)
    run.wait_traffic({run.promoted_revision(): 100})
    run.wait_actions("release", "promoted")


def expect_canary_good(f: Facts) -> list[Check]:
    return [
        *canary_checks(f, "promoted"),
        check(
            "canary.promoted, then release.promoted, once each",
            f.events.get(CANARY_PROMOTED) == 1 and f.events.get(PROMOTED) == 1,
            f.events,
        ),
        check(
            "the new revision serves 100 %",
            f.new_revision is not None and f.traffic_after == {f.new_revision: 100},
            f"{f.traffic_before} -> {f.traffic_after}",
        ),
        check(
            "the ledger: canary started and promoted, the release promoted",
            f.count("canary", "started") == 1
            and f.count("canary", "promote") == 1
            and f.count("release", "promoted") == 1,
            [(a.kind, a.status) for a in f.actions],
        ),
        check("nothing rolled back", not f.events.get(RELEASE_FAILED), f.events),
    ]


def drive_canary_rolled_back(run: Run, **image: object) -> None:
    _canary(run, image)
    run.wait_event(RELEASE_FAILED)
    assert run.last_good is not None
    run.wait_traffic({run.last_good: 100})


def rolled_back_checks(f: Facts, test: str) -> list[Check]:
    canary = f.canary or {}
    return [
        *canary_checks(f, "rolled_back"),
        check(
            f"rolled back on {test}",
            f"worse than stable on {test}" in str(canary.get("reason")),
            canary.get("reason"),
        ),
        check(
            "canary.rolled_back and release.failed, no promotion",
            f.events.get(CANARY_ROLLED_BACK) == 1
            and f.events.get(RELEASE_FAILED) == 1
            and not f.events.get(PROMOTED),
            f.events,
        ),
        check(
            "traffic is back on the stable revision",
            f.traffic_after == {f.last_good: 100},
            f"{f.traffic_before} -> {f.traffic_after}",
        ),
        check(
            "the ledger marks the canary's revision bad",
            f.new_revision is not None and f.health.get(f.new_revision) == "bad",
            f.health,
        ),
        check("one rollback row", f.count("canary", "rollback") == 1, f.actions),
    ]


def drive_canary_bad(run: Run) -> None:
    drive_canary_rolled_back(run, error_rate=0.3)


def expect_canary_bad(f: Facts) -> list[Check]:
    return rolled_back_checks(f, "errors")


def drive_canary_slow(run: Run) -> None:
    drive_canary_rolled_back(run, latency_ms=150.0)


def expect_canary_slow(f: Facts) -> list[Check]:
    return rolled_back_checks(f, "latency")


def drive_canary_human(run: Run) -> None:
    _canary(run, {}, human=True)


def expect_canary_human(f: Facts) -> list[Check]:
    canary = f.canary or {}
    return [
        *canary_checks(f, "stopped"),
        check("canary.stopped once", f.events.get(CANARY_STOPPED) == 1, f.events),
        check(
            "the human's split stands: 90 % stable, 10 % canary",
            f.new_revision is not None and f.traffic_after == {f.last_good: 90, f.new_revision: 10},
            f.traffic_after,
        ),
        check(
            "the canary says someone else changed the traffic",
            "someone else changed it" in str(canary.get("reason")),
            canary.get("reason"),
        ),
        check(
            "no promotion, no rollback",
            not f.events.get(PROMOTED)
            and not f.events.get(RELEASE_FAILED)
            and f.count("canary", "rollback") == 0,
            f.events,
        ),
    ]


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "green",
            "build SUCCESS → migrate → deploy without traffic → smoke tag → "
            "promote → smoke service → Slack",
            drive_green,
            expect_green,
        ),
        Scenario(
            "failed-migration",
            "the release's migration fails: nothing is deployed",
            drive_failed_migration,
            expect_failed_migration,
        ),
        Scenario(
            "bad-release",
            "smoke fails after promotion: traffic back on the last good revision",
            drive_bad_release,
            expect_bad_release,
        ),
        Scenario(
            "breaking-then-bad",
            "a breaking migration, then smoke fails: freeze and escalate, traffic stays",
            drive_breaking_then_bad,
            expect_breaking_then_bad,
        ),
        Scenario(
            "late-alert",
            "an auto_rollback incident catches the bad release later: rollback",
            drive_late_alert,
            expect_late_alert,
        ),
        Scenario(
            "alert-storm",
            f"{STORM_INCIDENTS} incidents during a release: one rollback, one Slack message",
            drive_alert_storm,
            expect_alert_storm,
        ),
        Scenario(
            "duplicates",
            "duplicated and reordered deliveries mid-release: each action once",
            drive_duplicates,
            expect_duplicates,
        ),
        Scenario(
            "canary-good",
            "a healthy release through the canary: 50 % on evidence, then promoted",
            drive_canary_good,
            expect_canary_good,
            canary=True,
        ),
        Scenario(
            "canary-bad",
            "the canary answers 30 % 5xx (stable 5 %): rolled back on errors",
            drive_canary_bad,
            expect_canary_bad,
            canary=True,
        ),
        Scenario(
            "canary-slow",
            "the canary answers 150 ms slower: rolled back on latency",
            drive_canary_slow,
            expect_canary_slow,
            canary=True,
        ),
        Scenario(
            "canary-human",
            "someone moves the traffic mid-canary: the canary stops, the split stays",
            drive_canary_human,
            expect_canary_human,
            canary=True,
        ),
    )
}
