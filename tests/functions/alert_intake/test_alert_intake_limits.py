"""alert_intake and input that can never succeed: long multi-byte text, NUL, lone surrogates.

Pub/Sub takes attribute values of at most 1,024 bytes (not characters), keys of at most
256 bytes and 100 attributes (https://cloud.google.com/pubsub/quotas#resource_limits), and
nothing encodes a lone surrogate (``"\\ud800"`` in JSON) as UTF-8. A body like that is
either published, with attributes made to fit, or refused with 400 and the reason; it is
never answered 5xx, which would only make Cloud Monitoring retry it in vain. Checked
against the real emulator, whose own limits are looser, by reading the message back.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.runtime import Deps
from shared.settings import Settings
from tests.functions.alert_intake.test_alert_intake import (
    GOOD,
    client,
    golden_body,
    intake_client,
    pubsub,
    pull,
    sm,
    subscription,
)

__all__ = ["client", "pubsub", "sm", "subscription"]


@pytest.fixture
def roomy(settings: Settings, deps: Deps, sm: str) -> Any:
    """The production body limit (64 KiB): room for 2,000 four-byte characters."""
    return intake_client(settings, deps, sm, max_body_bytes=65536)


def body_with(*, utf8: bool = False, **changes: Any) -> bytes:
    body = json.loads(golden_body("incident_1_2_open"))
    for path, value in changes.items():
        target = body["incident"]
        *parents, leaf = path.split("__")
        for parent in parents:
            target = target[parent]
        target[leaf] = value
    # ensure_ascii (the default) sends a lone surrogate as the escape \ud800; utf8=True
    # sends multi-byte characters as themselves, as Cloud Monitoring does.
    return json.dumps(body, ensure_ascii=not utf8).encode()


def assert_within_pubsub_limits(attributes: dict[str, str]) -> None:
    assert len(attributes) <= 100
    for key, value in attributes.items():
        assert len(key.encode("utf-8")) <= 256, key
        assert len(value.encode("utf-8")) <= 1024, key


def publish(client: Any, pubsub: Any, subscription: str, body: bytes) -> Any:
    response = client.post("/", data=body, headers=GOOD, content_type="application/json")
    assert response.status_code == 202, response.get_json()
    [message] = pull(pubsub[1], subscription, 1)
    assert message.data == body, "the body is published byte for byte"
    return message


@pytest.mark.parametrize("char", ["é", "😀", "a"], ids=["2-byte", "4-byte", "ascii"])
def test_a_long_policy_name_is_cut_on_a_character_boundary_within_1024_bytes(
    roomy: Any, pubsub: Any, subscription: str, char: str
) -> None:
    policy = char * 2000
    message = publish(roomy, pubsub, subscription, body_with(utf8=True, policy_name=policy))
    attributes = dict(message.attributes)
    assert_within_pubsub_limits(attributes)
    cut = attributes["policy"]
    assert policy.startswith(cut), "a prefix of whole characters"
    assert len(cut.encode("utf-8")) > 1024 - len(char.encode("utf-8")), "as much as fits"


def test_a_long_multi_byte_incident_id_is_published_with_an_attribute_that_fits(
    roomy: Any, pubsub: Any, subscription: str
) -> None:
    incident_id = "0." + "😀" * 2000
    body = body_with(utf8=True, incident_id=incident_id)
    message = publish(roomy, pubsub, subscription, body)
    assert_within_pubsub_limits(dict(message.attributes))
    assert incident_id.startswith(message.attributes["incident_id"])


@pytest.mark.parametrize("bad", ["\x00", "\ud800", "\udfff"], ids=["nul", "high", "low"])
def test_poison_text_in_shown_fields_is_replaced_in_attributes_and_published(
    client: Any, pubsub: Any, subscription: str, bad: str
) -> None:
    body = body_with(policy_name=f"5xx {bad} ratio", summary=f"odd {bad} text")
    message = publish(client, pubsub, subscription, body)
    assert message.attributes["policy"] == "5xx \ufffd ratio"
    assert_within_pubsub_limits(dict(message.attributes))


@pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])
@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("incident_id", "0.abc", "incident.incident_id"),
        ("resource__labels__service_name", "sight-api", "incident.resource.labels.service_name"),
        ("policy_user_labels__auto_rollback", "true", "incident.policy_user_labels"),
    ],
    ids=["incident_id", "service_name", "policy_user_labels"],
)
def test_poison_text_in_a_name_or_label_is_400_with_the_reason_and_publishes_nothing(
    client: Any, pubsub: Any, subscription: str, path: str, value: str, field: str, bad: str
) -> None:
    response = client.post("/", data=body_with(**{path: value + bad}), headers=GOOD)
    assert response.status_code == 400
    assert field in response.get_json()["error"]["message"]
    assert client.post("/", data=golden_body("incident_1_1"), headers=GOOD).status_code == 202
    [only] = pull(pubsub[1], subscription, 1)
    assert json.loads(only.data)["version"] == "1.1"


def test_a_body_that_is_not_utf8_is_400_not_5xx(client: Any) -> None:
    response = client.post("/", data=b'{"version": "1.2", "incident": "\xff\xfe"}', headers=GOOD)
    assert response.status_code == 400
