"""The traffic generator (standins/traffic.py): real requests at a steady rate through the
Cloud Run stand-in's split, counted the same by its report and by Cloud Monitoring."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from standins import serve
from standins import sightapi as sightapi_standin
from standins.traffic import Traffic
from tests.standins.local_cloud import PROJECT, REGION, LocalCloud, local_cloud

ROOT = Path(__file__).resolve().parents[2]
SERVICE = "sight-api"
V1, V2 = "repo/sight-api:v1", "repo/sight-api:v2"
STABLE, CANARY = "sight-api-v1", "sight-api-v2"


@pytest.fixture
def cloud() -> Iterator[LocalCloud]:
    with local_cloud() as cloud:
        cloud.cloudrun.create_service(PROJECT, REGION, SERVICE, V1, revision=STABLE)
        cloud.cloudrun.create_revision(
            PROJECT, REGION, SERVICE, image=V2, revision=CANARY, no_traffic=True
        )
        yield cloud


def split(cloud: LocalCloud, stable: int, canary: int) -> None:
    cloud.cloudrun.set_traffic(
        PROJECT,
        REGION,
        SERVICE,
        [
            {"type": "REVISION", "revision": STABLE, "percent": stable},
            {"type": "REVISION", "revision": CANARY, "percent": canary},
        ],
    )


def test_two_seconds_at_50_rps_through_a_50_50_split_are_counted_alike_by_monitoring(
    cloud: LocalCloud,
) -> None:
    split(cloud, 50, 50)
    cloud.sight.set_image(V2, error_rate=0.2)
    began = datetime.now(UTC)

    report = Traffic(cloud.service_uri(SERVICE), 50, path=["/health", "/docs"], seed=3).run(2.0)

    ended = datetime.now(UTC)
    end = ended.replace(microsecond=0) + timedelta(seconds=1)
    time.sleep(max(0.0, (end - datetime.now(UTC)).total_seconds()))  # the last sample ends
    intervals = cloud.reader().intervals(
        project=PROJECT,
        region=REGION,
        service=SERVICE,
        canary=CANARY,
        stable=STABLE,
        start=began.replace(microsecond=0),
        end=end,
    )
    monitored = {
        CANARY: (
            sum(i.canary.requests for i in intervals),
            sum(i.canary.errors for i in intervals),
        ),
        STABLE: (
            sum(i.stable.requests for i in intervals),
            sum(i.stable.errors for i in intervals),
        ),
    }
    reported = {rev: (report.by_revision[rev], report.server_errors(rev)) for rev in monitored}
    assert monitored == reported
    assert (report.sent, report.failed) == (100, 0)
    assert sum(report.by_revision.values()) == report.sent
    assert monitored[STABLE][0] > 25 and monitored[CANARY][0] > 25  # about 50 each
    assert monitored[STABLE][1] == 0 and monitored[CANARY][1] > 0  # about 10


def test_a_slow_revision_does_not_lower_the_rate(cloud: LocalCloud) -> None:
    cloud.sight.set_image(V1, latency_ms=200)

    report = Traffic(cloud.service_uri(SERVICE), 40).run(0.5)

    assert report.sent == 20  # 8 requests in flight at a time
    assert report.elapsed_s < 2.0  # about 0.7 s; one at a time would take 4 s
    assert report.by_status == {200: report.sent}
    assert report.by_revision == {STABLE: report.sent}


def test_requests_nobody_answers_are_counted_as_failed() -> None:
    report = Traffic("http://127.0.0.1:9", 20, timeout_s=1).run(0.3)

    assert report.sent >= 5
    assert (report.failed, report.by_status, report.by_revision) == (report.sent, {}, {})


def test_stop_reports_once_and_a_traffic_cannot_start_twice(cloud: LocalCloud) -> None:
    with Traffic(cloud.service_uri(SERVICE), 20) as traffic:
        time.sleep(0.1)
    first = traffic.report

    assert first is not None and traffic.stop() is first
    with pytest.raises(RuntimeError):
        traffic.start()
    with pytest.raises(ValueError, match="rps"):
        Traffic("http://x", 0)


def test_python_m_standins_traffic_prints_its_report_as_json() -> None:
    with serve(sightapi_standin.create_app(sightapi_standin.SightApiState())) as sight:
        result = subprocess.run(
            [sys.executable, "-m", "standins", "traffic", "--url", sight.url,
             "--rps", "20", "--duration", "0.5", "--path", "/api/health/db"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=30,
        )  # fmt: skip

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["sent"] == 10
    assert report["by_status"] == {"200": report["sent"]}
    assert report["by_revision"] == {}  # not through the Cloud Run stand-in: no revision


def test_python_m_standins_traffic_without_a_url_is_a_clean_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "standins", "traffic", "--rps", "5"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 2
    assert "traffic needs --url" in result.stderr
