"""Every `sightops simulate` scenario through the real local stack (docs/simulate.md):
stand-ins, every function under functions-framework, push subscriptions on the emulator,
the deploy trigger running `sightops deploy`. One isolated stack serves the module (its own
scratch database, Pub/Sub project and free ports); each scenario has a service of its own.

Each scenario's verdict must pass, and its facts are checked here again, as the
specification of what the scenario shows (not just that it "passed")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from sightops.simulate import SCENARIOS, Facts, Simulation, Verdict
from sightops.simulate._scenarios import (
    CANARY_PROMOTED,
    CANARY_ROLLED_BACK,
    CANARY_STOPPED,
    DEPLOYED,
    FROZEN,
    MIGRATION_FAILED,
    PROMOTED,
    RELEASE_FAILED,
    ROLLED_BACK,
    SMOKE_FAILED,
    STORM_INCIDENTS,
)
from sightops.stack import StackPorts
from tests.helpers import ROOT


@pytest.fixture(scope="module")
def simulation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Simulation]:
    with Simulation(state_dir=tmp_path_factory.mktemp("sim")) as sim:
        yield sim


def explain(verdict: Verdict) -> str:
    """What a failing assertion shows: the failed checks and the timeline."""
    lines = [f"{c.name}: {c.detail}" for c in verdict.checks if not c.ok]
    lines += [f"{r.t_s:+8.3f}s {r.source:<8} {r.text[:200]}" for r in verdict.timeline]
    return "\n".join([*lines, *verdict.notes])


# ---- what each scenario shows ----------------------------------------------------------


def green_moves_traffic_to_the_new_revision_under_one_trace(f: Facts) -> None:
    assert f.new_revision not in (None, f.last_good)
    assert f.traffic_before == {f.last_good: 100}
    assert f.traffic_after == {f.new_revision: 100}
    assert f.events[DEPLOYED] == f.events[PROMOTED] == 1
    assert f.deploy_exit_codes == [0]
    assert set(f.phases_ms) == {"deploy", "smoke_tag", "promote", "smoke_service"}
    assert any("promoted" in s for s in f.slack)
    # One trace per release: every event, action and log line of it carries its id.
    for kind in ("events", "actions", "logs"):
        assert f.trace_ids[kind] == [f.release_trace_id], kind


def failed_migration_deploys_nothing(f: Facts) -> None:
    assert f.events[MIGRATION_FAILED] == 1
    assert f.count("migration", "failed") == 1
    assert f.deploy_exit_codes == []
    assert f.revisions == [f.last_good]
    assert f.traffic_after == f.traffic_before == {f.last_good: 100}


def bad_release_puts_traffic_back_on_the_last_good_revision(f: Facts) -> None:
    assert f.events[PROMOTED] == 1 and f.events[SMOKE_FAILED] == 1
    assert f.traffic_after == {f.last_good: 100}
    assert f.events[ROLLED_BACK] == 1
    assert f.count("rollback", "succeeded") == 1
    assert f.milestones["restored"] >= f.milestones["smoke_failed"]


def breaking_migration_then_bad_smoke_freezes_and_escalates(f: Facts) -> None:
    assert [a.breaking for a in f.actions if a.kind == "migration"] == [True]
    assert f.events[FROZEN] == 1 and ROLLED_BACK not in f.events
    assert f.count("freeze", "frozen") == 1
    assert f.traffic_after == {f.new_revision: 100}  # not moved back over the migration
    assert any("<!here>" in s and "frozen" in s.lower() for s in f.slack)


def late_alert_rolls_the_promoted_revision_back(f: Facts) -> None:
    assert SMOKE_FAILED not in f.events
    assert f.count("incident", "open") == 1
    assert f.events[ROLLED_BACK] == 1
    assert f.traffic_after == {f.last_good: 100}


def alert_storm_is_one_rollback_and_one_slack_message(f: Facts) -> None:
    assert f.count("incident", "open") == STORM_INCIDENTS
    assert f.count("rollback", "succeeded") == 1
    assert f.traffic_after == {f.last_good: 100}
    assert len([s for s in f.slack if "error rate" in s]) == 1


def duplicated_and_reordered_deliveries_act_once(f: Facts) -> None:
    assert f.messages[PROMOTED] >= 1 and f.messages["build.SUCCESS"] == 3
    assert f.outcomes.get("migrate:duplicate", 0) >= 2
    assert f.count("migration") == 1
    assert f.count("release", "deployed") == f.count("release", "promoted") == 1
    # Cloud Build's trigger runs one deploy per delivered message: the duplicates find
    # the release already deployed, do nothing and succeed.
    assert len(f.deploy_exit_codes) == f.messages["sight.ops.migration.succeeded"]
    assert set(f.deploy_exit_codes) == {0}
    assert len(f.revisions) == 2
    assert sum("promoted" in s for s in f.slack) == 1


def canary_promotes_a_healthy_release_by_evidence(f: Facts) -> None:
    assert f.canary is not None and f.canary["status"] == "promoted"
    assert f.events[CANARY_PROMOTED] == f.events[PROMOTED] == 1
    assert f.traffic_after == {f.new_revision: 100}
    # 50 % first (the canary's step), then 100 %: never straight to the new revision
    assert f.traffic_moves >= 2
    assert f.count("canary", "started") == f.count("canary", "promote") == 1
    assert f.count("release", "promoted") == 1 and RELEASE_FAILED not in f.events


def canary_rolls_back_on(test: str) -> Callable[[Facts], None]:
    def shows(f: Facts) -> None:
        assert f.canary is not None and f.canary["status"] == "rolled_back"
        assert f"canary worse than stable on {test}" in f.canary["reason"]
        assert f.events[CANARY_ROLLED_BACK] == f.events[RELEASE_FAILED] == 1
        assert PROMOTED not in f.events
        assert f.traffic_after == {f.last_good: 100}
        assert f.new_revision is not None and f.health[f.new_revision] == "bad"

    return shows


def canary_stops_when_a_human_moves_the_traffic_and_leaves_their_split(f: Facts) -> None:
    assert f.canary is not None and f.canary["status"] == "stopped"
    assert f.events[CANARY_STOPPED] == 1
    assert f.traffic_after == {f.last_good: 90, f.new_revision: 10}
    assert PROMOTED not in f.events and RELEASE_FAILED not in f.events


SHOWS: dict[str, Callable[[Facts], None]] = {
    "green": green_moves_traffic_to_the_new_revision_under_one_trace,
    "failed-migration": failed_migration_deploys_nothing,
    "bad-release": bad_release_puts_traffic_back_on_the_last_good_revision,
    "breaking-then-bad": breaking_migration_then_bad_smoke_freezes_and_escalates,
    "late-alert": late_alert_rolls_the_promoted_revision_back,
    "alert-storm": alert_storm_is_one_rollback_and_one_slack_message,
    "duplicates": duplicated_and_reordered_deliveries_act_once,
    "canary-good": canary_promotes_a_healthy_release_by_evidence,
    "canary-bad": canary_rolls_back_on("errors"),
    "canary-slow": canary_rolls_back_on("latency"),
    "canary-human": canary_stops_when_a_human_moves_the_traffic_and_leaves_their_split,
}


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_scenario_passes_on_the_real_stack_and_shows_what_it_claims(
    simulation: Simulation, name: str
) -> None:
    verdict = simulation.run(name, timeout_s=45)
    assert verdict.passed, explain(verdict)
    assert name in SHOWS, f"say what scenario {name!r} shows in SHOWS"
    SHOWS[name](verdict.facts)


def test_simulate_cli_runs_a_scenario_on_its_own_stack_next_to_make_dev(tmp_path: Path) -> None:
    """The command a newcomer runs: its own scratch database, project and free ports
    (never `make dev`'s), a JSON verdict, exit 0."""
    env = {**os.environ, "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "sightops.cli", "simulate", "failed-migration", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    [verdict] = json.loads(done.stdout)
    assert verdict["scenario"] == "failed-migration" and verdict["passed"]
    assert verdict["facts"]["deploy_exit_codes"] == []
    assert verdict["facts"]["events"][MIGRATION_FAILED] == 1


def test_a_simulation_stack_shares_nothing_with_make_dev(simulation: Simulation) -> None:
    stack = simulation.stack
    assert stack is not None
    assert not set(stack.ports.all()) & set(StackPorts.dev().all())
    assert stack.project != "sight-local"
    assert str(make_url(stack.env["DATABASE_URL"]).database).startswith("sightops_sim_")
    assert stack.env["NOTIFY__REDIS_PREFIX"] != "sightops:notify:v1:"
