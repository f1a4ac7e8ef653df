""".env.example is generated from Settings and never drifts (sightops/envexample.py).

Regenerate after adding or changing a setting: `.venv/bin/sightops settings env-example
--write` (README, "Configuration").
"""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr
from typer.testing import CliRunner

from shared.settings import Settings
from sightops.cli import app
from sightops.envexample import (
    ENV_EXAMPLE,
    SECRET,
    Setting,
    drift,
    entries,
    field_purposes,
    render,
    undocumented,
)

REGENERATE = "run `.venv/bin/sightops settings env-example --write` and commit .env.example"


def test_env_example_is_the_one_generated_from_the_current_settings() -> None:
    changes = drift(ENV_EXAMPLE.read_text(encoding="utf-8"))
    assert changes == [], f".env.example is out of date ({', '.join(changes)}): {REGENERATE}"


class Extended(Settings):
    """Settings as a helper leaves them: one setting more, in a section of its own."""

    # How many widgets a test adds.
    new_knob: int = 3


def test_a_setting_added_without_regenerating_is_caught_by_name() -> None:
    current = ENV_EXAMPLE.read_text(encoding="utf-8")
    assert drift(current, Extended) == ["+NEW_KNOB"]
    assert "# How many widgets a test adds.\n# NEW_KNOB=3\n" in render(Extended)


def test_every_setting_says_what_it_is_for() -> None:
    missing = undocumented()
    assert missing == [], (
        f"settings without a purpose: {missing}; add a comment above the field in"
        f" shared/settings.py (or description=), then {REGENERATE}"
    )


def test_secrets_are_placeholders_never_their_values() -> None:
    text = render()
    secrets = [e for e in entries() if isinstance(e, Setting) and e.secret]
    names = {e.env for e in secrets}
    assert {"DATABASE_URL", "NEO4J_PASSWORD", "REDIS_URL", "SLACK_WEBHOOK_URL"} <= names
    assert all(e.value == SECRET for e in secrets)
    for value in _secret_defaults(Settings()):
        assert value not in text


def _secret_defaults(model: BaseModel) -> list[str]:
    found = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, SecretStr) and value.get_secret_value():
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            found += _secret_defaults(value)
    return found


def test_every_name_and_value_is_one_settings_reads_as_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Uncommenting every line (secrets and unset ones aside) changes nothing: the names
    are the ones pydantic-settings reads and the values parse back to the defaults."""
    lines = [e for e in entries() if isinstance(e, Setting) and e.value and not e.secret]
    assert len(lines) > 100
    for entry in lines:  # what the test's own environment may set (LOG_LEVEL, ...)
        monkeypatch.delenv(entry.env, raising=False)
    baseline = Settings().model_dump()
    for entry in lines:
        [value] = shlex.split(entry.value)  # the shell's reading of the quoted JSON
        monkeypatch.setenv(entry.env, value)
    assert Settings().model_dump() == baseline
    # ... and a changed value is read from those names.
    monkeypatch.setenv("NOTIFY__MAX_EVENT_AGE_S", "60")
    monkeypatch.setenv("MIGRATE__SELECTOR", '{"trigger_ids": ["ci-trigger"]}')
    changed = Settings()
    assert changed.notify.max_event_age_s == 60
    assert changed.migrate.selector.trigger_ids == {"ci-trigger"}


def test_purposes_come_from_descriptions_then_comments() -> None:
    from pydantic import Field

    class Knobs(BaseModel):
        # A group comment...
        first: int = 1
        second: int = 2  # ...with its own trailing comment
        third: int = 3

        fourth: int = Field(default=4, description="Said by description.")  # not this
        fifth: int = 5

    assert field_purposes(Knobs) == {
        "first": "A group comment...",
        "second": "...with its own trailing comment",
        "third": "A group comment...",
        "fourth": "Said by description.",
    }


def test_the_command_checks_writes_and_prints(tmp_path: Path) -> None:
    stale = tmp_path / ".env.example"
    stale.write_text(render().replace("# KPI__WAIT_S=8.0\n", ""), encoding="utf-8")
    runner = CliRunner()
    checked = runner.invoke(app, ["settings", "env-example", "--check", "--file", str(stale)])
    assert checked.exit_code == 1
    assert "+KPI__WAIT_S" in checked.output and "--write" in checked.output

    written = runner.invoke(app, ["settings", "env-example", "--write", "--file", str(stale)])
    assert written.exit_code == 0, written.output
    assert stale.read_text(encoding="utf-8") == render()
    again = runner.invoke(app, ["settings", "env-example", "--check", "--file", str(stale)])
    assert again.exit_code == 0, again.output

    printed = runner.invoke(app, ["settings", "env-example"])
    assert printed.stdout == render()
