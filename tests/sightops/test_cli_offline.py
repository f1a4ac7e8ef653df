"""Every `sightops` command with no credentials and no stack: one line that names the fix,
never a traceback (docs/cli.md, "Errors").

The commands are enumerated from the typer app, so a new command fails
``test_every_command_has_an_entry`` until it has a row in ``ARGS``. Each runs as a
subprocess through the installed entry point, in two worlds: production without
Application Default Credentials, and a local shell with every endpoint on a closed port.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import typer

from sightops.cli import app
from tests.helpers import GOLDEN, ROOT

SIGHTOPS = str(Path(sys.executable).parent / "sightops")
PROJECT = "00000000-0000-4000-8000-00000000abcd"
COMMIT = "3f2a9c1e8b7d4f60a5c2e19d7b3f8a0c4e6d2b91"

WORLDS = ("production", "local")
#: ``make proof`` runs every command in both worlds (``CLI_OFFLINE=full``); ``make test``
#: each command in one of them, alternating in sorted order: 60-odd subprocesses, not 120
#: (each pays a Python start and its imports).
FULL = os.environ.get("CLI_OFFLINE", "") == "full"

#: Minimal valid arguments of every command; ``{closed}`` is a URL nothing listens at.
ARGS: dict[str, list[str]] = {
    "rollback": ["rollback", "sight-api", "--dry-run"],
    "revisions": ["revisions", "sight-api"],
    "canary status": ["canary", "status"],
    "canary tick": ["canary", "tick", "sight-api"],
    "canary promote": ["canary", "promote", "sight-api"],
    "canary rollback": ["canary", "rollback", "sight-api"],
    "smoke": ["smoke", "--service", "sight-api", "--revision", "sight-api-00001-abc", "{closed}"],
    "deploy": ["deploy", "--service", "sight-api", "--commit-sha", COMMIT, "--timeout", "5"],
    "prune": ["prune", "--dry-run"],
    "maintain run": ["maintain", "run", "--dry-run"],
    "backup now": ["backup", "now", "--store", "postgres"],
    "backup list": ["backup", "list"],
    "backup restore-test": ["backup", "restore-test", "--store", "postgres"],
    "backup restore": [
        "backup",
        "restore",
        "--to",
        "postgresql://sight@127.0.0.1:1/restored",
        "--yes",
    ],
    "simulate": ["simulate", "green", "--timeout", "5"],
    "report": ["report", "--days", "7"],
    "dev": ["dev", "--help"],  # running it starts the services: not a command to try here
    "status": ["status"],
    "events publish": ["events", "publish", "--file", str(GOLDEN / "ops" / "smoke_failed.json")],
    "pubsub setup": ["pubsub", "setup"],
    "migrations lint": ["migrations", "lint"],
    "migrations status": ["migrations", "status"],
    "migrations resolve-partial": ["migrations", "resolve-partial", "0001", "--note", "undone"],
    "notify check-config": ["notify", "check-config", str(ROOT / "config" / "notify.yaml")],
    "notify preview": ["notify", "preview", str(GOLDEN / "cloudbuild" / "failure.json")],
    "notify flush": ["notify", "flush"],
    "kpi get": ["kpi", "get", PROJECT],
    "kpi inspect": ["kpi", "inspect", PROJECT],
    "kpi refresh": ["kpi", "refresh", PROJECT],
    "dlq list": ["dlq", "list"],
    "dlq show": ["dlq", "show", "r-1"],
    "dlq replay": ["dlq", "replay", "r-1"],
    "settings env-example": ["settings", "env-example"],
}

#: Commands that answer offline (exit codes they may end with): they need no stack, or
#: report the stack's absence as their answer (a smoke check that fails, exit 1).
ANSWERS: dict[str, set[int]] = {
    "dev": {0},
    "migrations lint": {0, 1},  # 1: a blocking finding in the tree's migrations
    "notify check-config": {0},
    "notify preview": {0},
    "smoke": {1},
    "notify flush": {0},  # Redis and the database down: nothing due, alerts go ungrouped
    "settings env-example": {0},  # printed from the Settings class alone
}

#: Commands whose module handles the outage itself in a line that does not name the fix
#: (in the worlds listed); the root group would (sightops/_errors.py). Drop their
#: handlers, then these entries: the xfails are strict.
OWN_HANDLER: dict[str, tuple[str, tuple[str, ...]]] = {}

FIX = re.compile(
    r"gcloud auth application-default login|make dev|make services-up|check the network"
)


def _pairs() -> list[tuple[str, str]]:
    commands = sorted(ARGS)
    if FULL:
        return [(w, c) for w in WORLDS for c in commands]
    return [(WORLDS[i % len(WORLDS)], c) for i, c in enumerate(commands)]


#: (world, command) run by this session.
PAIRS = _pairs()


def all_commands() -> list[str]:
    """Every leaf command of the app, as its words ("events publish")."""

    def walk(command: Any, path: tuple[str, ...]) -> Iterator[str]:
        children = getattr(command, "commands", None)
        if children is None:
            yield " ".join(path)
            return
        for name, child in children.items():
            yield from walk(child, (*path, name))

    return sorted(walk(typer.main.get_command(app), ()))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def world(tmp: Path, name: str) -> dict[str, str]:
    """No credentials, no gcloud configuration, no endpoints file; stores on closed ports."""
    home = tmp / name
    home.mkdir()
    port = closed_port()
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "SIGHTOPS_STATE": str(home / "state"),
        "COLUMNS": "200",
        "DATABASE_URL": f"postgresql+asyncpg://sight:pw@127.0.0.1:{port}/sight",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "NEO4J_URI": f"bolt://127.0.0.1:{port}",
    }
    if name == "production":
        return {**env, "ENVIRONMENT": "production", "GCP_PROJECT": "sight-prod"}
    closed = f"http://127.0.0.1:{port}"
    return {
        **env,
        "PUBSUB_EMULATOR_HOST": f"127.0.0.1:{port}",
        "CLOUD_RUN_ENDPOINT": closed,
        "SECRET_MANAGER_ENDPOINT": closed,
        "SLACK_WEBHOOK_URL": f"{closed}/services/T0/B0/x",
        "ROLLBACK__SMOKE_URL": closed,
    }


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Any]:
    """Every command in every world, run at once (most of the time is waiting)."""
    tmp = tmp_path_factory.mktemp("offline")
    envs = {name: world(tmp, name) for name in WORLDS}

    def run(key: tuple[str, str]) -> subprocess.CompletedProcess[str]:
        name, command = key
        closed = f"http://127.0.0.1:{closed_port()}"
        args = [a.replace("{closed}", closed) for a in ARGS[command]]
        return subprocess.run(
            [SIGHTOPS, *args],
            env=envs[name],
            cwd=tmp,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    keys = [(name, command) for name, command in PAIRS]
    with ThreadPoolExecutor(max_workers=8) as pool:
        return dict(zip(keys, pool.map(run, keys), strict=True))


def test_every_command_has_an_entry() -> None:
    assert all_commands() == sorted(ARGS), "add the new command to ARGS (minimal valid args)"


CASES = [pytest.param(w, c, id=f"{w}:{c}") for w, c in PAIRS]


@pytest.mark.parametrize(("world_name", "command"), CASES)
def test_command_ends_without_a_traceback_in_at_most_three_lines(
    runs: dict[tuple[str, str], Any], world_name: str, command: str
) -> None:
    result = runs[(world_name, command)]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-2000:]
    assert len(result.stderr.strip().splitlines()) <= 3, result.stderr
    if command in ANSWERS:
        assert result.returncode in ANSWERS[command], result.stderr


@pytest.mark.parametrize(
    ("world_name", "command"),
    [
        pytest.param(
            w,
            c,
            id=f"{w}:{c}",
            marks=[pytest.mark.xfail(strict=True, reason=OWN_HANDLER[c][0])]
            if w in OWN_HANDLER.get(c, ("", ()))[1]
            else [],
        )
        for w, c in PAIRS
        if c not in ANSWERS
    ],
)
def test_a_command_that_cannot_run_names_the_fix(
    runs: dict[tuple[str, str], Any], world_name: str, command: str
) -> None:
    result = runs[(world_name, command)]
    assert result.returncode != 0
    [line] = result.stderr.strip().splitlines()[-1:] or [""]
    assert line.startswith("error: "), result.stderr
    assert FIX.search(line), line
