"""`sightops dlq list|show|replay`: dead letters you can act on, through the real emulator
and database (docs/runbooks/rejected-and-dead-lettered-messages.md).

Every test works in its own Pub/Sub project on the emulator (GCP_PROJECT), so the topic
and hold subscription names are the production ones and parallel runs never meet.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import functions_framework
import pytest
from click.testing import Result
from sqlalchemy import text
from typer.testing import CliRunner

from shared.dlq import ORIGIN_KEY
from shared.runtime import Deps
from shared.settings import get_settings
from sightops.cli import app
from sightops.pubsub_admin import (
    ensure_dead_letter_hold,
    ensure_subscription,
    ensure_topic,
    setup,
    teardown,
)
from sightops.topology import FunctionSpec, dead_letter_hold, dead_letter_topic
from tests.helpers import ROOT, envelope, push

pytestmark = pytest.mark.filterwarnings("ignore:The return_immediately flag:DeprecationWarning")
runner = CliRunner()
NOTIFY = ROOT / "functions" / "notify" / "main.py"
Cli = Callable[..., Result]


class Emulator:
    """One private project on the Pub/Sub emulator."""

    def __init__(self, project: str) -> None:
        os.environ.setdefault("PUBSUB_EMULATOR_HOST", "127.0.0.1:8681")
        from google.cloud import pubsub_v1

        self.project = project
        self.publisher = pubsub_v1.PublisherClient()
        self.subscriber = pubsub_v1.SubscriberClient()

    def listen(self, topic: str) -> Callable[[], list[Any]]:
        """A pull subscription on ``topic``; the returned function takes what arrived."""
        ensure_topic(self.publisher, self.project, topic)
        sub = ensure_subscription(self.subscriber, self.project, f"listen-{topic}", topic)

        def arrived(wait_s: float = 5.0) -> list[Any]:
            deadline, seen = time.monotonic() + wait_s, []
            while time.monotonic() < deadline:
                response = self.subscriber.pull(
                    request={"subscription": sub, "max_messages": 10, "return_immediately": True}
                )
                if response.received_messages:
                    self.subscriber.acknowledge(
                        request={
                            "subscription": sub,
                            "ack_ids": [m.ack_id for m in response.received_messages],
                        }
                    )
                    seen += [m.message for m in response.received_messages]
                elif seen:
                    break
                else:
                    time.sleep(0.2)
            return seen

        return arrived

    def dead_letter(
        self, function: str, topic: str, data: bytes, attributes: dict[str, str]
    ) -> str:
        """What Pub/Sub does after the last failed attempt: the original bytes and
        attributes, plus its CloudPubSubDeadLetterSource* attributes, on the dead-letter
        topic (whose hold subscription keeps it)."""
        ensure_dead_letter_hold(self.publisher, self.subscriber, self.project, function, topic)
        forwarded = {
            **attributes,
            "CloudPubSubDeadLetterSourceDeliveryCount": "5",
            "CloudPubSubDeadLetterSourceSubscription": f"{function}--{topic}",
            "CloudPubSubDeadLetterSourceSubscriptionProject": self.project,
            "CloudPubSubDeadLetterSourceTopicPublishTime": "2026-11-30T10:00:00.000+00:00",
        }
        path = f"projects/{self.project}/topics/{dead_letter_topic(function, topic)}"
        return str(self.publisher.publish(path, data, **forwarded).result(timeout=10))


@pytest.fixture
def emulator() -> Emulator:
    return Emulator(f"dlq-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def dlq(database_url: str, emulator: Emulator) -> Cli:
    """``dlq("list", "--json", input=..., env=...)``: the CLI on the test database, in the
    emulator project of this test."""

    def invoke(*args: str, input: str | None = None, env: dict[str, str] | None = None) -> Result:
        get_settings.cache_clear()  # the CLI reads its settings from env
        try:
            return runner.invoke(
                app,
                ["dlq", *args],
                input=input,
                env={"GCP_PROJECT": emulator.project, "COLUMNS": "200", **(env or {})},
            )
        finally:
            get_settings.cache_clear()

    return invoke


@pytest.fixture
def notify(deps: Deps) -> Any:
    """The notify function under functions-framework, on the test database."""
    return functions_framework.create_app(
        target="notify", source=str(NOTIFY), signature_type="cloudevent"
    ).test_client()


def listed(dlq: Cli, *args: str) -> list[dict[str, Any]]:
    result = dlq("list", "--json", *args)
    assert result.exit_code == 0, result.output
    return list(json.loads(result.stdout))


def replay_actions(deps: Deps, event_id: str) -> list[Any]:
    with deps.engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT actor, status, detail FROM ops.actions"
                    " WHERE kind = 'dlq_replay' AND trigger_event_id = :e ORDER BY id"
                ),
                {"e": event_id},
            )
        )


def poison(notify: Any, topic: str = "smoke-tests") -> tuple[bytes, dict[str, str]]:
    """Bad JSON with our event's attributes, pushed into notify: rejected and kept."""
    data = b'{"service": "sight-api", "revision": "sight-api-00042", "checks": [\xe2\x9c\x93'
    attributes = {
        "type": "sight.ops.smoke.failed",
        "id": f"poison-{uuid.uuid4().hex}",
        "source": "test_dlq",
        "note": "caf\u00e9 \u2713",
    }
    assert push(notify, topic, envelope(data, attributes)).status_code == 200
    return data, attributes


def test_a_rejected_message_nested_past_the_json_parser_is_still_listed(
    notify: Any, dlq: Cli
) -> None:
    # The fuzz proof stores such messages: guessing their topic must not crash the listing.
    data = b'{"a": ' * 5_000 + b"1" + b"}" * 5_000
    attributes = {"id": f"deep-{uuid.uuid4().hex}", "source": "test_dlq"}
    assert push(notify, "smoke-tests", envelope(data, attributes)).status_code == 200
    table = dlq("list", "--consumer", "notify")
    assert table.exit_code == 0, table.output
    assert attributes["id"] in {e["event_id"] for e in listed(dlq, "--source", "rejected")}


def rejected_entry(dlq: Cli, event_id: str) -> dict[str, Any]:
    [entry] = [e for e in listed(dlq, "--source", "rejected") if e["event_id"] == event_id]
    return entry


# --------------------------------------------------------------------------- rejected


def test_a_rejected_poison_message_is_listed_with_its_original_topic(notify: Any, dlq: Cli) -> None:
    data, attributes = poison(notify)
    entry = rejected_entry(dlq, attributes["id"])
    assert entry["consumer"] == "notify"
    assert (entry["topic"], entry["topic_from"]) == ("smoke-tests", "stored")
    assert entry["status"] == "kept"
    assert entry["attributes"] == attributes  # the reserved origin key is not an attribute
    assert entry["payload_bytes"] == len(data)
    table = dlq("list", "--consumer", "notify")
    assert table.exit_code == 0 and entry["id"] in table.stdout


def test_replay_republishes_a_rejected_message_byte_for_byte_and_records_it(
    notify: Any, dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("smoke-tests")
    data, attributes = poison(notify)
    entry = rejected_entry(dlq, attributes["id"])

    result = dlq("replay", entry["id"], "--yes", "--actor", "alice")

    assert result.exit_code == 0, result.output
    [message] = arrived()
    assert bytes(message.data) == data
    assert dict(message.attributes) == attributes
    [action] = replay_actions(deps, attributes["id"])
    assert (action.actor, action.status) == ("manual:alice", "succeeded")
    assert action.detail["topic"] == "smoke-tests"
    assert action.detail["message_id"] == message.message_id
    assert action.detail["source"] == "rejected"
    assert rejected_entry(dlq, attributes["id"])["status"] == "replayed"


def test_a_second_replay_of_a_rejected_message_needs_force(
    notify: Any, dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("smoke-tests")
    data, attributes = poison(notify)
    row_id = rejected_entry(dlq, attributes["id"])["id"]
    assert dlq("replay", row_id, "--yes").exit_code == 0
    assert len(arrived()) == 1

    again = dlq("replay", row_id, "--yes")
    assert again.exit_code == 2
    assert "already replayed" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.output
    assert arrived(wait_s=1.0) == []

    forced = dlq("replay", row_id, "--yes", "--force")
    assert forced.exit_code == 0, forced.output
    [message] = arrived()
    assert bytes(message.data) == data
    assert [a.detail["replay_number"] for a in replay_actions(deps, attributes["id"])] == [1, 2]


def test_replay_asks_first_and_a_no_publishes_nothing(
    notify: Any, dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("smoke-tests")
    _, attributes = poison(notify)
    row_id = rejected_entry(dlq, attributes["id"])["id"]

    declined = dlq("replay", row_id, input="n\n")
    no_stdin = dlq("replay", row_id)  # CI: nothing to read, so nothing is done

    assert declined.exit_code == 1 and "Replay 1 message(s)" in declined.output
    assert no_stdin.exit_code == 1
    assert arrived(wait_s=1.0) == []
    assert replay_actions(deps, attributes["id"]) == []
    assert rejected_entry(dlq, attributes["id"])["status"] == "kept"


def test_a_dry_run_says_where_it_would_go_and_does_nothing(
    notify: Any, dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("smoke-tests")
    _, attributes = poison(notify)
    row_id = rejected_entry(dlq, attributes["id"])["id"]

    result = dlq("replay", row_id, "--dry-run")

    assert result.exit_code == 0, result.output
    assert "smoke-tests" in result.stdout and "dry run" in result.stdout
    assert arrived(wait_s=1.0) == []
    assert replay_actions(deps, attributes["id"]) == []


def test_all_replays_every_pending_message_of_one_consumer(
    notify: Any, dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("ops-events")
    started = datetime.now(UTC).isoformat()  # rows of earlier tests are not this one's
    first = poison(notify, "ops-events")[1]["id"]
    second = poison(notify, "ops-events")[1]["id"]

    assert dlq("replay", "--all", "--yes").exit_code == 2  # --all needs --consumer
    result = dlq(
        "replay",
        "--all",
        "--consumer",
        "notify",
        "--source",
        "rejected",
        "--since",
        started,
        "--yes",
    )

    assert result.exit_code == 0, result.output
    ids = {m.attributes["id"] for m in arrived()}
    assert {first, second} <= ids
    assert replay_actions(deps, first) and replay_actions(deps, second)


def insert_rejected(
    deps: Deps, consumer: str, payload: bytes, attributes: dict[str, Any], reason: str
) -> str:
    """A row as an older runtime (no stored topic) or a capped payload left it."""
    with deps.engine.begin() as conn:
        return str(
            conn.execute(
                text(
                    "INSERT INTO ops.rejected_events (consumer, event_id, reason, payload,"
                    " attributes) VALUES (:c, :e, :r, :p, CAST(:a AS jsonb)) RETURNING id"
                ),
                {
                    "c": consumer,
                    "e": f"seeded-{uuid.uuid4().hex}",
                    "r": reason,
                    "p": payload,
                    "a": json.dumps(attributes),
                },
            ).scalar_one()
        )


def test_the_topic_of_a_row_kept_without_one_is_derived_from_its_consumer(
    dlq: Cli, deps: Deps
) -> None:
    single = insert_rejected(deps, "kpi_refresh", b"{}", {}, "bad")
    by_type = insert_rejected(deps, "notify", b"{", {"type": "sight.ops.smoke.passed"}, "bad")
    unknown = insert_rejected(deps, "notify", b"{", {}, "bad")
    delivery = json.dumps(envelope(b"x", {"type": "sight.ops.smoke.passed"})).encode()
    whole_delivery = insert_rejected(deps, "migrate", delivery, {}, "message data is not ...")

    entries = {e["id"]: e for e in listed(dlq, "--source", "rejected")}

    assert (entries[single]["topic"], entries[single]["topic_from"]) == ("kpi-refresh", "derived")
    assert entries[by_type]["topic"] == "smoke-tests"
    assert (entries[unknown]["topic"], entries[unknown]["topic_from"]) == (None, "unknown")
    assert entries[whole_delivery]["topic"] is None  # an envelope is not the message
    refused = dlq("replay", unknown, "--yes")
    assert refused.exit_code == 2 and "--topic" in refused.stderr


def test_a_capped_payload_is_never_replayed(dlq: Cli, deps: Deps) -> None:
    reason = "not JSON [payload capped: first 1024 of 9000000 bytes kept; sha256 of the whole ab]"
    row_id = insert_rejected(
        deps, "notify", b"{" * 1024, {ORIGIN_KEY: {"topic": "ops-events"}}, reason
    )
    result = dlq("replay", row_id, "--yes", "--force")
    assert result.exit_code == 2
    assert "cut message" in result.stderr


def test_show_decodes_the_payload_and_redacts_secrets(dlq: Cli, deps: Deps) -> None:
    payload = json.dumps({"service": "sight-api", "password": "hunter2-do-not-print"}).encode()
    row_id = insert_rejected(
        deps,
        "notify",
        payload,
        {"type": "sight.ops.smoke.failed", "callback": "https://ops:s3cr3t-pw@example.com/x"},
        "invalid payload: token=tok-do-not-print",
    )

    shown = dlq("show", row_id)
    as_json = json.loads(dlq("show", row_id, "--json").stdout)

    assert shown.exit_code == 0, shown.output
    assert '"service": "sight-api"' in shown.stdout  # decoded, pretty JSON
    assert "invalid payload" in shown.stdout
    for secret in ("hunter2-do-not-print", "s3cr3t-pw", "tok-do-not-print"):
        assert secret not in shown.output
        assert secret not in json.dumps(as_json)
    assert "[REDACTED]" in shown.stdout
    assert as_json["payload_format"] == "json"


def test_show_gives_bytes_that_are_not_text_as_base64(dlq: Cli, deps: Deps) -> None:
    row_id = insert_rejected(deps, "notify", b"\xff\xfe\x00binary", {}, "not UTF-8")
    report = json.loads(dlq("show", row_id, "--json").stdout)
    assert (report["payload_format"], report["payload"]) == ("base64", "//4AYmluYXJ5")


# --------------------------------------------------------------------------- dead letters


def dead_entries(dlq: Cli) -> list[dict[str, Any]]:
    return listed(dlq, "--source", "dead-letter")


def test_a_dead_letter_is_listed_shown_and_replayed_then_acknowledged(
    dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    arrived = emulator.listen("monitoring-alerts")
    data = b'{"incident": {"incident_id": "0.dlq", "state": "open"}, "version": "1.2"}'
    attributes = {"origin": "test_dlq", "id": f"dl-{uuid.uuid4().hex}"}
    message_id = emulator.dead_letter("rollback", "monitoring-alerts", data, attributes)
    letter_id = f"rollback--monitoring-alerts/{message_id}"

    [entry] = dead_entries(dlq)
    assert dead_entries(dlq) == [entry]  # listing twice: nothing was lost
    assert entry["id"] == letter_id
    assert (entry["consumer"], entry["topic"]) == ("rollback", "monitoring-alerts")
    assert entry["attributes"] == attributes
    assert entry["dead_letter_attributes"]["CloudPubSubDeadLetterSourceDeliveryCount"] == "5"

    shown = dlq("show", letter_id)
    assert shown.exit_code == 0, shown.output
    assert "dead-lettered after 5 delivery attempts" in shown.stdout
    assert '"incident_id": "0.dlq"' in shown.stdout
    assert "CloudPubSubDeadLetterSourceSubscription = rollback--monitoring-alerts" in shown.stdout

    result = dlq("replay", letter_id, "--yes")

    assert result.exit_code == 0, result.output
    [message] = arrived()
    assert bytes(message.data) == data
    assert dict(message.attributes) == attributes  # Pub/Sub's additions are not replayed
    [action] = replay_actions(deps, attributes["id"])
    assert action.detail["source"] == "dead-letter" and action.detail["id"] == letter_id
    assert dead_entries(dlq) == []  # acknowledged on the hold subscription


def test_a_dead_letter_whose_replay_fails_stays_on_its_hold(
    dlq: Cli, emulator: Emulator, deps: Deps
) -> None:
    # The original topic does not exist in this project: the publish is refused.
    attributes = {"id": f"dl-{uuid.uuid4().hex}"}
    message_id = emulator.dead_letter("notify", "ops-events", b'{"x": 1}', attributes)

    result = dlq("replay", f"notify--ops-events/{message_id}", "--yes")

    assert result.exit_code == 2
    assert "publish to ops-events failed" in result.stderr
    assert "Traceback" not in result.output
    assert [e["id"] for e in dead_entries(dlq)] == [f"notify--ops-events/{message_id}"]
    assert replay_actions(deps, attributes["id"]) == []


def test_setup_creates_the_dead_letter_hold_subscriptions_and_keeps_them(
    emulator: Emulator,
) -> None:
    fn = FunctionSpec("dlqprobe", 1, "cloudevent", ("ops-events",))
    host = os.environ["PUBSUB_EMULATOR_HOST"]
    created = setup(host, emulator.project, [fn], timeline=False)
    hold = f"projects/{emulator.project}/subscriptions/{dead_letter_hold('dlqprobe', 'ops-events')}"
    try:
        assert hold.endswith("/dlqprobe--ops-events--dead-letter")  # as terraform names it
        assert hold not in created  # never torn down with the push subscriptions
        subscription = emulator.subscriber.get_subscription(subscription=hold)
        assert subscription.topic.endswith("/topics/dlqprobe--ops-events--dead-letter")
    finally:
        teardown(host, [*created, hold])


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "999999999"), "no rejected message with id 999999999"),
        (("show", "nope"), "ids are numbers"),
        (("show", "nobody--nothing/1"), "no dead-letter hold subscription"),
        (("replay", "999999999", "--yes"), "no rejected message with id 999999999"),
        (("list", "--since", "yesterday"), "--since 'yesterday'"),
    ],
    ids=["unknown-id", "malformed-id", "unknown-hold", "replay-unknown", "bad-since"],
)
def test_bad_input_is_one_clear_line_with_exit_code_2(
    dlq: Cli, args: tuple[str, ...], message: str
) -> None:
    result = dlq(*args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output


def test_no_database_is_one_line_naming_it_and_the_fix_with_exit_code_3(dlq: Cli) -> None:
    down = "postgresql+asyncpg://sight:sight-local@127.0.0.1:1/sight"  # pragma: allowlist secret
    result = dlq("list", "--source", "rejected", env={"DATABASE_URL": down})
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: PostgreSQL is unreachable at 127.0.0.1:1/sight (DATABASE_URL)")
    assert "make dev" in line
    assert "sight-local" not in result.output and "Traceback" not in result.output


def test_no_emulator_is_one_line_naming_it_and_the_fix_with_exit_code_3(dlq: Cli) -> None:
    result = dlq("list", "--source", "dead-letter", env={"PUBSUB_EMULATOR_HOST": "127.0.0.1:1"})
    assert result.exit_code == 3
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("error: Pub/Sub is unreachable at 127.0.0.1:1 (PUBSUB_EMULATOR_HOST)")
    assert "make dev" in line
