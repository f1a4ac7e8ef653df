"""The Cloud Run Admin API v2 stand-in, driven by the official google-cloud-run REST client."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from google.api_core import exceptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import run_v2
from google.longrunning import operations_pb2
from google.protobuf import json_format

from standins import RunningServer, serve
from standins.cloudrun import LATEST, REVISION, CloudRunState, create_app, seed_from_json

PROJECT = "sight-prod"
REGION = "europe-west1"
SERVICE = "sight-api"
NAME = f"projects/{PROJECT}/locations/{REGION}/services/{SERVICE}"

REVISION_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION
LATEST_TYPE = run_v2.TrafficTargetAllocationType.TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST


@dataclass
class Clients:
    services: run_v2.ServicesClient
    revisions: run_v2.RevisionsClient
    server: RunningServer


@pytest.fixture
def clients(cloudrun_server: RunningServer) -> Clients:
    options = {"api_endpoint": cloudrun_server.url}
    return Clients(
        run_v2.ServicesClient(
            transport="rest", client_options=options, credentials=AnonymousCredentials()
        ),
        run_v2.RevisionsClient(
            transport="rest", client_options=options, credentials=AnonymousCredentials()
        ),
        cloudrun_server,
    )


@pytest.fixture
def deployed(cloudrun_state: CloudRunState) -> dict[str, str]:
    """v1 serving 100 % through LATEST, then v2 deployed with --no-traffic and tag 'canary'."""
    cloudrun_state.create_service(
        PROJECT,
        REGION,
        SERVICE,
        "europe-docker.pkg.dev/sight/app/api:v1",
        create_time="2025-01-01T10:00:00Z",
    )
    v1 = cloudrun_state.get_service(PROJECT, REGION, SERVICE)["latestReadyRevision"]
    v2 = cloudrun_state.create_revision(
        PROJECT,
        REGION,
        SERVICE,
        image="europe-docker.pkg.dev/sight/app/api:v2",
        create_time="2025-01-02T10:00:00Z",
        no_traffic=True,
        tag="canary",
    )["name"]
    return {"v1": v1.rsplit("/", 1)[1], "v2": v2.rsplit("/", 1)[1]}


def pin(revision: str, tag: str = "") -> list[run_v2.TrafficTarget]:
    return [run_v2.TrafficTarget(type_=REVISION_TYPE, revision=revision, percent=100, tag=tag)]


def short(name: str) -> str:
    return name.rsplit("/", 1)[1]


# --------------------------------------------------------------------------- reads


def test_get_service_returns_traffic_statuses_and_full_latest_revision_names(
    clients: Clients, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)

    assert service.name == NAME
    assert service.generation == 2
    assert service.etag
    assert service.uri.startswith("https://")
    # latest_ready_revision / latest_created_revision are FULL resource names
    assert service.latest_ready_revision == f"{NAME}/revisions/{deployed['v2']}"
    assert service.latest_created_revision == service.latest_ready_revision
    # --no-traffic pinned the old LATEST entry to v1; the tag points at v2 with 0 %
    assert [(t.type_, t.revision, t.percent, t.tag) for t in service.traffic] == [
        (REVISION_TYPE, deployed["v1"], 100, ""),
        (REVISION_TYPE, deployed["v2"], 0, "canary"),
    ]
    statuses = {s.revision: s for s in service.traffic_statuses}
    assert statuses[deployed["v1"]].percent == 100
    assert statuses[deployed["v2"]].percent == 0
    assert statuses[deployed["v2"]].uri.startswith("https://canary---")
    assert service.terminal_condition.state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert not service.reconciling
    assert service.template.containers[0].image.endswith(":v2")


def test_get_unknown_service_raises_not_found_with_googles_error_body(
    clients: Clients, web
) -> None:
    with pytest.raises(exceptions.NotFound):
        clients.services.get_service(name=f"projects/{PROJECT}/locations/{REGION}/services/nope")

    status, body = web.json("GET", f"{clients.server.url}/v2/{NAME}-nope")
    assert status == 404
    assert body["error"]["code"] == 404
    assert body["error"]["status"] == "NOT_FOUND"
    assert "does not exist" in body["error"]["message"]


def test_get_revision_reports_ready_and_failed_conditions(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    broken = cloudrun_state.create_revision(
        PROJECT, REGION, SERVICE, image="europe-docker.pkg.dev/sight/app/api:v3", ready=False
    )

    good = clients.revisions.get_revision(name=f"{NAME}/revisions/{deployed['v2']}")
    bad = clients.revisions.get_revision(name=broken["name"])

    def ready(rev: run_v2.Revision) -> run_v2.Condition:
        return next(c for c in rev.conditions if c.type_ == "Ready")

    assert good.service == NAME
    assert good.containers[0].image.endswith(":v2")
    assert ready(good).state == run_v2.Condition.State.CONDITION_SUCCEEDED
    assert ready(bad).state == run_v2.Condition.State.CONDITION_FAILED
    assert ready(bad).message
    # a failed newest revision is not latest-ready; LATEST keeps resolving to v2
    service = clients.services.get_service(name=NAME)
    assert short(service.latest_created_revision) == short(broken["name"])
    assert short(service.latest_ready_revision) == deployed["v2"]
    assert service.terminal_condition.state == run_v2.Condition.State.CONDITION_FAILED


def test_get_unknown_revision_raises_not_found(clients: Clients, deployed: dict[str, str]) -> None:
    with pytest.raises(exceptions.NotFound):
        clients.revisions.get_revision(name=f"{NAME}/revisions/{SERVICE}-00099-xyz")


def test_list_revisions_pages_through_all_revisions_in_no_particular_order(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    for day in range(3, 6):
        cloudrun_state.create_revision(
            PROJECT,
            REGION,
            SERVICE,
            image=f"europe-docker.pkg.dev/sight/app/api:v{day}",
            create_time=f"2025-01-0{day}T10:00:00Z",
        )

    listed = list(
        clients.revisions.list_revisions(
            request=run_v2.ListRevisionsRequest(parent=NAME, page_size=2)
        )
    )

    assert len(listed) == 5
    assert len({r.name for r in listed}) == 5
    pages = cloudrun_state.requests("GET", r"/revisions$")
    assert len(pages) == 3  # 2 + 2 + 1, following nextPageToken
    created = [r.create_time for r in listed]
    assert created != sorted(created), "the stand-in must not hand out a convenient order"
    newest = max(listed, key=lambda r: r.create_time)
    assert newest.containers[0].image.endswith(":v5")


# --------------------------------------------------------------------------- updates


def test_update_service_answers_a_pending_operation_and_traffic_statuses_follow_when_done(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    cloudrun_state.configure(operation_polls=2)
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v2"], tag="canary")

    operation = clients.services.update_service(service=service)

    # The PATCH answered done: false; until the operation is done the spec has
    # changed but what is in effect (trafficStatuses) has not.
    meanwhile = cloudrun_state.get_service(PROJECT, REGION, SERVICE)
    assert meanwhile["reconciling"] is True
    assert [t.get("revision") for t in meanwhile["traffic"]] == [deployed["v2"]]
    assert {s.get("revision"): s.get("percent", 0) for s in meanwhile["trafficStatuses"]} == {
        deployed["v1"]: 100,
        deployed["v2"]: 0,
    }
    assert meanwhile["observedGeneration"] != meanwhile["generation"]

    result = operation.result(timeout=30)

    assert [(s.revision, s.percent, s.tag) for s in result.traffic_statuses] == [
        (deployed["v2"], 100, "canary")
    ]
    assert not result.reconciling
    assert result.observed_generation == result.generation == 3
    polls = cloudrun_state.requests("GET", r"/operations/[^/]+$")
    assert len(polls) == 2
    assert polls[0]["path"] == f"/v2/{operation.operation.name}"
    after = clients.services.get_service(name=NAME)
    assert [(s.revision, s.percent) for s in after.traffic_statuses] == [(deployed["v2"], 100)]
    assert after.etag != service.etag


def test_update_service_with_zero_operation_polls_is_done_in_the_patch_answer(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    cloudrun_state.configure(operation_polls=0)
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v1"])

    result = clients.services.update_service(service=service).result(timeout=10)

    assert [(s.revision, s.percent) for s in result.traffic_statuses] == [(deployed["v1"], 100)]
    assert cloudrun_state.requests("GET", r"/operations/") == []


def test_traffic_only_update_creates_no_revision(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v1"])

    clients.services.update_service(service=service).result(timeout=10)

    revisions = list(clients.revisions.list_revisions(parent=NAME))
    assert sorted(short(r.name) for r in revisions) == sorted(deployed.values())
    assert cloudrun_state.applied_update_counts() == {NAME: 1}


def test_update_service_with_a_new_image_creates_a_ready_revision_that_latest_follows(
    clients: Clients, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = [run_v2.TrafficTarget(type_=LATEST_TYPE, percent=100)]
    service.template.containers[0].image = "europe-docker.pkg.dev/sight/app/api:v9"

    result = clients.services.update_service(service=service).result(timeout=10)

    new = short(result.latest_ready_revision)
    assert new not in deployed.values()
    assert new.startswith(f"{SERVICE}-00003-")
    assert result.latest_created_revision == result.latest_ready_revision
    [status] = result.traffic_statuses
    assert status.type_ == LATEST_TYPE
    assert status.percent == 100
    revision = clients.revisions.get_revision(name=result.latest_ready_revision)
    assert revision.containers[0].image.endswith(":v9")


def test_update_service_with_stale_etag_is_rejected_with_409(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    stale = clients.services.get_service(name=NAME)
    cloudrun_state.set_traffic(  # someone else moves traffic in between
        PROJECT, REGION, SERVICE, [{"type": "REVISION", "revision": deployed["v2"], "percent": 100}]
    )
    before = cloudrun_state.get_service(PROJECT, REGION, SERVICE)
    stale.traffic = pin(deployed["v1"])

    with pytest.raises(exceptions.Conflict) as caught:
        clients.services.update_service(service=stale)

    # Over REST, api_core maps by HTTP status only: 409 -> Conflict, even though the
    # body says ABORTED (exceptions.Aborted is a subclass it does NOT raise).
    assert type(caught.value) is exceptions.Conflict
    assert caught.value.code == 409
    assert cloudrun_state.get_service(PROJECT, REGION, SERVICE) == before
    assert cloudrun_state.patch_count(PROJECT, REGION, SERVICE) == 1
    assert cloudrun_state.applied_update_counts() == {}
    [patch] = cloudrun_state.requests("PATCH")
    assert patch["status"] == 409


def test_update_service_with_an_empty_etag_skips_the_etag_check(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.etag = ""
    service.traffic = pin(deployed["v1"])

    result = clients.services.update_service(service=service).result(timeout=10)

    assert [s.revision for s in result.traffic_statuses] == [deployed["v1"]]


def test_traffic_that_does_not_add_up_to_100_is_rejected_with_400(
    clients: Clients, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = [
        run_v2.TrafficTarget(type_=REVISION_TYPE, revision=deployed["v1"], percent=60),
        run_v2.TrafficTarget(type_=REVISION_TYPE, revision=deployed["v2"], percent=30),
    ]

    with pytest.raises(exceptions.BadRequest, match="add up to 100"):
        clients.services.update_service(service=service)


def test_traffic_to_an_unknown_revision_is_rejected_with_400(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(f"{SERVICE}-00042-zzz")

    with pytest.raises(exceptions.BadRequest, match="does not exist"):
        clients.services.update_service(service=service)
    assert cloudrun_state.get_service(PROJECT, REGION, SERVICE)["generation"] == "2"


def test_traffic_to_an_unknown_revision_fails_the_operation_in_fail_operation_mode(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    cloudrun_state.configure(unknown_revision_mode="fail_operation")
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(f"{SERVICE}-00042-zzz")

    operation = clients.services.update_service(service=service)
    with pytest.raises(exceptions.InternalServerError, match="does not exist"):
        operation.result(timeout=10)

    assert cloudrun_state.get_service(PROJECT, REGION, SERVICE)["generation"] == "2"


def test_template_revision_name_that_exists_with_another_image_is_rejected_with_409(
    clients: Clients, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.template.revision = deployed["v1"]
    service.template.containers[0].image = "europe-docker.pkg.dev/sight/app/api:v7"

    with pytest.raises(exceptions.Conflict, match="different configuration"):
        clients.services.update_service(service=service)


def test_injected_503_on_update_raises_service_unavailable_and_changes_nothing(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    cloudrun_state.inject_fault(503, method="PATCH", path_regex=r"/services/sight-api$")
    service.traffic = pin(deployed["v1"])

    with pytest.raises(exceptions.ServiceUnavailable):
        clients.services.update_service(service=service)

    assert cloudrun_state.patch_count(PROJECT, REGION, SERVICE) == 1
    assert cloudrun_state.applied_update_counts() == {}
    # the fault was used up: the same call now goes through
    clients.services.update_service(service=service).result(timeout=10)
    assert cloudrun_state.patch_count(PROJECT, REGION, SERVICE) == 2


def test_injected_503_on_get_service_is_retried_by_the_clients_default_retry(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    cloudrun_state.inject_fault(503, method="GET", path_regex=r"/services/sight-api$")

    service = clients.services.get_service(name=NAME)  # GetService retries UNAVAILABLE

    assert service.name == NAME
    assert [r["status"] for r in cloudrun_state.requests("GET")] == [503, 200]
    with pytest.raises(exceptions.ServiceUnavailable):
        cloudrun_state.inject_fault(503, method="GET", path_regex=r"/services/sight-api$")
        clients.services.get_service(name=NAME, retry=None)


def test_injected_429_carries_retry_after_and_raises_too_many_requests(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str], web
) -> None:
    cloudrun_state.inject_fault(429, count=2, path_regex=r"/revisions", retry_after=7)

    with pytest.raises(exceptions.TooManyRequests):
        list(clients.revisions.list_revisions(parent=NAME, retry=None))
    status, headers, text = web.request("GET", f"{clients.server.url}/v2/{NAME}/revisions")
    assert status == 429
    assert headers["Retry-After"] == "7"
    assert json.loads(text)["error"]["status"] == "RESOURCE_EXHAUSTED"


def test_wait_operation_completes_the_operation(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    cloudrun_state.configure(operation_polls=5)
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v1"])
    operation = clients.services.update_service(service=service)

    waited = clients.services.wait_operation(
        request=operations_pb2.WaitOperationRequest(name=operation.operation.name)
    )

    assert waited.done
    assert cloudrun_state.requests("POST", r":wait$")
    done = run_v2.Service.deserialize(waited.response.value)
    assert [s.revision for s in done.traffic_statuses] == [deployed["v1"]]


def test_update_mask_limits_what_is_applied(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v1"])
    service.template.containers[0].image = "europe-docker.pkg.dev/sight/app/api:ignored"
    request = run_v2.UpdateServiceRequest(service=service, update_mask={"paths": ["traffic"]})

    result = clients.services.update_service(request=request).result(timeout=10)

    assert result.template.containers[0].image.endswith(":v2")
    assert [s.revision for s in result.traffic_statuses] == [deployed["v1"]]
    [patch] = cloudrun_state.requests("PATCH")
    assert patch["query"]["updateMask"] == "traffic"


def test_latest_traffic_status_names_its_revision_only_when_configured(
    cloudrun_state: CloudRunState,
) -> None:
    cloudrun_state.create_service(PROJECT, REGION, SERVICE, "img:1", revision="sight-api-one")
    [status] = cloudrun_state.get_service(PROJECT, REGION, SERVICE)["trafficStatuses"]
    assert status == {"type": LATEST, "percent": 100}

    cloudrun_state.configure(latest_status_includes_revision=True)
    cloudrun_state.set_traffic(PROJECT, REGION, SERVICE, [{"type": "LATEST", "percent": 100}])
    [status] = cloudrun_state.get_service(PROJECT, REGION, SERVICE)["trafficStatuses"]
    assert status == {"type": LATEST, "percent": 100, "revision": "sight-api-one"}


def test_deploy_then_promote_moves_traffic_to_latest_and_keeps_tags(
    cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    v3 = cloudrun_state.create_revision(
        PROJECT, REGION, SERVICE, image="img:v3", no_traffic=True, tag="candidate", promote=True
    )
    service = cloudrun_state.get_service(PROJECT, REGION, SERVICE)

    assert service["traffic"][0] == {"type": LATEST, "percent": 100}
    tags = {t["tag"]: t["revision"] for t in service["traffic"] if "tag" in t}
    assert tags == {"canary": deployed["v2"], "candidate": short(v3["name"])}
    assert service["latestReadyRevision"] == v3["name"]


# --------------------------------------------------------------------------- wire format


def test_answers_use_numeric_enums_when_the_client_asks_and_names_otherwise(
    clients: Clients, deployed: dict[str, str], web
) -> None:
    url = f"{clients.server.url}/v2/{NAME}"
    _, by_name = web.json("GET", url)
    _, by_number = web.json("GET", url + "?%24alt=json%3Benum-encoding%3Dint")

    assert by_name["traffic"][0]["type"] == REVISION
    assert by_number["traffic"][0]["type"] == 2
    assert by_number["terminalCondition"]["type"] == "Ready"  # a string, not an enum
    assert by_number["terminalCondition"]["state"] == 4
    assert run_v2.Service.from_json(
        json.dumps(by_number), ignore_unknown_fields=False
    ) == run_v2.Service.from_json(json.dumps(by_name), ignore_unknown_fields=False)


def test_the_client_sends_numeric_enums_and_no_name_in_the_patch_body(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    service = clients.services.get_service(name=NAME)
    service.traffic = pin(deployed["v1"])
    clients.services.update_service(service=service).result(timeout=10)

    [patch] = cloudrun_state.requests("PATCH")
    assert patch["query"] == {"$alt": "json;enum-encoding=int"}
    assert patch["body"]["traffic"] == [{"type": 2, "revision": deployed["v1"], "percent": 100}]
    assert "name" not in patch["body"]  # it travels in the URL
    assert patch["body"]["etag"] == service.etag


GOLDEN_SERVICE_KINDS = [
    ("cloudrun/service.json", run_v2.Service),
    ("cloudrun/service_reconciling.json", run_v2.Service),
    ("cloudrun/revision.json", run_v2.Revision),
    ("cloudrun/revision_failed.json", run_v2.Revision),
    ("cloudrun/list_revisions.json", run_v2.ListRevisionsResponse),
]
GOLDEN_OPERATIONS = [
    "cloudrun/operation_pending.json",
    "cloudrun/operation_done.json",
    "cloudrun/operation_failed.json",
]


class TickingClock:
    """A clock that moves one second per reading, so regenerated fixtures are stable."""

    def __init__(self) -> None:
        self.now = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@pytest.fixture
def golden_answers(web) -> Iterator[dict[str, object]]:
    """One scripted session over raw HTTP, answers by golden-fixture name."""
    st = CloudRunState(seed=11, clock=TickingClock())
    with serve(create_app(st)) as server:
        yield _golden_session(st, server.url, web)


def _golden_session(st: CloudRunState, base: str, web) -> dict[str, object]:
    seed_from_json(
        st,
        {
            "services": [
                {
                    "project": PROJECT,
                    "location": REGION,
                    "service": SERVICE,
                    "image": "europe-docker.pkg.dev/sight/app/api:v1",
                    "revisions": [
                        {
                            "image": "europe-docker.pkg.dev/sight/app/api:v2",
                            "no_traffic": True,
                            "tag": "canary",
                        },
                        {"image": "europe-docker.pkg.dev/sight/app/api:v3", "ready": False},
                    ],
                }
            ]
        },
    )
    revisions = st.list_revisions(PROJECT, REGION, SERVICE)["revisions"]
    ready = next(r for r in revisions if r["containers"][0]["image"].endswith(":v2"))
    failed = next(r for r in revisions if r["containers"][0]["image"].endswith(":v3"))
    answers: dict[str, object] = {}
    answers["cloudrun/service.json"] = web.json("GET", f"{base}/v2/{NAME}")[1]
    answers["cloudrun/revision.json"] = web.json("GET", f"{base}/v2/{ready['name']}")[1]
    answers["cloudrun/revision_failed.json"] = web.json("GET", f"{base}/v2/{failed['name']}")[1]
    answers["cloudrun/list_revisions.json"] = web.json(
        "GET", f"{base}/v2/{NAME}/revisions?pageSize=2"
    )[1]
    st.configure(operation_polls=2)
    body = dict(answers["cloudrun/service.json"])  # type: ignore[call-overload]
    body["traffic"] = [
        {"type": REVISION, "revision": short(ready["name"]), "percent": 100, "tag": "canary"}
    ]
    pending = web.json("PATCH", f"{base}/v2/{NAME}", body)[1]
    answers["cloudrun/operation_pending.json"] = pending
    answers["cloudrun/service_reconciling.json"] = web.json("GET", f"{base}/v2/{NAME}")[1]
    web.json("GET", f"{base}/v2/{pending['name']}")
    answers["cloudrun/operation_done.json"] = web.json("GET", f"{base}/v2/{pending['name']}")[1]
    st.configure(unknown_revision_mode="fail_operation", operation_polls=0)
    body = dict(answers["cloudrun/operation_done.json"]["response"])  # type: ignore[index]
    body.pop("@type")
    body["traffic"] = [{"type": REVISION, "revision": "sight-api-00099-nop", "percent": 100}]
    answers["cloudrun/operation_failed.json"] = web.json("PATCH", f"{base}/v2/{NAME}", body)[1]
    answers["cloudrun/error_conflict.json"] = web.json(
        "PATCH", f"{base}/v2/{NAME}", {**body, "etag": "stale"}
    )[1]
    return answers


@pytest.mark.parametrize(("fixture", "message"), GOLDEN_SERVICE_KINDS)
def test_golden_resource_fixtures_parse_strictly_with_the_official_types(
    golden, fixture: str, message: type
) -> None:
    parsed = message.from_json(golden.load_text(fixture), ignore_unknown_fields=False)
    assert parsed


@pytest.mark.parametrize("fixture", GOLDEN_OPERATIONS)
def test_golden_operation_fixtures_parse_strictly_as_long_running_operations(
    golden, fixture: str
) -> None:
    operation = json_format.Parse(
        golden.load_text(fixture), operations_pb2.Operation(), ignore_unknown_fields=False
    )
    assert operation.name.startswith(f"projects/{PROJECT}/locations/{REGION}/operations/")
    assert run_v2.Service.deserialize(operation.metadata.value).name == NAME
    if operation.done and operation.HasField("response"):
        assert run_v2.Service.deserialize(operation.response.value).name == NAME


def test_stand_in_answers_match_the_golden_shapes(golden, golden_answers) -> None:
    for fixture, answer in golden_answers.items():
        golden.check(fixture, answer)
    # proto3 JSON omits ``done: false``; the client polls all the same
    assert "done" not in golden_answers["cloudrun/operation_pending.json"]
    assert golden_answers["cloudrun/operation_done.json"]["done"] is True
    error = golden_answers["cloudrun/error_conflict.json"]["error"]
    assert (error["code"], error["status"]) == (409, "ABORTED")


# --------------------------------------------------------------------------- admin API


def test_admin_http_api_seeds_injects_faults_and_reports(web) -> None:
    state = CloudRunState(seed=3)
    with serve(create_app(state)) as server:
        base = server.url
        status, svc = web.json(
            "POST",
            f"{base}/_admin/services",
            {"project": PROJECT, "location": REGION, "service": SERVICE, "image": "img:1"},
        )
        assert status == 201
        assert svc["name"] == NAME
        status, rev = web.json(
            "POST",
            f"{base}/_admin/revisions",
            {
                "project": PROJECT,
                "location": REGION,
                "service": SERVICE,
                "image": "img:2",
                "no_traffic": True,
                "tag": "next",
            },
        )
        assert status == 201
        status, svc = web.json(
            "POST",
            f"{base}/_admin/traffic",
            {
                "project": PROJECT,
                "location": REGION,
                "service": SERVICE,
                "traffic": [{"type": "REVISION", "revision": short(rev["name"]), "percent": 100}],
            },
        )
        assert status == 200
        assert svc["trafficStatuses"][0]["revision"] == short(rev["name"])
        assert (
            web.json("POST", f"{base}/_admin/config", {"operation_polls": 3})[1]["operation_polls"]
            == 3
        )
        status, _ = web.json(
            "POST",
            f"{base}/_admin/faults",
            {"method": "PATCH", "path_regex": "sight-api", "status": 503, "count": 1},
        )
        assert status == 201
        assert web.request("PATCH", f"{base}/v2/{NAME}", {})[0] == 503
        status, counts = web.json("GET", f"{base}/_admin/patch-counts")
        assert counts == {"received": {NAME: 1}, "applied": {}}
        _, log = web.json("GET", f"{base}/_admin/requests?method=PATCH")
        assert [r["status"] for r in log["requests"]] == [503]
        assert web.json("POST", f"{base}/_admin/reset")[0] == 200
        assert web.json("GET", f"{base}/v2/{NAME}")[0] == 404


def test_admin_traffic_rejects_percentages_that_do_not_add_up(web, cloudrun_server) -> None:
    base = cloudrun_server.url
    web.json(
        "POST",
        f"{base}/_admin/services",
        {"project": PROJECT, "location": REGION, "service": SERVICE, "image": "img:1"},
    )
    status, body = web.json(
        "POST",
        f"{base}/_admin/traffic",
        {
            "project": PROJECT,
            "location": REGION,
            "service": SERVICE,
            "traffic": [{"type": "LATEST", "percent": 50}],
        },
    )
    assert status == 400
    assert body["error"]["status"] == "INVALID_ARGUMENT"


def test_server_stops_and_releases_its_port() -> None:
    server = serve(create_app())
    port = server.port
    server.stop()
    server.stop()  # idempotent
    with serve(create_app(), port=port) as again:
        assert again.port == port


def test_concurrent_updates_are_serialised_by_the_etag(
    clients: Clients, cloudrun_state: CloudRunState, deployed: dict[str, str]
) -> None:
    """Two writers with the same etag: exactly one wins, the other gets 409."""
    cloudrun_state.configure(operation_polls=0)
    first = clients.services.get_service(name=NAME)
    second = clients.services.get_service(name=NAME)
    first.traffic = pin(deployed["v1"])
    second.traffic = pin(deployed["v2"])
    outcomes: list[str] = []

    def write(service: run_v2.Service) -> None:
        try:
            clients.services.update_service(service=service).result(timeout=10)
            outcomes.append("ok")
        except exceptions.Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=write, args=(s,)) for s in (first, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)

    assert sorted(outcomes) == ["conflict", "ok"]
    assert cloudrun_state.get_service(PROJECT, REGION, SERVICE)["generation"] == "3"
