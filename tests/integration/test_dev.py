"""`make dev` (sightops dev) end to end: ready in time, a build message flows to Slack and
shows on the timeline, and Ctrl-C stops every process it started."""

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
from pathlib import Path

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
    env = {**os.environ, "COLUMNS": "200"}
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
        build = json.loads((GOLDEN / "cloudbuild" / "failure.json").read_text())
        build_id = str(uuid.uuid4())
        build["data"]["id"] = build["attributes"]["buildId"] = build_id
        message_file = tmp_path / "build.json"
        message_file.write_text(json.dumps(build))
        subprocess.run(
            [
                sys.executable,
                "-m",
                "sightops.cli",
                "events",
                "publish",
                "--file",
                str(message_file),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
        )
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
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert proc.returncode == 0
    assert "stopped everything" in Path(out.name).read_text()
    assert not any(port_open(p) for p in DEV_PORTS)
    from google.cloud import pubsub_v1

    os.environ.setdefault("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
    left = [
        s.name
        for s in pubsub_v1.SubscriberClient().list_subscriptions(project="projects/sight-local")
        if s.name.rsplit("/", 1)[-1].startswith(("timeline--", "notify--"))
    ]
    assert left == [], "make dev left subscriptions pushing to stopped functions"
