"""``python -m standins``: starts, serves the official clients, logs requests, stops on SIGTERM."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2, secretmanager
from slack_sdk.webhook import WebhookClient

ROOT = Path(__file__).resolve().parents[2]
GRPC_LINE = re.compile(r"monitoring gRPC listening on (\S+)")
LOGGING_GRPC_LINE = re.compile(r"logging gRPC listening on (\S+)")


def _start(args: list[str]) -> tuple[subprocess.Popen[str], dict[str, str], list[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "standins", *args],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    urls: dict[str, str] = {}
    lines: list[str] = []
    deadline = time.monotonic() + 20
    assert proc.stderr is not None
    expected = 3 if args[0] == "all" else 1
    while len(urls) < expected and time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"(\w+) listening on (http://\S+)", line):
            urls[match.group(1)] = match.group(2)
    assert len(urls) == expected, "".join(lines)

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    threading.Thread(target=drain, daemon=True).start()
    return proc, urls, lines


def _stop(proc: subprocess.Popen[str], sig: int = signal.SIGTERM) -> int:
    os.killpg(proc.pid, sig)
    try:
        return proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise


def test_all_stand_ins_serve_seeded_state_log_each_request_and_exit_0_on_sigterm(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets.json"
    secrets.write_text(json.dumps({"slack-webhook": "http://example.invalid/hook"}))
    services = tmp_path / "cloudrun.json"
    services.write_text(
        json.dumps(
            {
                "services": [
                    {
                        "project": "sight-local",
                        "location": "europe-west1",
                        "service": "sight-api",
                        "image": "img:1",
                        "revisions": [{"image": "img:2", "no_traffic": True, "tag": "next"}],
                    }
                ]
            }
        )
    )
    proc, urls, lines = _start(
        [
            "all",
            "--cloudrun-port", "0",
            "--slack-port", "0",
            "--secretmanager-port", "0",
            "--seed", str(secrets),
            "--cloudrun-seed", str(services),
        ]
    )  # fmt: skip
    try:
        sm = secretmanager.SecretManagerServiceClient(
            transport="rest",
            client_options={"api_endpoint": urls["secretmanager"]},
            credentials=AnonymousCredentials(),
        )
        answer = sm.access_secret_version(
            name="projects/sight-local/secrets/slack-webhook/versions/latest"
        )
        assert answer.payload.data == b"http://example.invalid/hook"

        run = run_v2.ServicesClient(
            transport="rest",
            client_options={"api_endpoint": urls["cloudrun"]},
            credentials=AnonymousCredentials(),
        )
        service = run.get_service(
            name="projects/sight-local/locations/europe-west1/services/sight-api"
        )
        assert [t.tag for t in service.traffic] == ["", "next"]

        hook = "/services/T0LOCAL/B0LOCAL/devwebhooksecret"
        # slack_sdk's own logger writes the URL (the credential) at DEBUG: keep it quiet.
        quiet = logging.getLogger("tests.standins.quiet-slack-sdk")
        quiet.setLevel(logging.WARNING)
        assert WebhookClient(urls["slack"] + hook, logger=quiet).send(text="hi").body == "ok"
    finally:
        code = _stop(proc)

    assert code == 0
    log = "".join(lines)
    assert "GET /v1/projects/sight-local/secrets/slack-webhook/versions/latest:access -> 200" in log
    assert "GET /v2/projects/sight-local/locations/europe-west1/services/sight-api -> 200" in log
    assert "POST /services/T0LOCAL/*** -> 200" in log
    assert "devwebhooksecret" not in log
    assert "received SIGTERM" in log


def test_single_stand_in_on_a_chosen_port_exits_0_on_sigint() -> None:
    proc, urls, _ = _start(["slack", "--port", "0"])
    try:
        assert list(urls) == ["slack"]
    finally:
        code = _stop(proc, signal.SIGINT)
    assert code == 0


def test_a_missing_seed_file_is_a_clean_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "standins", "secretmanager", "--seed", str(tmp_path / "nope")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "cannot start" in result.stderr


def test_all_serves_the_dev_seeds_service_through_the_sight_api_stand_in() -> None:
    """`make dev` (`all` with dev/cloudrun-seed.json): the service URI Cloud Run reports is
    answered by the seeded serving revision, so a smoke run against it works, and Cloud
    Monitoring counts the request."""
    import grpc
    import httpx
    from google.cloud import monitoring_v3
    from google.cloud.monitoring_v3.services.metric_service.transports import (
        MetricServiceGrpcTransport,
    )

    from shared.canary import MonitoringReader

    proc, urls, lines = _start(
        [
            "all",
            "--cloudrun-port", "0",
            "--slack-port", "0",
            "--secretmanager-port", "0",
            "--sightapi-port", "0",
            "--cloudrun-seed", str(ROOT / "dev" / "cloudrun-seed.json"),
        ]
    )  # fmt: skip
    try:
        run = run_v2.ServicesClient(
            transport="rest",
            client_options={"api_endpoint": urls["cloudrun"]},
            credentials=AnonymousCredentials(),
        )
        name = "projects/sight-local/locations/europe-west1/services/sight-api"
        deadline = time.monotonic() + 10
        while not (uri := run.get_service(name=name).uri).startswith(urls["cloudrun"]):
            assert time.monotonic() < deadline, uri  # routing is set once all listen
            time.sleep(0.05)
        began = datetime.now(UTC).replace(microsecond=0)
        answer = httpx.get(uri + "/health", timeout=10)
        assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
        assert answer.headers["X-Standin-Revision"] == "sight-api-9e8d7c6b-q7d"

        end = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=1)
        time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))  # its sample ends
        while not (found := [m.group(1) for m in map(GRPC_LINE.search, lines) if m]):
            assert time.monotonic() < deadline, "".join(lines)  # stderr is read by a thread
            time.sleep(0.05)
        [target] = found
        channel = grpc.insecure_channel(target)
        client = monitoring_v3.MetricServiceClient(
            transport=MetricServiceGrpcTransport(channel=channel)
        )
        latencies = MonitoringReader(client, alignment_s=1).baseline(
            project="sight-local",
            region="europe-west1",
            service="sight-api",
            stable="sight-api-9e8d7c6b-q7d",
            start=began,
            end=end,
        )
        client.transport.close()
        assert latencies is not None and latencies.total == 1
    finally:
        assert _stop(proc) == 0


def test_all_records_the_cloud_run_stand_ins_answers_in_monitoring_and_in_logging() -> None:
    from standins.__main__ import _parser, build_apps

    apps = build_apps(_parser().parse_args(["all"]))
    monitoring = apps["monitoring"].extensions["standin"]
    logging_state = apps["logging"].extensions["standin"]

    recorders = apps["cloudrun"].extensions["standin"].monitoring.recorders
    assert recorders == (monitoring, logging_state)
    assert monitoring.min_alignment_period_s == 1  # the local canary's periods
    alone = build_apps(_parser().parse_args(["monitoring"]))["monitoring"]
    assert alone.extensions["standin"].min_alignment_period_s == 60  # the real API's


def test_logging_alone_serves_its_admin_api_and_log_entries_over_grpc() -> None:
    import grpc
    import httpx
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.logging_v2.services.logging_service_v2.transports import (
        LoggingServiceV2GrpcTransport,
    )

    proc, urls, lines = _start(["logging", "--port", "0", "--logging-grpc-port", "0"])
    try:
        record = {"service": "sight-api", "revision": "sight-api-00001-abc", "status_code": 502}
        answer = httpx.post(f"{urls['logging']}/_admin/record", json=record, timeout=10)
        assert answer.status_code == 201
        deadline = time.monotonic() + 10
        while not (found := [m.group(1) for m in map(LOGGING_GRPC_LINE.search, lines) if m]):
            assert time.monotonic() < deadline, "".join(lines)  # stderr is read by a thread
            time.sleep(0.05)
        [target] = found
        channel = grpc.insecure_channel(target)
        client = LoggingServiceV2Client(transport=LoggingServiceV2GrpcTransport(channel=channel))
        entries = list(client.list_log_entries(resource_names=["projects/sight-local"]))
        client.transport.close()
        assert [e.http_request.status for e in entries] == [502]
    finally:
        assert _stop(proc) == 0
    assert "POST /google.logging.v2.LoggingServiceV2/ListLogEntries -> OK" in "".join(lines)
