"""The Secret Manager stand-in, driven by the official SecretManagerServiceClient (REST)."""

from __future__ import annotations

import base64
import json

import google_crc32c
import pytest
from google.api_core import exceptions
from google.api_core import retry as retries
from google.auth.credentials import AnonymousCredentials
from google.cloud import secretmanager

from standins import RunningServer
from standins.secretmanager import SecretManagerState

PROJECT = "sight-local"
WEBHOOK = "https://hooks.example.invalid/services/T0TEAM/B0BOT/not-a-real-token"


def reference_crc32c(data: bytes) -> int:
    return int(google_crc32c.value(data))


@pytest.fixture
def sm(secrets_server: RunningServer) -> secretmanager.SecretManagerServiceClient:
    return secretmanager.SecretManagerServiceClient(
        transport="rest",
        client_options={"api_endpoint": secrets_server.url},
        credentials=AnonymousCredentials(),
    )


def name(secret: str, version: str = "latest") -> str:
    return f"projects/{PROJECT}/secrets/{secret}/versions/{version}"


def test_access_secret_version_returns_the_payload_and_a_matching_crc32c(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("slack-webhook-alerts", WEBHOOK)

    response = sm.access_secret_version(name=name("slack-webhook-alerts"))

    assert response.payload.data == WEBHOOK.encode()
    assert response.payload.data_crc32c == reference_crc32c(response.payload.data)
    # like the real service: the project by number, the version by its number
    assert response.name == "projects/123456789012/secrets/slack-webhook-alerts/versions/1"


def test_latest_is_the_most_recently_created_version(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("db-password", "old")
    secrets_state.add_version("db-password", "new")

    assert sm.access_secret_version(name=name("db-password")).payload.data == b"new"
    assert sm.access_secret_version(name=name("db-password", "1")).payload.data == b"old"
    assert sm.access_secret_version(name=name("db-password")).name.endswith("/versions/2")


def test_disabled_latest_version_fails_with_failed_precondition_not_an_older_value(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("db-password", "old")
    secrets_state.add_version("db-password", "new")
    secrets_state.set_version_state("db-password", 2, "DISABLED")

    # Over REST, api_core maps 400 to BadRequest (FAILED_PRECONDITION is in the body).
    with pytest.raises(exceptions.BadRequest, match="DISABLED state"):
        sm.access_secret_version(name=name("db-password"))
    assert sm.access_secret_version(name=name("db-password", "1")).payload.data == b"old"


def test_unknown_secret_or_version_is_not_found(
    sm: secretmanager.SecretManagerServiceClient,
    secrets_state: SecretManagerState,
    web,
    secrets_server: RunningServer,
) -> None:
    secrets_state.add_version("present", "v")

    with pytest.raises(exceptions.NotFound):
        sm.access_secret_version(name=name("absent"))
    with pytest.raises(exceptions.NotFound):
        sm.access_secret_version(name=name("present", "7"))
    status, body = web.json("GET", f"{secrets_server.url}/v1/{name('absent')}:access")
    assert status == 404
    assert body["error"]["status"] == "NOT_FOUND"


def test_injected_wrong_checksum_is_caught_by_comparing_with_crc32c(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("api-key", "k3y")
    secrets_state.corrupt_next_checksum()

    corrupted = sm.access_secret_version(name=name("api-key"))
    healthy = sm.access_secret_version(name=name("api-key"))

    assert corrupted.payload.data == b"k3y"
    assert corrupted.payload.data_crc32c != reference_crc32c(corrupted.payload.data)
    assert healthy.payload.data_crc32c == reference_crc32c(healthy.payload.data)


def test_injected_503_raises_service_unavailable_without_retry(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("api-key", "k3y")
    secrets_state.inject_fault(503, path_regex=r"/secrets/api-key/")

    with pytest.raises(exceptions.ServiceUnavailable):
        sm.access_secret_version(name=name("api-key"), retry=None)


def test_injected_503_is_retried_by_an_access_retry_policy(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    # AccessSecretVersion's default retry covers UNAVAILABLE and RESOURCE_EXHAUSTED
    # (initial 2 s); a shorter policy of the same kind keeps the test fast.
    secrets_state.add_version("api-key", "k3y")
    secrets_state.inject_fault(503, count=2)
    quick = retries.Retry(
        initial=0.01,
        maximum=0.05,
        predicate=retries.if_exception_type(exceptions.ServiceUnavailable),
        timeout=10,
    )

    assert sm.access_secret_version(name=name("api-key"), retry=quick).payload.data == b"k3y"
    assert [r["status"] for r in secrets_state.requests()] == [503, 503, 200]
    assert secrets_state.access_count("api-key") == 3


def test_regional_secret_access(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    secrets_state.add_version("regional", "here")

    response = sm.access_secret_version(
        name=f"projects/{PROJECT}/locations/europe-west1/secrets/regional/versions/latest"
    )

    assert response.payload.data == b"here"
    assert response.name.startswith("projects/123456789012/locations/europe-west1/")


def test_binary_payloads_round_trip(
    sm: secretmanager.SecretManagerServiceClient, secrets_state: SecretManagerState
) -> None:
    blob = bytes(range(256))
    secrets_state.add_version("blob", blob)
    assert sm.access_secret_version(name=name("blob")).payload.data == blob


def test_seed_file_adds_one_version_per_secret(tmp_path, secrets_state: SecretManagerState) -> None:
    seed = tmp_path / "secrets.json"
    seed.write_text(json.dumps({"alert-basic-auth": "user:pass", "slack-webhook": WEBHOOK}))

    secrets_state.seed_file(seed)

    assert secrets_state.secrets().keys() == {"alert-basic-auth", "slack-webhook"}
    answer = secrets_state.access(PROJECT, "alert-basic-auth", "latest")
    assert base64.b64decode(answer["payload"]["data"]) == b"user:pass"


def test_admin_http_api_adds_versions_faults_and_corruption(
    secrets_server: RunningServer, sm: secretmanager.SecretManagerServiceClient, web
) -> None:
    base = secrets_server.url
    assert web.json("POST", f"{base}/_admin/secrets", {"secret": "s", "value": "one"}) == (
        201,
        {"secret": "s", "version": 1},
    )
    web.json(
        "POST",
        f"{base}/_admin/secrets",
        {"secret": "s", "value_b64": base64.b64encode(b"\x00two").decode()},
    )
    assert sm.access_secret_version(name=name("s")).payload.data == b"\x00two"
    _, listed = web.json("GET", f"{base}/_admin/secrets")
    assert [v["version"] for v in listed["secrets"]["s"]] == [1, 2]
    assert "one" not in json.dumps(listed)  # the admin listing never shows values

    web.json("POST", f"{base}/_admin/corrupt-checksum", {"count": 1})
    bad = sm.access_secret_version(name=name("s"))
    assert bad.payload.data_crc32c != reference_crc32c(bad.payload.data)

    web.json("POST", f"{base}/_admin/faults", {"status": 503, "count": 1})
    with pytest.raises(exceptions.ServiceUnavailable):
        sm.access_secret_version(name=name("s"), retry=None)

    web.json(
        "POST", f"{base}/_admin/version-state", {"secret": "s", "version": 2, "state": "DESTROYED"}
    )
    with pytest.raises(exceptions.BadRequest, match="DESTROYED"):
        sm.access_secret_version(name=name("s"))
    _, log = web.json("GET", f"{base}/_admin/requests")
    assert [r["status"] for r in log["requests"]] == [200, 200, 503, 400]
    web.json("POST", f"{base}/_admin/reset")
    with pytest.raises(exceptions.NotFound):
        sm.access_secret_version(name=name("s"))


def test_golden_access_answer_shape_parses_strictly(
    golden, secrets_server: RunningServer, secrets_state: SecretManagerState, web
) -> None:
    secrets_state.add_version("slack-webhook-alerts", WEBHOOK)
    _, answer = web.json("GET", f"{secrets_server.url}/v1/{name('slack-webhook-alerts')}:access")
    _, missing = web.json("GET", f"{secrets_server.url}/v1/{name('nope')}:access")

    golden.check("secretmanager/access_secret_version.json", answer)
    golden.check("secretmanager/error_not_found.json", missing)
    text = golden.load_text("secretmanager/access_secret_version.json")
    parsed = secretmanager.AccessSecretVersionResponse.from_json(text, ignore_unknown_fields=False)
    assert parsed.payload.data_crc32c == reference_crc32c(parsed.payload.data)
    assert isinstance(json.loads(text)["payload"]["dataCrc32c"], str)  # int64 -> JSON string
