"""A function that exercises every runtime path; served by functions-framework in tests."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from shared.errors import InvalidEventError, PermanentError, TransientError
from shared.runtime import Context, Outcome, pubsub_handler


def parse_json(data: bytes, attributes: Mapping[str, str]) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except ValueError as exc:
        raise InvalidEventError(f"data is not JSON: {exc.msg}") from exc
    if not isinstance(value, dict):
        raise InvalidEventError("data must be a JSON object")
    return value


@pubsub_handler("sample", parse=parse_json, max_age=timedelta(minutes=10))
def sample(event: dict[str, Any], ctx: Context) -> Outcome:
    mode = ctx.message.attributes.get("mode", "ok")
    if mode == "transient-until":
        attempts = int(ctx.deps.redis.incr(f"sample:{event['key']}"))
        if attempts < int(event["succeed_on"]):
            raise TransientError(f"attempt {attempts} fails on purpose")
    elif mode == "permanent":
        raise PermanentError("this event can never succeed")
    elif mode == "bug":
        raise KeyError("unexpected")
    time.sleep(float(event.get("sleep", 0)))
    ctx.record_action("sample", "done", detail={"key": event.get("key")})
    return Outcome.handled(key=event.get("key"))
