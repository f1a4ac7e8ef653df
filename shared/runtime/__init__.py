"""Handler runtime: what every Pub/Sub-triggered function shares."""

from shared.runtime._deps import Deps, process_deps, set_process_deps
from shared.runtime._handler import (
    Context,
    DeployedHandler,
    EventHandler,
    Outcome,
    RetryDelivery,
    pubsub_handler,
    storable_json,
    storable_text,
)
from shared.runtime._message import (
    PubsubMessage,
    message_from_cloudevent,
    message_from_envelope,
)

__all__ = [
    "Context",
    "DeployedHandler",
    "Deps",
    "EventHandler",
    "Outcome",
    "PubsubMessage",
    "RetryDelivery",
    "message_from_cloudevent",
    "message_from_envelope",
    "process_deps",
    "pubsub_handler",
    "set_process_deps",
    "storable_json",
    "storable_text",
]
