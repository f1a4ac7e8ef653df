"""The deploy pipeline's scripts, run in real bash with the values an attacker would choose.

``cloudbuild-deploy.yaml`` runs as the deploy account with values taken from an
``ops-events`` message. Cloud Build pastes a substitution into the text it appears in, so
these tests render the file exactly that way (``${_X}``/``$_X`` and built-ins replaced
textually, ``$$`` -> ``$``, one pass) and run every step's script in bash. External CLIs
(``gcloud``, ``sightops``, ``pip``, ``python -m venv``) are stubs first on ``PATH`` that
log their arguments and the ``DEPLOY_*`` environment they were given; ``python3`` is the
real interpreter; ``/workspace`` is a temporary directory (docs/deploy.md, "The release
pipeline"). What ``sightops deploy`` does with the values is tests/sightops/test_deploy.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.events import BUILD_ID_RE, COMMIT_SHA_RE, SERVICE_NAME_RE
from tests.infra.hcl import ROOT

DEPLOY = ROOT / "cloudbuild-deploy.yaml"
CI = ROOT / "cloudbuild.yaml"

#: Cloud Build's built-in substitutions (only these and user ``_X`` ones are replaced).
BUILT_INS = (
    "PROJECT_ID",
    "PROJECT_NUMBER",
    "BUILD_ID",
    "LOCATION",
    "TRIGGER_NAME",
    "COMMIT_SHA",
    "REVISION_ID",
    "SHORT_SHA",
    "REPO_NAME",
    "REPO_FULL_NAME",
    "BRANCH_NAME",
    "TAG_NAME",
    "REF_NAME",
    "TRIGGER_BUILD_CONFIG_PATH",
    "SERVICE_ACCOUNT_EMAIL",
    "SERVICE_ACCOUNT",
)
_TOKEN = re.compile(r"\$\$|\$\{(?P<braced>[A-Z_][A-Z0-9_]*)\}|\$(?P<bare>[A-Z_][A-Z0-9_]*)")

#: What the deploy trigger binds from the event (terraform/cloudbuild.tf), all hostile.
EVENT_BOUND = (
    "_SERVICE",
    "_COMMIT_SHA",
    "_BUILD_ID",
    "_EVENT_ID",
    "_EVENT_TYPE",
    "_TAG",
    "_TRACEPARENT",
)
VALID = {
    "_EVENT_TYPE": "sight.ops.migration.succeeded",
    "_EVENT_ID": "7f0c2a4e-1b3d-4c5e-8f90-a1b2c3d4e5f6",
    "_SERVICE": "sight-api",
    "_COMMIT_SHA": "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91",  # pragma: allowlist secret
    "_BUILD_ID": "0b6f2c3e-7d41-4a8e-9c55-2e81f4d7a6b3",
    "_REGION": "europe-west1",
    "_IMAGE_REPO": "europe-west1-docker.pkg.dev/sight-prod/sight",
    "_TRACEPARENT": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
}
PROJECT_ID = "sight-prod"
#: Substitution -> the environment variable `sightops deploy` reads it from.
DEPLOY_ENV = {
    "_EVENT_TYPE": "DEPLOY_EVENT_TYPE",
    "_EVENT_ID": "DEPLOY_EVENT_ID",
    "_SERVICE": "DEPLOY_SERVICE",
    "_COMMIT_SHA": "DEPLOY_COMMIT_SHA",
    "_BUILD_ID": "DEPLOY_BUILD_ID",
    "_REGION": "DEPLOY_REGION",
    "_IMAGE_REPO": "DEPLOY_IMAGE_REPO",
    "_TAG": "DEPLOY_TAG",
    "_TRACEPARENT": "DEPLOY_TRACEPARENT",
}


def _is_reference(name: str) -> bool:
    return name.startswith("_") or name in BUILT_INS


def render(text: str, substitutions: dict[str, str]) -> str:
    """What Cloud Build makes of ``text``: references replaced in one pass, ``$$`` -> ``$``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if name is None:
            return "$"
        if _is_reference(name) and name in substitutions:
            return substitutions[name]
        return match.group(0)

    return _TOKEN.sub(replace, text)


def references(text: str) -> list[str]:
    """The substitutions Cloud Build would paste into ``text``."""
    found = []
    for match in _TOKEN.finditer(text):
        name = match.group("braced") or match.group("bare")
        if name is not None and _is_reference(name):
            found.append(name)
    return found


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def substitutions_for(config: dict[str, Any], given: dict[str, str]) -> dict[str, str]:
    """The YAML's defaults (dynamic ones rendered), overridden by the trigger's values."""
    values = {"PROJECT_ID": PROJECT_ID, "BUILD_ID": "9d8e7f60-0000-4000-8000-000000000001"}
    for key, default in config["substitutions"].items():
        values[key] = render(str(default), values)
    values.update(given)
    return values


# --- stubs ------------------------------------------------------------------------------

_LOGGING_STUB = """#!{python}
import json, os, sys
env = {{k: v for k, v in os.environ.items() if k.startswith("DEPLOY_")}}
with open(os.path.join({state!r}, "calls.jsonl"), "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), *sys.argv[1:], env]) + "\\n")
{body}
"""

_GCLOUD = """
"""

_PYTHON = """
if sys.argv[1:3] == ["-m", "venv"]:
    bin_dir = os.path.join(sys.argv[3], "bin")
    os.makedirs(bin_dir, exist_ok=True)
    for name in ("pip", "sightops"):
        path = os.path.join(bin_dir, name)
        with open(path, "w") as stub:
            stub.write(open(__file__).read().split("# --- body", 1)[0] + "# --- body\\n")
        os.chmod(path, 0o755)
"""


def _stub(path: Path, state: Path, body: str) -> None:
    text = _LOGGING_STUB.format(python=sys.executable, state=str(state), body="# --- body\n" + body)
    path.write_text(text)
    path.chmod(0o755)


class Pipeline:
    """A fake Cloud Build worker: a workspace, stubs on PATH, and the rendered steps."""

    def __init__(self, tmp: Path, config: dict[str, Any]) -> None:
        self.config = config
        self.workspace = tmp / "workspace"
        self.state = tmp / "state"
        bin_dir = tmp / "bin"
        for d in (self.workspace, self.state, bin_dir):
            d.mkdir()
        _stub(bin_dir / "gcloud", self.state, _GCLOUD)
        _stub(bin_dir / "python", self.state, _PYTHON)
        (bin_dir / "python3").symlink_to(sys.executable)
        self.path = f"{bin_dir}{os.pathsep}/usr/bin{os.pathsep}/bin"

    def run(self, step: dict[str, Any], values: dict[str, str]) -> subprocess.CompletedProcess[str]:
        """One step as Cloud Build runs it: entrypoint, rendered args, rendered env."""
        env = {"PATH": self.path, "HOME": str(self.workspace)}
        for entry in [*self.config["options"].get("env", []), *step.get("env", [])]:
            key, _, value = render(entry, values).partition("=")
            env[key] = value
        for name in step.get("secretEnv", []):
            env[name] = "not-a-real-secret"
        args = [render(a, values).replace("/workspace", str(self.workspace)) for a in step["args"]]
        return subprocess.run(
            [step["entrypoint"], *args],
            env=env,
            cwd=self.workspace,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    def logged(self) -> list[tuple[list[str], dict[str, str]]]:
        """Every stub call: (argv with the program's name first, its DEPLOY_* env)."""
        log = self.state / "calls.jsonl"
        if not log.exists():
            return []
        return [(entry[:-1], entry[-1]) for entry in map(json.loads, log.read_text().splitlines())]

    def calls(self) -> list[list[str]]:
        return [argv for argv, _ in self.logged()]

    def deploy_env(self) -> dict[str, str]:
        """The environment ``sightops deploy`` was started with (exactly one call)."""
        [env] = [env for argv, env in self.logged() if argv[:2] == ["sightops", "deploy"]]
        return env


def run_deploy(tmp: Path, given: dict[str, str]) -> tuple[Pipeline, dict[str, int]]:
    """Every step in order, each one even when an earlier one failed (Cloud Build would
    stop; running them all shows that no step's script executes a value)."""
    config = load(DEPLOY)
    pipeline = Pipeline(tmp, config)
    values = substitutions_for(config, given)
    codes = {step["id"]: pipeline.run(step, values).returncode for step in config["steps"]}
    return pipeline, codes


# --- the tests ----------------------------------------------------------------------------

HOSTILE = {
    "double quote": 'x"; touch {m}/double-quote; echo "',
    "single quote": "x'; touch {m}/single-quote; echo '",
    "command substitution": "$(touch {m}/command-substitution)",
    "backticks": "`touch {m}/backticks`",
    "newline": "x\ntouch {m}/newline\n",
    "python f-string": "{{open('{m}/python', 'w')}}",
    "python string": "\"; open('{m}/python-string', 'w'); \"",
    "option": "--tag=$(touch {m}/option)",
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_no_deploy_step_runs_a_command_hidden_in_an_event_value(kind: str, tmp_path: Path) -> None:
    markers = tmp_path / "markers"
    markers.mkdir()
    hostile = HOSTILE[kind].format(m=markers)
    given = {**VALID, **dict.fromkeys(EVENT_BOUND, hostile)}

    pipeline, codes = run_deploy(tmp_path, given)

    assert list(markers.iterdir()) == [], f"an injected command ran ({kind})"
    assert codes["check-event"] != 0, "the first step must refuse a hostile value"
    # The later steps ran to the end with the value as plain data: `sightops deploy` got it
    # verbatim in its environment (and refuses it itself: tests/sightops/test_deploy.py),
    # never on its command line.
    assert all(code == 0 for step, code in codes.items() if step != "check-event"), codes
    assert ["sightops", "deploy"] in pipeline.calls()
    env = pipeline.deploy_env()
    for name in EVENT_BOUND:
        assert env[DEPLOY_ENV[name]] == hostile, name


WRONG_SHAPES = [
    ("_EVENT_TYPE", "sight.ops.migration.failed"),
    ("_EVENT_ID", ""),
    ("_EVENT_ID", "not-a-uuid"),
    ("_SERVICE", ""),
    ("_SERVICE", "Sight_API"),
    ("_SERVICE", "-sight-api"),
    ("_SERVICE", "sight-api-" + "x" * 60),
    ("_COMMIT_SHA", ""),
    ("_COMMIT_SHA", "3f2a9c1"),
    ("_COMMIT_SHA", "3F2A9C1E8B7D4F60A5C2E19D7B3F8A0C4E6D2B91"),  # pragma: allowlist secret
    ("_BUILD_ID", ""),
    ("_BUILD_ID", "b/1"),
    ("_BUILD_ID", "-b1"),
    ("_TAG", "Candidate"),
    ("_REGION", "europe west1"),
    ("_TRACEPARENT", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7"),
    ("_TRACEPARENT", "00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"),
    ("_TRACEPARENT", "x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
]


@pytest.mark.parametrize(("name", "value"), WRONG_SHAPES)
def test_check_event_refuses_a_value_of_the_wrong_shape(
    name: str, value: str, tmp_path: Path
) -> None:
    config = load(DEPLOY)
    pipeline = Pipeline(tmp_path, config)
    step = config["steps"][0]
    assert step["id"] == "check-event"
    assert pipeline.run(step, substitutions_for(config, VALID)).returncode == 0
    result = pipeline.run(step, substitutions_for(config, {**VALID, name: value}))
    assert result.returncode != 0
    assert "not deploying" in result.stderr


def test_check_event_accepts_an_event_without_trace_context(tmp_path: Path) -> None:
    """A message without a ``traceparent`` attribute binds an empty ``_TRACEPARENT``: the
    deploy then opens a root span in the release's trace (docs/release.md)."""
    pipeline, codes = run_deploy(tmp_path, {**VALID, "_TRACEPARENT": ""})
    assert codes == dict.fromkeys(codes, 0)
    assert pipeline.deploy_env()["DEPLOY_TRACEPARENT"] == ""


def test_check_event_refuses_a_trailing_newline_after_a_valid_commit(tmp_path: Path) -> None:
    config = load(DEPLOY)
    pipeline = Pipeline(tmp_path, config)
    values = substitutions_for(config, {**VALID, "_COMMIT_SHA": VALID["_COMMIT_SHA"] + "\n"})
    assert pipeline.run(config["steps"][0], values).returncode != 0


def test_valid_values_reach_sightops_deploy_through_its_environment_only(
    tmp_path: Path,
) -> None:
    pipeline, codes = run_deploy(tmp_path, VALID)
    assert codes == dict.fromkeys(codes, 0)
    assert [c[:2] for c in pipeline.calls() if c[0] == "sightops"] == [["sightops", "deploy"]]
    deploy_call = next(c for c in pipeline.calls() if c[0] == "sightops")
    assert deploy_call == ["sightops", "deploy"], "values never travel on the command line"
    env = pipeline.deploy_env()
    assert {name: env[variable] for name, variable in DEPLOY_ENV.items()} == {
        **VALID,
        "_TAG": "candidate",
    }
    assert env["DEPLOY_PROJECT"] == PROJECT_ID
    assert "gcloud" not in {c[0] for c in pipeline.calls()}, "the deploy is sightops' alone"


@pytest.mark.parametrize("path", [DEPLOY, CI], ids=lambda p: p.name)
def test_no_step_script_contains_a_substitution(path: Path) -> None:
    """Values reach scripts through ``env:`` only; a reference in ``args`` would be pasted
    into the script text and run as code."""
    for step in load(path)["steps"]:
        for arg in step.get("args", []):
            assert references(arg) == [], f"{path.name} step {step['id']}: {references(arg)}"


def test_check_event_uses_the_patterns_migrate_checks() -> None:
    """The deploy refuses exactly what migrate never publishes (shared/events)."""
    script = load(DEPLOY)["steps"][0]["args"][-1]
    for pattern in (SERVICE_NAME_RE, COMMIT_SHA_RE, BUILD_ID_RE):
        assert f"'^{pattern.pattern}$$'" in script
    trigger = (ROOT / "terraform" / "cloudbuild.tf").read_text()
    for pattern in (SERVICE_NAME_RE, COMMIT_SHA_RE, BUILD_ID_RE):
        assert f"('^{pattern.pattern}$')" in trigger
