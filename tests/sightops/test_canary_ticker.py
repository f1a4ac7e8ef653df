"""`make dev`'s canary ticker: Cloud Scheduler's job on the local stack (docs/canary.md,
"Why Cloud Scheduler wakes it"), publishing to the emulator's ``ops-events``."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

from shared.events import CanaryTick, EventType, parse_ops_message
from sightops.pubsub_admin import ensure_subscription, ensure_topic
from sightops.stack import Stack, StackConfig, StackPorts, delete_project


def test_the_dev_stack_publishes_a_canary_tick_for_every_canary_each_tick_s(
    tmp_path: Path,
) -> None:
    host = f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    os.environ["PUBSUB_EMULATOR_HOST"] = host
    from google.cloud import pubsub_v1

    project = f"tick-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    ensure_topic(publisher, project, "ops-events")
    subscription = ensure_subscription(subscriber, project, "ticks", "ops-events")
    stack = Stack(
        StackConfig(
            state_dir=tmp_path,
            project=project,
            ports=StackPorts.free(),
            canary_ticker=True,
            extra_env={"CANARY__TICK_S": "0.2", "PUBSUB_EMULATOR_HOST": host},
            explicit_env_wins=False,
        )
    )
    try:
        dict(stack.steps())["canary ticker"]()
        ticks = []
        deadline = time.monotonic() + 10
        while len(ticks) < 2 and time.monotonic() < deadline:
            response = subscriber.pull(
                request={"subscription": subscription, "max_messages": 10}, timeout=5
            )
            ticks += [
                parse_ops_message(m.message.data, dict(m.message.attributes))
                for m in response.received_messages
            ]
    finally:
        stack.stopping.set()
        delete_project(host, project)
    assert len(ticks) >= 2
    assert {t.type for t in ticks} == {EventType.CANARY_TICK}
    assert all(t.data == CanaryTick() for t in ticks), "no service: every running canary"
    assert len({t.id for t in ticks}) == len(ticks)
