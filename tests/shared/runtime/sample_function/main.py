"""A function that exercises every runtime path; served by functions-framework in tests."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from shared.errors import InvalidEventError, PermanentError, SecretError, TransientError
from shared.runtime import Context, Outcome, PubsubMessage, pubsub_handler


def parse_json(data: bytes, attributes: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise InvalidEventError(f"data is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise InvalidEventError("data must be a JSON object")
    if "epoch" in value:  # a parser bug: an out-of-range number crashes it
        value["at"] = datetime.fromtimestamp(value["epoch"], tz=UTC)
    return value


def sample_key(event: dict[str, Any], message: PubsubMessage) -> str:
    if "bad_key" in event:  # a dedupe-key bug
        return str(1 // int(event["bad_key"]))
    return message.event_id


@pubsub_handler("sample", parse=parse_json, max_age=timedelta(minutes=10), dedupe_key=sample_key)
def sample(event: dict[str, Any], ctx: Context) -> Outcome:
    mode = ctx.message.attributes.get("mode", "ok")
    if mode == "transient-until":
        attempts = int(ctx.deps.redis.incr(f"sample:{event['key']}"))
        if attempts < int(event["succeed_on"]):
            raise TransientError(f"attempt {attempts} fails on purpose")
    elif mode == "permanent":
        raise PermanentError("this event can never succeed")
    elif mode == "secret":
        raise SecretError("cannot access secret projects/p/secrets/s/versions/1: NotFound")
    elif mode == "bug":
        raise KeyError("unexpected")
    elif mode == "publish":  # a message published during the delivery (docs/release.md)
        ctx.deps.publisher.publish(event["topic"], b"{}", {"type": "test.published"})
    elif mode == "sql":  # a statement of the handler's own, after an effect to roll back
        ctx.record_action("sample", "before sql", detail={"key": event.get("key")})
        ctx.conn.execute(text(event["sql"]), event.get("params", {}))
    time.sleep(float(event.get("sleep", 0)))
    ctx.record_action("sample", "done", detail={"key": event.get("key")})
    return Outcome.handled(key=event.get("key"))
