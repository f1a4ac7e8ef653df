"""notify's YAML configuration: validated at start-up, with errors that say where."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from shared.errors import ConfigError
from shared.notify import check_environment, load_config, parse_config, parse_duration
from sightops.cli import app
from tests.helpers import GOLDEN, ROOT

DEFAULT_FILE = ROOT / "config" / "notify.yaml"


def test_the_shipped_config_is_valid_and_routes_alerts_and_releases() -> None:
    config = load_config(DEFAULT_FILE)
    assert {r.name for r in config.routes} >= {"alerts", "releases"}
    assert config.grouping.group_by == ("policy_name", "service")


def test_no_file_means_built_in_defaults() -> None:
    assert load_config(None).routes == ()


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"routs": []}, "routs"),
        (
            {"routes": [{"name": "x", "webhook": "https://hooks.slack.com/services/T/B/s3cr3t"}]},
            "must not be written in the config file",
        ),
        ({"routes": [{"name": "x", "webhook": "slack-channel"}]}, "not a webhook reference"),
        ({"grouping": {"group_wait": "soon"}}, "not a duration"),
        ({"grouping": {"group_by": ["alertname"]}}, "unknown group_by label"),
        ({"templates": {"build_title": "{build.__class__}"}}, "plain name"),
        ({"templates": {"alert_title": "{nope}"}}, "unknown field {nope}"),
        ({"filters": {"builds": {"statuses": ["WORKING"]}}}, "only terminal statuses"),
        ({"filters": {"builds": {"triggers": {"trigger_nmes": ["x"]}}}}, "trigger_nmes"),
        ({"routes": [{"name": "a"}, {"name": "a"}]}, "unique"),
        ({"runbooks": [{"policy": "(", "runbook": "alert-memory.md"}]}, "regular expression"),
        ({"routes": [{"name": "x", "match": {"kinds": ["page"]}}]}, "routes[0].match.kinds"),
    ],
)
def test_invalid_configs_fail_with_the_field_and_reason(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=None) as caught:
        parse_config(raw, "notify.yaml")
    assert message in str(caught.value)
    assert str(caught.value).startswith("notify.yaml: ")


def test_a_pasted_webhook_url_is_never_echoed_in_the_error() -> None:
    url = "https://hooks.slack.com/services/T0001/B0001/abcdefSECRET"  # pragma: allowlist secret
    with pytest.raises(ConfigError) as caught:
        parse_config({"default_webhook": url})
    assert "abcdefSECRET" not in str(caught.value)


def test_unreadable_and_non_yaml_files_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)


@pytest.mark.parametrize(
    ("value", "seconds"), [("30s", 30), ("5m", 300), ("4h", 14400), ("250ms", 0.25), (7, 7)]
)
def test_durations_read_like_alertmanagers(value: Any, seconds: float) -> None:
    assert parse_duration(value) == seconds


def test_route_grouping_falls_back_to_the_defaults() -> None:
    config = parse_config(
        {
            "grouping": {"group_wait": "3s"},
            "routes": [{"name": "r", "grouping": {"group_interval": "9s"}}],
        }
    )
    merged = config.routes[0].grouping.merged(config.grouping)
    assert (merged.group_wait, merged.group_interval) == (3.0, 9.0)


runner = CliRunner()


def test_check_config_command_accepts_the_shipped_file() -> None:
    result = runner.invoke(app, ["notify", "check-config", str(DEFAULT_FILE)])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output and "critical-alerts" in result.output


def test_check_config_command_exits_1_with_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "notify.yaml"
    bad.write_text("grouping:\n  group_by: [alertname]\n")
    result = runner.invoke(app, ["notify", "check-config", str(bad)])
    assert result.exit_code == 1
    assert "unknown group_by label" in result.output


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        (GOLDEN / "ops" / "rollback_frozen.json", "Rollback frozen: sight-api"),
        (GOLDEN / "cloudbuild" / "failure.json", "sight-api-ci: FAILURE"),
        (GOLDEN / "monitoring" / "incident_1_2_open.json", "[FIRING:1] sight-api p95 latency"),
    ],
)
def test_preview_renders_an_event_in_the_terminal(path: Path, expected: str) -> None:
    result = runner.invoke(
        app, ["notify", "preview", str(path), "--config", str(DEFAULT_FILE)], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    assert expected in result.output


def test_preview_json_prints_the_slack_payload() -> None:
    path = GOLDEN / "ops" / "smoke_failed.json"
    result = runner.invoke(app, ["notify", "preview", str(path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["blocks"][0]["text"]["text"].startswith("Smoke tests failed")


def test_preview_says_when_nothing_would_be_sent() -> None:
    result = runner.invoke(app, ["notify", "preview", str(GOLDEN / "cloudbuild" / "queued.json")])
    assert result.exit_code == 0 and "sends nothing" in result.output


def test_env_webhook_references_must_be_set_at_start_up() -> None:
    config = parse_config({"routes": [{"name": "r", "webhook": "env:SLACK_ONCALL_URL"}]})
    with pytest.raises(ConfigError, match="SLACK_ONCALL_URL"):
        check_environment(config, {})
    assert check_environment(config, {"SLACK_ONCALL_URL": "set"}) is config
