"""One root exception with flat subclasses.

The handler runtime maps these to delivery outcomes: ``retryable`` errors make the
function answer non-2xx so Pub/Sub redelivers with backoff; everything else is
recorded and acknowledged so a message that can never succeed is not retried forever.
"""

from __future__ import annotations


class SightOpsError(Exception):
    """Root of every error sight-ops raises on purpose."""

    retryable: bool = False


class InvalidEventError(SightOpsError):
    """The message can never be handled: bad JSON, wrong schema, unknown type."""


class TransientError(SightOpsError):
    """A dependency is down, slow or throttling; retrying later may succeed."""

    retryable = True


class PermanentError(SightOpsError):
    """The handler ran and failed in a way a retry cannot fix."""


class ConfigError(SightOpsError):
    """Configuration is missing or invalid; raised at start-up, never mid-event."""


class SecretError(SightOpsError):
    """A secret could not be resolved or failed its checksum."""


class LockTimeoutError(SightOpsError):
    """A lock was not acquired within its bounded wait."""

    retryable = True
