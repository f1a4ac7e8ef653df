"""The CLI next to `make dev`: the stack's endpoints file, read by every command (docs/cli.md)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from sightops.endpoints import load_endpoints, remove_endpoints, write_endpoints
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from tests.helpers import ROOT

SIGHTOPS = [str(Path(sys.executable).parent / "sightops")]  # the installed entry point


def exited_pid() -> int:
    """The id of a process that has already exited."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def bare_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """No credentials, no gcloud configuration, nothing of this shell's settings."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    return {
        "PATH": os.environ["PATH"],
        "HOME": str(home),
        "CLOUDSDK_CONFIG": str(home / "gcloud"),
        "SIGHTOPS_STATE": str(tmp_path / "state"),
        "PYTHONPATH": str(ROOT),
        "COLUMNS": "200",
        **extra,
    }


def test_the_file_keeps_only_settings_readable_by_its_owner(tmp_path: Path) -> None:
    env = {
        "PATH": "/usr/bin",
        "HOME": "/home/someone",
        "GITHUB_TOKEN": "ghp_not_ours",
        "ENVIRONMENT": "local",
        "LOG_LEVEL": "DEBUG",
        "DATABASE_URL": "postgresql+asyncpg://sight:sight-local@127.0.0.1:54329/sight",
        "CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8701",
        "ROLLBACK__SMOKE_URL": "http://127.0.0.1:8704",
        "DATABASE_URL_SYNC": "postgresql+pg8000://sight:x@127.0.0.1:54329/sight",
    }
    path = write_endpoints(env, tmp_path, pid=4242)
    document = json.loads(path.read_text())
    assert path == tmp_path / "endpoints.json"
    assert document["pid"] == 4242
    assert document["written_at"]
    assert set(document["env"]) == {
        "DATABASE_URL",
        "CLOUD_RUN_ENDPOINT",
        "ROLLBACK__SMOKE_URL",
        "DATABASE_URL_SYNC",
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_the_environment_gives_win_over_the_file(tmp_path: Path) -> None:
    write_endpoints(
        {"CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8701", "GCP_PROJECT": "sight-local"}, tmp_path
    )
    environ = {"GCP_PROJECT": "mine"}
    loaded = load_endpoints(environ, tmp_path)
    assert environ == {"GCP_PROJECT": "mine", "CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8701"}
    assert loaded.applied == ("CLOUD_RUN_ENDPOINT",)
    assert loaded.kept == ("GCP_PROJECT",)


def test_a_file_left_by_a_stack_that_has_exited_is_ignored(tmp_path: Path) -> None:
    write_endpoints({"CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8701"}, tmp_path, pid=exited_pid())
    environ: dict[str, str] = {}
    loaded = load_endpoints(environ, tmp_path)
    assert environ == {}
    assert loaded.skipped is not None and "stale" in loaded.skipped


@pytest.mark.parametrize(
    ("environ", "local"),
    [
        ({"ENVIRONMENT": "production"}, True),
        ({"ENVIRONMENT": "PRODUCTION"}, True),
        ({"SIGHTOPS_LOCAL": "0"}, True),
        ({}, False),
    ],
    ids=["production", "production-any-case", "SIGHTOPS_LOCAL=0", "--no-local"],
)
def test_production_and_an_explicit_opt_out_never_read_the_file(
    tmp_path: Path, environ: dict[str, str], local: bool
) -> None:
    write_endpoints({"CLOUD_RUN_ENDPOINT": "http://127.0.0.1:8701"}, tmp_path)
    before = dict(environ)
    loaded = load_endpoints(environ, tmp_path, local=local)
    assert environ == before
    assert loaded.skipped


def test_a_file_cannot_set_what_is_not_a_setting(tmp_path: Path) -> None:
    (tmp_path / "endpoints.json").write_text(
        json.dumps({"pid": os.getpid(), "env": {"PATH": "/evil", "ENVIRONMENT": "production"}})
    )
    environ: dict[str, str] = {}
    load_endpoints(environ, tmp_path)
    assert environ == {}


def test_a_stack_removes_only_its_own_file(tmp_path: Path) -> None:
    write_endpoints({}, tmp_path, pid=1)
    remove_endpoints(tmp_path, pid=2)
    assert (tmp_path / "endpoints.json").exists()
    remove_endpoints(tmp_path, pid=1)
    assert not (tmp_path / "endpoints.json").exists()


@pytest.fixture
def cloud_run() -> Iterator[RunningServer]:
    """The Cloud Run stand-in `make dev` would run, with sight-api deployed."""
    state = cloudrun_standin.CloudRunState(seed=5)
    state.create_service(
        "sight-local",
        "europe-west1",
        "sight-api",
        "europe-west1-docker.pkg.dev/sight-local/sight/sight-api:1a2b3c4",
        revision="sight-api-00001-dev",
    )
    with serve(cloudrun_standin.create_app(state)) as server:
        yield server


def test_revisions_in_a_second_terminal_finds_the_stack_through_the_file(
    tmp_path: Path, database_url: str, cloud_run: RunningServer
) -> None:
    # As `make dev` writes it, for as long as this process (the "stack") lives.
    write_endpoints(
        {
            "CLOUD_RUN_ENDPOINT": cloud_run.url,
            "GCP_PROJECT": "sight-local",
            "DATABASE_URL": database_url,
        },
        tmp_path / "state",
    )
    result = subprocess.run(
        [*SIGHTOPS, "revisions", "sight-api"],
        env=bare_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "sight-api-00001-dev" in result.stdout
    assert "100%" in result.stdout


def test_without_the_file_the_same_command_says_how_to_get_credentials(
    tmp_path: Path, database_url: str, cloud_run: RunningServer
) -> None:
    write_endpoints({"CLOUD_RUN_ENDPOINT": cloud_run.url}, tmp_path / "state")
    result = subprocess.run(
        [*SIGHTOPS, "--no-local", "revisions", "sight-api"],
        env=bare_env(tmp_path, DATABASE_URL=database_url),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert result.stderr.strip() == (
        "error: no Google credentials for the Cloud Run Admin API: run `gcloud auth"
        " application-default login`, or start `make dev` for the local stack"
    )
