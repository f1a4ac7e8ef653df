"""The alert storm, fed in one run to Prometheus Alertmanager and to notify.

Storm: 1,000 incidents over 20 policies opened within 8 s, then every incident of 15
policies closed within 2 s (1,750 notifications). Both systems group by policy and
service with group_wait 1 s, group_interval 2 s, repeat_interval 1 h, and both end in
the same Slack sink (standins/slack.py), on different webhook paths:

- Alertmanager 0.25 (Debian ``prometheus-alertmanager``; installed here with apt-get if
  missing) on a local port; each incident is POSTed to /api/v2/alerts as one alert
  (``endsAt`` on close); its webhook receiver posts to a tiny translator that records
  the payload and posts a Slack message into the sink;
- notify, in-process through functions-framework with real PostgreSQL and Redis, each
  incident pushed as a Pub/Sub push body, 503s redelivered after a backoff as Pub/Sub
  would.

Reported side by side: Slack messages, time to first notification, resolved messages
delivered (and closed groups that got one), and time until the last message. Needs the
local services (make services-up). Prints; never asserts.
"""

from __future__ import annotations

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from flask import Flask, Response, request

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.runtime import Deps, set_process_deps  # noqa: E402
from shared.settings import NotifyConfig, Settings  # noqa: E402
from standins import serve  # noqa: E402
from standins import slack as slack_standin  # noqa: E402
from tests.helpers import GOLDEN, envelope  # noqa: E402

POLICIES, PER_POLICY, CLOSED = 20, 50, 15
OPEN_S, CLOSE_S = 8.0, 2.0
GROUP_WAIT, GROUP_INTERVAL, REPEAT = 1.0, 2.0, 3600.0
WORKERS = 32
SETTLE_S = 12.0  # after the storm: time for the last group_interval ticks
AM_PATH = "/services/TBENCH/BALERTMANAGER/alertmanagerbench"
NOTIFY_PATH = "/services/TBENCH/BNOTIFY/notifybench"

Incident = tuple[int, str, bool]  # policy index, incident id, closing?


def storm(tag: str) -> list[tuple[float, Incident]]:
    """(send at, incident) for the whole storm, the same for both systems."""
    ids = {p: [f"0.{tag}p{p:02d}i{n:02d}" for n in range(PER_POLICY)] for p in range(POLICIES)}
    opens = [(p, i, False) for p in range(POLICIES) for i in ids[p]]
    closes = [(p, i, True) for p in range(CLOSED) for i in ids[p]]
    random.Random(5).shuffle(opens)
    random.Random(6).shuffle(closes)
    plan = [(n * OPEN_S / len(opens), x) for n, x in enumerate(opens)]
    plan += [(OPEN_S + n * CLOSE_S / len(closes), x) for n, x in enumerate(closes)]
    return plan


def run_storm(plan: list[tuple[float, Incident]], send: Callable[[Incident], None]) -> float:
    """Send on schedule from a thread pool; returns the start (monotonic)."""
    started = time.monotonic()
    with ThreadPoolExecutor(WORKERS) as pool:
        futures = []
        for at, incident in plan:
            delay = at - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
            futures.append(pool.submit(send, incident))
        wait(futures, timeout=120)
        for future in futures:
            future.result()
    return started


# ---- Alertmanager --------------------------------------------------------------------


def alertmanager_binary() -> str:
    found = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
    if found:
        return found
    print("installing prometheus-alertmanager (Debian) ...", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "prometheus-alertmanager"], check=True, env=env
    )
    return shutil.which("prometheus-alertmanager") or "prometheus-alertmanager"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def translator(sink_url: str, received: list[tuple[float, dict[str, Any]]]) -> Flask:
    """Alertmanager webhook -> recorded, and posted to the sink as a Slack message."""
    app = Flask("am-translator")
    client = httpx.Client(timeout=5)

    @app.post("/alertmanager")
    def hook() -> Response:
        body = request.get_json(force=True)
        received.append((time.monotonic(), body))
        labels = body.get("commonLabels", {})
        firing = [a for a in body["alerts"] if a["status"] == "firing"]
        title = (
            "[RESOLVED]" if body["status"] == "resolved" else f"[FIRING:{len(firing)}]"
        ) + f" {labels.get('alertname', '?')}"
        lines = [f"{a['status']} {a['labels'].get('incident_id')}" for a in body["alerts"]]
        text = title + "\n" + "\n".join(lines)
        answer = client.post(sink_url + AM_PATH, json={"text": text[:35000]})
        return Response(answer.text, status=answer.status_code)

    return app


def bench_alertmanager(tag: str, sink: slack_standin.SlackState, sink_url: str) -> dict[str, Any]:
    binary = alertmanager_binary()
    received: list[tuple[float, dict[str, Any]]] = []
    with serve(translator(sink_url, received)) as hook, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "alertmanager.yml"
        config.write_text(
            json.dumps(
                {
                    "route": {
                        "receiver": "sink",
                        "group_by": ["alertname", "service"],
                        "group_wait": f"{int(GROUP_WAIT * 1000)}ms",
                        "group_interval": f"{int(GROUP_INTERVAL * 1000)}ms",
                        "repeat_interval": f"{int(REPEAT)}s",
                    },
                    "receivers": [
                        {
                            "name": "sink",
                            "webhook_configs": [
                                {"url": f"{hook.url}/alertmanager", "send_resolved": True}
                            ],
                        }
                    ],
                }
            )
        )
        port = free_port()
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.path={tmp}/data",
                f"--web.listen-address=127.0.0.1:{port}",
                "--cluster.listen-address=",  # a single instance: no gossip to wait for
                "--log.level=warn",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        api = f"http://127.0.0.1:{port}/api/v2"
        try:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/-/ready", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.2)
            client = httpx.Client(timeout=10, limits=httpx.Limits(max_connections=WORKERS))
            opened: dict[str, str] = {}
            lock = threading.Lock()

            def send(incident: Incident) -> None:
                p, incident_id, closing = incident
                now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
                with lock:
                    starts = opened.setdefault(incident_id, now)
                alert: dict[str, Any] = {
                    "labels": {
                        "alertname": f"storm {tag} policy {p:02d}",
                        "service": "sight-api",
                        "incident_id": incident_id,
                    },
                    "annotations": {"summary": "p95 latency above 1500 ms"},
                    "startsAt": starts,
                }
                if closing:
                    alert["endsAt"] = now
                client.post(f"{api}/alerts", json=[alert]).raise_for_status()

            started = run_storm(storm(tag), send)
            time.sleep(SETTLE_S)
            client.close()
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(10)
    return summarise("alertmanager", [t for t, _ in received], started, received_bodies(received))


def received_bodies(received: list[tuple[float, dict[str, Any]]]) -> list[str]:
    return ["[RESOLVED]" if body["status"] == "resolved" else "firing" for _, body in received]


# ---- notify --------------------------------------------------------------------------


def incident_body(incident_id: str, policy: str, closing: bool) -> bytes:
    name = "incident_1_2_closed" if closing else "incident_1_2_open"
    body = json.loads((GOLDEN / "monitoring" / f"{name}.json").read_text())
    body["incident"].update(incident_id=incident_id, policy_name=policy)
    return json.dumps(body).encode()


def bench_notify(tag: str, sink: slack_standin.SlackState, sink_url: str) -> dict[str, Any]:
    import functions_framework
    from pydantic import SecretStr

    from tests.helpers import push

    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as config:
        config.write("version: 1\n")
    settings = Settings(
        slack_webhook_url=SecretStr(sink_url + NOTIFY_PATH),
        db_pool_size=30,
        db_max_overflow=10,
        notify=NotifyConfig(
            config_file=config.name,
            group_wait_s=GROUP_WAIT,
            group_interval_s=GROUP_INTERVAL,
            repeat_interval_s=REPEAT,
            redis_prefix=f"sightops:bench:{tag}:",
        ),
    )
    deps = Deps(settings)
    set_process_deps(deps)
    app = functions_framework.create_app(
        target="notify", source=str(ROOT / "functions/notify/main.py"), signature_type="cloudevent"
    )
    client = app.test_client()
    # Warm up like a running service (imports, pools, Slack client): a few concurrent
    # deliveries notify skips (kpi events), so the storm measures steady state.
    warm = [
        envelope(
            json.dumps({"all_active": True}),
            {
                "type": "sight.ops.kpi.refresh_requested",
                "id": str(uuid.uuid4()),
                "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "source": "bench",
            },
        )
        for _ in range(WORKERS)
    ]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda b: push(client, "kpi-refresh", b), warm))
    redeliveries = 0
    lock = threading.Lock()

    def send(incident: Incident) -> None:
        nonlocal redeliveries
        p, incident_id, closing = incident
        body = envelope(incident_body(incident_id, f"storm {tag} policy {p:02d}", closing))
        backoff = 0.25
        while push(client, "monitoring-alerts", body).status_code >= 300:
            with lock:
                redeliveries += 1
            time.sleep(backoff)
            backoff = min(backoff * 2, 4.0)

    started = run_storm(storm(tag), send)
    time.sleep(1.0)
    times = [m.received_at.timestamp() for m in sink.messages(NOTIFY_PATH)]
    offset = time.monotonic() - time.time()
    kinds = [
        "[RESOLVED]" if "[RESOLVED]" in m.body["text"] else "firing"
        for m in sink.messages(NOTIFY_PATH)
    ]
    result = summarise("notify", [t + offset for t in times], started, kinds)
    result["redeliveries (503 -> Pub/Sub)"] = redeliveries
    deps.close()
    os.unlink(config.name)
    return result


# ---- report --------------------------------------------------------------------------


def summarise(name: str, times: list[float], started: float, kinds: list[str]) -> dict[str, Any]:
    return {
        "system": name,
        "Slack messages": len(times),
        "first notification (s)": round(min(times) - started, 2) if times else None,
        "last message (s)": round(max(times) - started, 2) if times else None,
        "resolved messages": kinds.count("[RESOLVED]"),
    }


def main() -> None:
    logging.disable(logging.CRITICAL)
    tag = uuid.uuid4().hex[:6]
    sink = slack_standin.SlackState(strict=False)
    with serve(slack_standin.create_app(sink)) as running:
        am = bench_alertmanager(tag, sink, running.url)
        ours = bench_notify(tag, sink, running.url)
    print(
        f"alert storm: {POLICIES * PER_POLICY} incidents over {POLICIES} policies in "
        f"{OPEN_S:.0f} s, then {CLOSED * PER_POLICY} closed ({CLOSED} policies) in "
        f"{CLOSE_S:.0f} s; group_wait {GROUP_WAIT:.0f}s, group_interval {GROUP_INTERVAL:.0f}s"
    )
    keys = [k for k in ours if k != "system"]
    print(f"{'':<32}{'Alertmanager 0.25':>20}{'notify':>12}")
    for key in keys:
        print(f"{key:<32}{am.get(key, '-')!s:>20}{ours[key]!s:>12}")
    print(f"closed groups: {CLOSED}; open groups: {POLICIES - CLOSED}")


if __name__ == "__main__":
    main()
