"""`make dev` (sightops dev) end to end: ready in time, a build message flows to Slack and
shows on the timeline, the golden CI build is migrated, deployed and promoted (the deploy
trigger runs `sightops deploy`), the CLI in a second terminal finds the stack through the
endpoints file, and Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sightops.dev import STANDIN_PORTS
from sightops.topology import FUNCTIONS
from tests.helpers import GOLDEN, ROOT

READY_LIMIT_S = 120
DEV_PORTS = (*STANDIN_PORTS.values(), *(fn.port for fn in FUNCTIONS))


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.3)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_comes_up_shows_the_timeline_and_stops_what_it_started(
    tmp_path: Path, database_url: str
) -> None:
    assert not any(port_open(p) for p in DEV_PORTS), "a previous make dev is still running"
    ready = tmp_path / "ready.json"
    out = (tmp_path / "dev.out").open("w+")
    state = tmp_path / "state"  # logs, spans and the endpoints file; not the repo's .local
    # SIGHTOPS_LOCAL=1: the commands of the "second terminal" may read the endpoints file
    # (tests/conftest.py turns that off for the rest of the suite).
    env = {**os.environ, "COLUMNS": "200", "SIGHTOPS_STATE": str(state), "SIGHTOPS_LOCAL": "1"}
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "sightops.cli", "dev", "--ready-file", str(ready)],
        cwd=ROOT,
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        while not ready.exists():
            assert proc.poll() is None, Path(out.name).read_text()
            assert time.monotonic() - started < READY_LIMIT_S, "not ready in time"
            time.sleep(0.2)
        assert json.loads(ready.read_text())["ready_s"] < READY_LIMIT_S

        # A build id of its own: notify remembers what it sent (Redis), across runs too.
        build_id = publish_build(env, tmp_path, "failure.json")["id"]
        deadline = time.monotonic() + 20
        messages: list[dict[str, object]] = []
        while time.monotonic() < deadline and not messages:
            with urllib.request.urlopen("http://127.0.0.1:8702/_admin/messages") as r:
                messages = json.load(r)["messages"]
            time.sleep(0.2)
        assert messages, "no Slack message reached the sink"
        assert build_id in json.dumps(messages)
        while time.monotonic() < deadline:
            text = Path(out.name).read_text()
            if "notify: handled" in text and "→ cloud-builds build" in text:
                break
            time.sleep(0.2)
        assert "→ cloud-builds build" in text
        assert "notify: handled" in text
        assert (state / "endpoints.json").exists()
        release_flow(env, tmp_path, text_of=lambda: Path(out.name).read_text())
        # The CLI in a second terminal finds the stack through the endpoints file alone.
        rollback_flow(env, text_of=lambda: Path(out.name).read_text())
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert "stopped everything" in Path(out.name).read_text()
    assert not (state / "endpoints.json").exists(), "a stopped stack's endpoints were left"
    assert not any(port_open(p) for p in DEV_PORTS)
    from google.cloud import pubsub_v1

    os.environ.setdefault("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    left = [
        s.name
        for s in pubsub_v1.SubscriberClient().list_subscriptions(project="projects/sight-local")
        if s.name.rsplit("/", 1)[-1].startswith(("timeline--", "notify--"))
        and s.push_config.push_endpoint  # dead-letter holds are pull subscriptions, kept
    ]
    assert left == [], "make dev left subscriptions pushing to stopped functions"


ADMIN = "http://127.0.0.1:8701/_admin"
SERVICE = {"project": "sight-local", "location": "europe-west1", "service": "sight-api"}


def admin(method: str, path: str, body: object = None) -> object:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        ADMIN + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request) as r:
        return json.load(r)


def serving() -> dict[str, int]:
    [service] = [
        s
        for s in admin("GET", "/services")["services"]  # type: ignore[index]
        if s["name"].endswith("/services/sight-api")
    ]
    # Who serves: revisions with a share (a tag keeps its revision listed at 0 %).
    return {
        t["revision"]: t["percent"]
        for t in service["trafficStatuses"]
        if t.get("revision") and t.get("percent")
    }


def cli(env: dict[str, str], *args: str) -> None:
    """A `sightops` command in the "second terminal"."""
    done = subprocess.run(
        [sys.executable, "-m", "sightops.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def wait_for_text(text_of: Callable[[], str], needle: str, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    text = text_of()
    while needle not in text and time.monotonic() < deadline:
        time.sleep(0.2)
        text = text_of()
    return text


def publish_build(env: dict[str, str], tmp_path: Path, golden: str) -> dict[str, Any]:
    """A golden Cloud Build message under a build id of its own, published by the CLI."""
    build = json.loads((GOLDEN / "cloudbuild" / golden).read_text())
    build["data"]["id"] = build["attributes"]["buildId"] = str(uuid.uuid4())
    message_file = tmp_path / golden
    message_file.write_text(json.dumps(build))
    cli(env, "events", "publish", "--file", str(message_file))
    return dict(build["data"])


def release_flow(env: dict[str, str], tmp_path: Path, text_of: Callable[[], str]) -> None:
    """README's try-it: the golden CI build (a build of its own) is migrated, the deploy
    trigger deploys sight-api at its commit and the new revision serves 100 %."""
    build = publish_build(env, tmp_path, "success_triggered.json")
    commit = build["substitutions"]["COMMIT_SHA"]
    text = wait_for_text(text_of, "→ ops-events sight.ops.release.promoted service=sight-api", 60)
    assert "→ ops-events sight.ops.migration.succeeded service=sight-api" in text
    assert "deploy trigger: sightops deploy sight-api started" in text
    assert "→ ops-events sight.ops.release.promoted service=sight-api" in text
    [(revision, percent)] = serving().items()
    assert revision.startswith(f"sight-api-{commit[:8]}-") and percent == 100


def rollback_flow(env: dict[str, str], text_of: Callable[[], str]) -> None:
    """smoke.failed published in the local stack -> traffic restored on the Cloud Run
    stand-in -> rollback.succeeded, and the timeline shows both events."""
    good = admin("POST", "/revisions", {**SERVICE, "image": "sight/api:good", "promote": True})
    bad = admin("POST", "/revisions", {**SERVICE, "image": "sight/api:bad", "promote": True})
    good_name = str(good["name"]).rsplit("/", 1)[1]  # type: ignore[index]
    bad_name = str(bad["name"]).rsplit("/", 1)[1]  # type: ignore[index]
    admin(
        "POST",
        "/traffic",
        {**SERVICE, "traffic": [{"type": "REVISION", "revision": bad_name, "percent": 100}]},
    )
    cli(env, "revisions", "sight-api", "--mark-good", good_name, "--reason", "dev test")
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    payload = {
        "service": "sight-api",
        "region": "europe-west1",
        "revision": bad_name,
        "url": "http://127.0.0.1:8704",
        "started_at": now,
        "finished_at": now,
        "checks": [{"name": "health", "ok": False, "status_code": 500, "error": "boom"}],
    }
    cli(env, "events", "publish", "--type", "sight.ops.smoke.failed", "--data", json.dumps(payload))
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and serving() != {good_name: 100}:
        time.sleep(0.2)
    assert serving() == {good_name: 100}
    text = wait_for_text(text_of, "→ ops-events sight.ops.rollback.succeeded", 30)
    assert "→ smoke-tests sight.ops.smoke.failed service=sight-api" in text
    assert "→ ops-events sight.ops.rollback.succeeded service=sight-api" in text
