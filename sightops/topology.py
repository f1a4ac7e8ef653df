"""Which function consumes which topic: one table for `make dev`, tests and docs.

Every push subscription gets a dead-letter topic and a bounded retry policy, as in
production (terraform/ declares the same wiring).
"""

from __future__ import annotations

from dataclasses import dataclass

TOPICS = ("cloud-builds", "smoke-tests", "monitoring-alerts", "ops-events", "kpi-refresh")


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    port: int
    signature: str  # "cloudevent" or "http"
    topics: tuple[str, ...] = ()


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec("notify", 8801, "cloudevent", ("cloud-builds",)),
)

MAX_DELIVERY_ATTEMPTS = 5
MIN_BACKOFF_S = 1
MAX_BACKOFF_S = 60


def subscription_name(function: str, topic: str) -> str:
    return f"{function}--{topic}"


def dead_letter_topic(function: str, topic: str) -> str:
    return f"{subscription_name(function, topic)}--dead-letter"


def push_endpoint(host: str, port: int, project: str, topic: str) -> str:
    """functions-framework takes the topic for the CloudEvent source from this path."""
    return f"http://{host}:{port}/projects/{project}/topics/{topic}"
