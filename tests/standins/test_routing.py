"""The Cloud Run stand-in serving revisions: the service URI and tag URLs forward to the
Sight API stand-in by the traffic in effect, and an image can be made bad there
(docs/standins.md, "Serving revisions")."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2

from shared.smoke import SmokeOptions, run_checks
from standins import RunningServer, serve
from standins import sightapi as sightapi_standin
from standins.cloudrun import CloudRunState, create_app
from standins.monitoring import MonitoringState
from tests.standins.conftest import Web

PROJECT, REGION, SERVICE = "sight-local", "europe-west1", "sight-api"
V1, V2 = "repo/sight-api:v1", "repo/sight-api:v2"


@dataclass
class Served:
    cloudrun: CloudRunState
    sight: sightapi_standin.SightApiState
    monitoring: MonitoringState
    server: RunningServer
    sight_server: RunningServer
    http: httpx.Client

    def uri(self, tag: str = "") -> str:
        svc = self.cloudrun.get_service(PROJECT, REGION, SERVICE)
        if not tag:
            return str(svc["uri"])
        [status] = [t for t in svc["trafficStatuses"] if t.get("tag") == tag]
        return str(status["uri"])

    def revisions(self) -> tuple[str, str]:
        """v1 serving 100 % (created with the service), v2 deployed with no traffic and the
        tag ``candidate``."""
        self.cloudrun.create_service(PROJECT, REGION, SERVICE, V1, revision="sight-api-v1")
        self.cloudrun.create_revision(
            PROJECT,
            REGION,
            SERVICE,
            image=V2,
            revision="sight-api-v2",
            no_traffic=True,
            tag="candidate",
        )
        return "sight-api-v1", "sight-api-v2"

    def split(self, first: int, second: int) -> None:
        self.cloudrun.set_traffic(
            PROJECT,
            REGION,
            SERVICE,
            [
                {"type": "REVISION", "revision": "sight-api-v1", "percent": first},
                {"type": "REVISION", "revision": "sight-api-v2", "percent": second},
                {"type": "REVISION", "revision": "sight-api-v2", "tag": "candidate"},
            ],
        )


@pytest.fixture
def served() -> Iterator[Served]:
    sight = sightapi_standin.SightApiState(seed=5)
    monitoring = MonitoringState()
    cloudrun = CloudRunState(seed=7, route_seed=11, monitoring=monitoring)
    with (
        serve(sightapi_standin.create_app(sight)) as sight_server,
        serve(create_app(cloudrun)) as server,
        httpx.Client(timeout=10) as http,
    ):
        cloudrun.configure(serve_base=server.url, upstream=sight_server.url)
        yield Served(cloudrun, sight, monitoring, server, sight_server, http)


def test_the_service_uri_and_tag_urls_are_served_by_the_stand_in(served: Served) -> None:
    served.revisions()
    assert served.uri() == f"{served.server.url}/_serve/{PROJECT}/{REGION}/{SERVICE}"
    assert served.uri("candidate").endswith(f"/_serve/{PROJECT}/{REGION}/candidate---{SERVICE}")
    answer = served.http.get(served.uri() + "/health")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})
    assert answer.headers["X-Standin-Revision"] == "sight-api-v1"


def test_a_90_10_split_sends_about_ten_percent_to_the_second_revision(served: Served) -> None:
    served.revisions()
    served.split(90, 10)
    for _ in range(500):
        assert served.http.get(served.uri() + "/health").status_code == 200
    hits = served.sight.served()
    assert hits["sight-api-v1"] + hits["sight-api-v2"] == 500
    assert 30 <= hits["sight-api-v2"] <= 70, hits  # 50 expected; 3 standard deviations
    key = f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}"
    assert served.cloudrun.routed()[key] == hits


def test_a_tag_url_always_hits_its_revision_whatever_the_split(served: Served) -> None:
    served.revisions()
    served.split(100, 0)
    for _ in range(50):
        answer = served.http.get(served.uri("candidate") + "/api/health/db")
        assert answer.headers["X-Standin-Revision"] == "sight-api-v2"
    assert served.sight.served() == {"sight-api-v2": 50}


def test_an_image_with_error_rate_0_2_answers_about_twenty_percent_5xx(served: Served) -> None:
    served.revisions()
    served.sight.set_image(V1, error_rate=0.2)
    statuses = [served.http.get(served.uri() + "/docs").status_code for _ in range(500)]
    errors = sum(1 for s in statuses if s >= 500)
    assert 75 <= errors <= 125, errors  # 100 expected; 3 standard deviations
    assert set(statuses) == {200, 503}
    # The other image is untouched.
    tag = [served.http.get(served.uri("candidate") + "/docs").status_code for _ in range(50)]
    assert set(tag) == {200}


def test_an_image_with_failing_health_checks_fails_the_smoke_runner_on_its_tag_only(
    served: Served,
) -> None:
    served.revisions()
    served.sight.set_image(V2, failing_checks=["health", "db"])
    options = SmokeOptions(
        email=sightapi_standin.DEFAULT_EMAIL,
        password=sightapi_standin.DEFAULT_PASSWORD,
        project_id=sightapi_standin.DEFAULT_PROJECT,
        retries=0,
    )
    bad = run_checks(served.uri("candidate"), options, client=served.http)
    assert [c.name for c in bad if not c.ok] == ["GET /health", "GET /api/health/db"]
    assert all(c.status_code == 503 for c in bad if not c.ok)
    good = run_checks(served.uri(), options, client=served.http)
    assert all(c.ok for c in good), good


def test_an_image_with_added_latency_answers_late(served: Served) -> None:
    served.revisions()
    served.sight.set_image(V1, latency_ms=150)
    started = time.perf_counter()
    assert served.http.get(served.uri() + "/health").status_code == 200
    assert time.perf_counter() - started >= 0.15
    started = time.perf_counter()
    assert served.http.get(served.uri("candidate") + "/health").status_code == 200
    assert time.perf_counter() - started < 0.15


def test_requests_to_an_unknown_service_or_tag_or_unready_revision_are_refused(
    served: Served,
) -> None:
    served.revisions()
    base = f"{served.server.url}/_serve/{PROJECT}/{REGION}"
    assert served.http.get(f"{base}/nope/health").status_code == 404
    assert served.http.get(f"{base}/canary---{SERVICE}/health").status_code == 404
    served.cloudrun.set_revision_ready(PROJECT, REGION, SERVICE, "sight-api-v2", False)
    assert served.http.get(served.uri("candidate") + "/health").status_code == 503
    assert served.sight.served() == {}


def test_served_requests_are_not_api_requests(served: Served) -> None:
    """A fault injected on the Admin API never hits served traffic, nor is it logged."""
    served.revisions()
    served.cloudrun.inject_fault(503, count=5)
    assert served.http.get(served.uri() + "/health").status_code == 200
    assert served.cloudrun.requests() == []


def test_post_bodies_and_headers_reach_the_revision(served: Served) -> None:
    served.revisions()
    login = served.http.post(
        served.uri() + "/api/auth/login",
        json={"email": sightapi_standin.DEFAULT_EMAIL, "password": "smoke-local"},
    )
    assert login.status_code == 200
    token = login.json()["access_token"]
    persona = served.http.post(
        served.uri() + f"/api/projects/{sightapi_standin.DEFAULT_PROJECT}/personas",
        json={"name": "p"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert persona.status_code == 201


def test_bad_images_are_set_listed_and_healed_through_the_admin_api(
    served: Served, web: Web
) -> None:
    base = served.sight_server.url
    status, body = web.json(
        "POST",
        f"{base}/_admin/images",
        {"image": V1, "failing_checks": ["health"], "error_rate": 0.5, "latency_ms": 10},
    )
    assert status == 201
    assert body == {
        "image": V1,
        "failing_checks": ["health"],
        "error_rate": 0.5,
        "latency_ms": 10.0,
        "status": 503,
    }
    assert web.json("GET", f"{base}/_admin/images")[1] == {"images": [body]}
    assert web.json("POST", f"{base}/_admin/images", {"image": V1, "error_rate": 2})[0] == 400
    assert web.json("POST", f"{base}/_admin/images", {"image": V1, "failing_checks": ["x"]})[0] == (
        400
    )
    assert web.json("DELETE", f"{base}/_admin/images?image={V1}")[0] == 200
    assert web.json("GET", f"{base}/_admin/images")[1] == {"images": []}


def test_routing_is_configured_through_the_admin_api(served: Served, web: Web) -> None:
    served.revisions()
    url = served.server.url
    status, config = web.json("POST", f"{url}/_admin/config", {"serve_base": "", "upstream": ""})
    assert status == 200
    assert (config["serve_base"], config["upstream"]) == (None, None)
    uri = served.cloudrun.get_service(PROJECT, REGION, SERVICE)["uri"]
    assert uri.startswith("https://") and uri.endswith(".run.app")
    web.json("POST", f"{url}/_admin/config", {"serve_base": url, "upstream": "http://x"})
    assert web.json("GET", f"{url}/_admin/routed")[1] == {"routed": {}}


def test_the_official_client_reads_the_served_uris(served: Served) -> None:
    served.revisions()
    client = run_v2.ServicesClient(
        transport="rest",
        client_options={"api_endpoint": served.server.url},
        credentials=AnonymousCredentials(),
    )
    svc = client.get_service(name=f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}")
    assert svc.uri == served.uri()
    [tagged] = [t for t in svc.traffic_statuses if t.tag == "candidate"]
    assert tagged.uri == served.uri("candidate")
    assert served.http.get(tagged.uri + "/health").headers["X-Standin-Revision"] == "sight-api-v2"


# ---------------------------------------------------------------------------- recording


def recorded(served: Served) -> dict[tuple[str, str], int]:
    """Requests the Monitoring stand-in counted, per (revision, response_code_class)."""
    out: dict[tuple[str, str], int] = {}
    for series in served.monitoring.series(SERVICE):
        key = (series["revision"], series["response_code_class"])
        out[key] = out.get(key, 0) + series["requests"]
    return out


def test_every_answer_of_a_revision_is_recorded_with_its_status_in_monitoring(
    served: Served,
) -> None:
    served.revisions()
    served.split(50, 50)
    served.sight.set_image(V2, error_rate=0.3)
    statuses: dict[tuple[str, int], int] = {}
    for path in ("/health", "/docs", "/api/health/db", "/nope") * 25:
        answer = served.http.get(served.uri() + path)
        key = (answer.headers["X-Standin-Revision"], answer.status_code)
        statuses[key] = statuses.get(key, 0) + 1

    expected: dict[tuple[str, str], int] = {}
    for (revision, status), n in statuses.items():
        key = (revision, f"{status // 100}xx")
        expected[key] = expected.get(key, 0) + n
    assert recorded(served) == expected
    assert expected[("sight-api-v1", "4xx")] > 0  # the unknown path: counted, not an error
    assert expected[("sight-api-v2", "5xx")] > 0


def test_tag_url_requests_are_recorded_for_the_tagged_revision(served: Served) -> None:
    served.revisions()
    for _ in range(3):
        served.http.get(served.uri("candidate") + "/health")

    assert recorded(served) == {("sight-api-v2", "2xx"): 3}


def test_the_recorded_latency_is_the_measured_time_of_the_revisions_answer(
    served: Served,
) -> None:
    served.revisions()
    served.sight.set_image(V1, latency_ms=120)
    served.http.get(served.uri() + "/health")
    served.http.get(served.uri("candidate") + "/health")

    mean = {
        s["revision"]: s["points"][0]["latency_mean_ms"] for s in served.monitoring.series(SERVICE)
    }
    assert 120 <= mean["sight-api-v1"] < 1000
    assert mean["sight-api-v2"] < 120


def test_a_dead_revision_counts_as_a_5xx_of_that_revision(served: Served) -> None:
    served.revisions()
    served.cloudrun.configure(upstream="http://127.0.0.1:9")  # discard port: nothing listens

    assert served.http.get(served.uri() + "/health").status_code == 502
    assert recorded(served) == {("sight-api-v1", "5xx"): 1}


def test_requests_no_revision_answers_are_not_recorded_and_recording_can_stop(
    served: Served,
) -> None:
    served.revisions()
    base = f"{served.server.url}/_serve/{PROJECT}/{REGION}"
    assert served.http.get(f"{base}/nope/health").status_code == 404
    served.cloudrun.record_to(None)
    assert served.http.get(served.uri() + "/health").status_code == 200

    assert recorded(served) == {}
    assert served.cloudrun.config()["recording"] is False
