"""Pub/Sub publishing that works against the emulator and production alike.

google-cloud-pubsub honours ``PUBSUB_EMULATOR_HOST``; we set it from Settings before the
client is built so configuration stays in one place. The client is imported lazily:
functions that never publish do not pay for grpc at cold start.

A message published during a delivery carries that delivery's release (``release_id``)
and W3C trace context (``traceparent``, ``tracestate``) as attributes, unless the caller
set them: its consumer continues the same trace (docs/release.md).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.errors import TransientError
from shared.settings import Settings
from shared.trace import outgoing_attributes

if TYPE_CHECKING:
    from google.cloud.pubsub_v1 import PublisherClient


class PubsubEvent(Protocol):
    """What our own event models offer for publishing."""

    def to_pubsub(self) -> tuple[bytes, dict[str, str]]: ...


def _retryable(gexc: Any) -> tuple[type[Exception], ...]:
    """What the client retries by default (its publish retry predicate)."""
    return (
        gexc.Aborted,
        gexc.Cancelled,
        gexc.DeadlineExceeded,
        gexc.InternalServerError,
        gexc.ResourceExhausted,
        gexc.ServiceUnavailable,
        gexc.Unknown,
    )


class Publisher:
    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self._settings = settings
        self._timeout_s = timeout_s
        self._client: PublisherClient | None = None
        self._lock = threading.Lock()

    @property
    def client(self) -> PublisherClient:
        with self._lock:
            if self._client is None:
                if (
                    self._settings.pubsub_emulator_host
                    and self._settings.environment != "production"
                ):
                    os.environ["PUBSUB_EMULATOR_HOST"] = self._settings.pubsub_emulator_host
                from google.cloud import pubsub_v1

                self._client = pubsub_v1.PublisherClient()
            return self._client

    def topic_path(self, topic: str) -> str:
        if topic.startswith("projects/"):
            return topic
        return f"projects/{self._settings.gcp_project}/topics/{topic}"

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str] | None = None) -> str:
        """Publish and wait for the server's message id; outages are transient.

        The client's own retries end within our timeout: with its default (a 60 s retry
        deadline) a publish we had reported failed went on being retried in the background
        and landed after the outage, beside the copy our caller's retry published
        (docs/reliability.md, "Fault matrix")."""
        from google.api_core import exceptions as gexc
        from google.api_core import retry as gretry

        retry = gretry.Retry(
            predicate=gretry.if_exception_type(*_retryable(gexc)),
            initial=0.1,
            maximum=1.0,
            multiplier=1.3,
            timeout=self._timeout_s,
        )
        try:
            future: Any = self.client.publish(
                self.topic_path(topic),
                data,
                retry=retry,
                timeout=self._timeout_s,
                **outgoing_attributes(attributes),
            )
            return str(future.result(timeout=self._timeout_s + 1.0))
        except (
            gexc.ServiceUnavailable,
            gexc.DeadlineExceeded,
            gexc.TooManyRequests,
            gexc.InternalServerError,
            gexc.RetryError,
            TimeoutError,
        ) as exc:
            raise TransientError(f"publish to {topic} failed: {type(exc).__name__}") from exc

    def publish_event(self, topic: str, event: PubsubEvent) -> str:
        data, attributes = event.to_pubsub()
        return self.publish(topic, data, attributes)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.stop()
                self._client = None
