"""Handler runtime: what every Pub/Sub-triggered function shares."""

from shared.runtime._actions import OnConflict, write_action
from shared.runtime._deps import Deps, process_deps, set_process_deps
from shared.runtime._handler import (
    Context,
    DeployedHandler,
    EventHandler,
    Outcome,
    RetryDelivery,
    pubsub_handler,
)
from shared.runtime._message import (
    PubsubMessage,
    message_from_cloudevent,
    message_from_envelope,
)
from shared.runtime._storable import storable_json, storable_text

__all__ = [
    "Context",
    "DeployedHandler",
    "Deps",
    "EventHandler",
    "OnConflict",
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
    "write_action",
]
