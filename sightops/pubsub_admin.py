"""Create topics and subscriptions on the emulator (idempotently)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable

from sightops.topology import (
    FUNCTIONS,
    MAX_BACKOFF_S,
    MAX_DELIVERY_ATTEMPTS,
    MIN_BACKOFF_S,
    TOPICS,
    FunctionSpec,
    dead_letter_hold,
    dead_letter_topic,
    push_endpoint,
    subscription_filter,
    subscription_name,
)


def _clients(emulator_host: str) -> tuple[object, object]:
    os.environ["PUBSUB_EMULATOR_HOST"] = emulator_host
    from google.cloud import pubsub_v1

    return pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()


def ensure_topic(publisher: object, project: str, topic: str) -> str:
    from google.api_core.exceptions import AlreadyExists

    path = f"projects/{project}/topics/{topic}"
    with contextlib.suppress(AlreadyExists):
        publisher.create_topic(name=path)  # type: ignore[attr-defined]
    return path


def ensure_subscription(
    subscriber: object,
    project: str,
    name: str,
    topic: str,
    *,
    push_to: str | None = None,
    dead_letter: str | None = None,
    min_backoff_s: float = MIN_BACKOFF_S,
    max_backoff_s: float = MAX_BACKOFF_S,
    max_delivery_attempts: int = MAX_DELIVERY_ATTEMPTS,
    filter: str | None = None,
    retry_policy: bool = True,
) -> str:
    """``retry_policy=False``: a nacked message comes back at once (a dead-letter hold)."""
    from google.api_core.exceptions import AlreadyExists
    from google.cloud import pubsub_v1

    path = f"projects/{project}/subscriptions/{name}"
    request: dict[str, object] = {
        "name": path,
        "topic": f"projects/{project}/topics/{topic}",
        "ack_deadline_seconds": 60,
    }
    if retry_policy:
        request["retry_policy"] = pubsub_v1.types.RetryPolicy(
            minimum_backoff=_duration(min_backoff_s),
            maximum_backoff=_duration(max_backoff_s),
        )
    if filter:
        request["filter"] = filter
    if push_to:
        request["push_config"] = pubsub_v1.types.PushConfig(push_endpoint=push_to)
    if dead_letter:
        request["dead_letter_policy"] = pubsub_v1.types.DeadLetterPolicy(
            dead_letter_topic=f"projects/{project}/topics/{dead_letter}",
            max_delivery_attempts=max_delivery_attempts,
        )
    with contextlib.suppress(AlreadyExists):
        subscriber.create_subscription(request=request)  # type: ignore[attr-defined]
    return path


def ensure_dead_letter_hold(
    publisher: object, subscriber: object, project: str, function: str, topic: str
) -> str:
    """The dead-letter topic of ``function``'s subscription to ``topic`` and the pull
    subscription that holds its messages (terraform/pubsub.tf ``dead_letter_hold``): a
    topic without a subscription drops what it receives."""
    dlq = dead_letter_topic(function, topic)
    ensure_topic(publisher, project, dlq)
    # No retry policy, as in Terraform: what `sightops dlq list` gives back is there at once.
    return ensure_subscription(
        subscriber, project, dead_letter_hold(function, topic), dlq, retry_policy=False
    )


def _duration(seconds: float) -> object:
    from google.protobuf import duration_pb2

    whole = int(seconds)
    return duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))


def setup(
    emulator_host: str,
    project: str,
    functions: Iterable[FunctionSpec] = FUNCTIONS,
    host: str = "127.0.0.1",
    timeline: bool = True,
    fresh: bool = True,
) -> list[str]:
    """Topics, push subscriptions with dead-letter topics, and timeline pull subscriptions.

    The dead-letter hold subscriptions are created too but not returned: like production's,
    they are never torn down, so dead letters wait there for `sightops dlq`.

    ``fresh`` deletes subscriptions of the same names first: a backlog left by an earlier
    run that was killed would otherwise flood the new one.
    """
    functions = tuple(functions)
    publisher, subscriber = _clients(emulator_host)
    if fresh:
        teardown(emulator_host, _owned_subscriptions(project, functions, timeline))
    created: list[str] = []
    for topic in TOPICS:
        ensure_topic(publisher, project, topic)
    for fn in functions:
        for topic in fn.topics:
            dlq = dead_letter_topic(fn.name, topic)
            ensure_dead_letter_hold(publisher, subscriber, project, fn.name, topic)
            created.append(
                ensure_subscription(
                    subscriber,
                    project,
                    subscription_name(fn.name, topic),
                    topic,
                    push_to=push_endpoint(host, fn.port, project, topic),
                    dead_letter=dlq,
                    filter=subscription_filter(fn.name, topic),
                )
            )
            if timeline:
                created.append(ensure_subscription(subscriber, project, f"timeline--{dlq}", dlq))
    if timeline:
        for topic in TOPICS:
            created.append(ensure_subscription(subscriber, project, f"timeline--{topic}", topic))
    return created


def _owned_subscriptions(
    project: str, functions: Iterable[FunctionSpec], timeline: bool
) -> list[str]:
    names = []
    for fn in functions:
        for topic in fn.topics:
            names.append(subscription_name(fn.name, topic))
            if timeline:
                names.append(f"timeline--{dead_letter_topic(fn.name, topic)}")
    if timeline:
        names += [f"timeline--{topic}" for topic in TOPICS]
    return [f"projects/{project}/subscriptions/{name}" for name in names]


def teardown(emulator_host: str, subscriptions: Iterable[str]) -> None:
    """Delete subscriptions so none keeps pushing to a function that has stopped."""
    from google.api_core.exceptions import NotFound

    _, subscriber = _clients(emulator_host)
    for path in subscriptions:
        with contextlib.suppress(NotFound):
            subscriber.delete_subscription(subscription=path)  # type: ignore[attr-defined]
