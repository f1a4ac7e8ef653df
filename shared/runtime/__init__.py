"""Handler runtime: what every function shares, Pub/Sub- or HTTP-triggered
(docs/architecture.md)."""

from shared.runtime._actions import OnConflict, write_action
from shared.runtime._deps import Deps, process_deps, set_process_deps
from shared.runtime._handler import (
    FROM_SETTINGS,
    Context,
    DeployedHandler,
    EventHandler,
    Outcome,
    RetryDelivery,
    pubsub_handler,
)
from shared.runtime._http import (
    AuthHook,
    HttpContext,
    HttpError,
    error_response,
    http_handler,
)
from shared.runtime._message import (
    PubsubMessage,
    message_from_cloudevent,
    message_from_envelope,
)
from shared.runtime._storable import storable_json, storable_text

__all__ = [
    "FROM_SETTINGS",
    "AuthHook",
    "Context",
    "DeployedHandler",
    "Deps",
    "EventHandler",
    "HttpContext",
    "HttpError",
    "OnConflict",
    "Outcome",
    "PubsubMessage",
    "RetryDelivery",
    "error_response",
    "http_handler",
    "message_from_cloudevent",
    "message_from_envelope",
    "process_deps",
    "pubsub_handler",
    "set_process_deps",
    "storable_json",
    "storable_text",
    "write_action",
]
