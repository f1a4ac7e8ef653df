"""`sightops rollback` and `sightops revisions`: the manual path, same checks, recorded as
manual, against the same PostgreSQL, emulator and Cloud Run stand-in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from shared.events import EventType, RollbackResult
from shared.settings import get_settings
from sightops.cli import app
from tests.functions.rollback.conftest import Env


@pytest.fixture
def cli(env: Env, monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    """The CLI reads its settings from the environment: point them at this test's world."""
    monkeypatch.setenv("CLOUD_RUN_ENDPOINT", env.server.url)
    monkeypatch.setenv("TOPICS__OPS_EVENTS", env.published.topic)  # type: ignore[attr-defined]
    monkeypatch.setenv("GCP_PROJECT", "sight-local")
    monkeypatch.setenv("GCP_REGION", "europe-west1")
    monkeypatch.setenv("COLUMNS", "200")  # rich tables unwrapped
    get_settings.cache_clear()
    yield CliRunner()
    get_settings.cache_clear()


def test_manual_rollback_moves_to_the_newest_known_good_and_is_recorded_as_manual(
    env: Env, cli: CliRunner
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    result = cli.invoke(app, ["rollback", env.service])
    assert result.exit_code == 0, result.output
    assert "sight.ops.rollback.succeeded" in result.output
    assert env.serving() == {v2: 100}
    [action] = env.actions("rollback")
    assert action["actor"].startswith("manual:")
    assert action["detail"]["manual"] is True
    kind, event = env.published.one()
    assert kind is EventType.ROLLBACK_SUCCEEDED
    assert event.manual and event.trigger_event_id is None
    del v3


def test_manual_rollback_dry_run_changes_nothing(env: Env, cli: CliRunner) -> None:
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    result = cli.invoke(app, ["rollback", env.service, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "dry run: would move" in " ".join(result.output.split())
    assert env.serving() == {v3: 100}
    assert env.patches() == 0


def test_manual_rollback_to_a_bad_revision_needs_force(env: Env, cli: CliRunner) -> None:
    v1, _, _ = env.deploy()
    env.seed_health(**{v1: "bad"})
    refused = cli.invoke(app, ["rollback", env.service, "--to", v1])
    assert refused.exit_code == 1
    assert "use --force" in " ".join(refused.output.split())
    assert env.patches() == 0
    forced = cli.invoke(app, ["rollback", env.service, "--to", v1, "--force"])
    assert forced.exit_code == 0, forced.output
    assert env.serving() == {v1: 100}
    events = env.published.wait(2)
    assert [e.type for e in events] == [EventType.ROLLBACK_FAILED, EventType.ROLLBACK_SUCCEEDED]
    assert "(forced)" in events[1].data_as(RollbackResult).reason


def test_manual_rollback_ignores_the_anti_flap_cap(env: Env, cli: CliRunner) -> None:
    from datetime import timedelta

    v1, _, _ = env.deploy()
    env.seed_health(**{v1: "good"})
    for minutes in (3, 2, 1):
        env.insert_decision(v1, ago=timedelta(minutes=minutes))
    assert cli.invoke(app, ["rollback", env.service]).exit_code == 0
    assert env.serving() == {v1: 100}


def test_revisions_lists_health_traffic_and_tags_and_marks(env: Env, cli: CliRunner) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good"})
    result = cli.invoke(
        app, ["revisions", env.service, "--mark-bad", v2, "--reason", "broke checkout"]
    )
    assert result.exit_code == 0, result.output
    assert env.health() == {v1: "good", v2: "bad"}
    lines = {
        line.split("│")[1].strip(): line
        for line in result.output.splitlines()
        if "│" in line and env.service in line
    }
    assert "100%" in lines[v3]
    assert "stable" in lines[v2] and "bad" in lines[v2]
    assert "good" in lines[v1]
    [mark] = env.actions("health")
    assert mark["actor"].startswith("manual:") and mark["detail"]["reason"] == "broke checkout"
