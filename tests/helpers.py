"""Builders for the two real delivery forms, shared by the function tests."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT = "sight-local"
ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "fixtures" / "golden"


def envelope(
    data: bytes | str | Mapping[str, Any],
    attributes: Mapping[str, str] | None = None,
    message_id: str | None = None,
    publish_time: datetime | None = None,
    subscription: str = "projects/sight-local/subscriptions/test",
) -> dict[str, Any]:
    """A raw Pub/Sub push body, exactly as the emulator and Pub/Sub send it."""
    if isinstance(data, Mapping):
        data = json.dumps(data)
    if isinstance(data, str):
        data = data.encode()
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": dict(attributes or {}),
            "messageId": message_id or str(uuid.uuid4().int)[:16],
            "publishTime": (publish_time or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
        },
        "subscription": subscription,
    }


def push(client: Any, topic: str, body: Mapping[str, Any]) -> Any:
    """POST a raw push body to a functions-framework test client (path names the topic)."""
    return client.post(f"/projects/{PROJECT}/topics/{topic}", json=body)


def post_cloudevent(client: Any, topic: str, body: Mapping[str, Any]) -> Any:
    """POST the Eventarc form: a binary-mode CloudEvent whose data is the envelope."""
    headers = {
        "ce-id": body["message"]["messageId"],
        "ce-specversion": "1.0",
        "ce-source": f"//pubsub.googleapis.com/projects/{PROJECT}/topics/{topic}",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-time": body["message"]["publishTime"],
        "Content-Type": "application/json",
    }
    return client.post("/", data=json.dumps(body), headers=headers)


def rejected_events(engine: Any, consumer: str, event_id: str) -> list[Any]:
    """What ``ops.rejected_events`` kept for one delivery (reason, payload, attributes)."""
    from sqlalchemy import text

    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT event_id, reason, payload, attributes FROM ops.rejected_events"
                    " WHERE consumer = :c AND event_id = :id ORDER BY id"
                ),
                {"c": consumer, "id": event_id},
            ).all()
        )
