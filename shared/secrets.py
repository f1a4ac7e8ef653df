"""Secrets by reference.

A configured value of the form ``projects/P/secrets/S/versions/V`` is resolved through
Secret Manager (checksum verified, cached for the life of the process); anything else is
the secret itself, as set in the environment of a local run. Every resolved value is
registered with the log redactor before it is returned.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.errors import SecretError, TransientError
from shared.log import REDACTOR
from shared.settings import Settings

SECRET_REF = re.compile(r"^projects/[^/]+/secrets/[^/]+/versions/[^/]+$")

ClientFactory = Callable[[], Any]


def is_reference(value: str) -> bool:
    return bool(SECRET_REF.match(value.strip()))


def _default_client_factory(settings: Settings) -> ClientFactory:
    def build() -> Any:
        from google.cloud import secretmanager

        if settings.secret_manager_endpoint:
            from google.auth.credentials import AnonymousCredentials

            return secretmanager.SecretManagerServiceClient(
                transport="rest",
                client_options={"api_endpoint": settings.secret_manager_endpoint},
                credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
            )
        return secretmanager.SecretManagerServiceClient()

    return build


class Secrets:
    """Resolves and caches secrets; thread-safe."""

    def __init__(
        self,
        settings: Settings,
        client_factory: ClientFactory | None = None,
        ttl_s: float = 600.0,
    ) -> None:
        self._factory = client_factory or _default_client_factory(settings)
        self._client: Any = None
        self._ttl_s = ttl_s
        self._cache: dict[str, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def resolve(self, value: str | None, *, redact: bool = True) -> str | None:
        """The secret for a reference, or the value itself when it is not a reference.

        ``redact=False`` for the half of a credential that is a name, not a secret (a
        Basic-auth user such as ``monitoring``): masking it everywhere would cut the same
        word out of every URL and message that sight-ops renders (docs/notify.md)."""
        if value is None:
            return None
        value = value.strip()
        if not is_reference(value):
            if redact:
                REDACTOR.add(value)
            return value
        now = time.monotonic()
        with self._lock:
            cached = self._cache.get(value)
            if cached and now - cached[0] < self._ttl_s:
                return cached[1]
        secret = self._access(value)
        if redact:
            REDACTOR.add(secret)
        with self._lock:
            self._cache[value] = (now, secret)
        return secret

    def _access(self, name: str) -> str:
        import google_crc32c
        from google.api_core import exceptions as gexc

        if self._client is None:
            self._client = self._factory()
        try:
            response = self._client.access_secret_version(request={"name": name})
        except (
            gexc.ServiceUnavailable,
            gexc.TooManyRequests,
            gexc.DeadlineExceeded,
            gexc.InternalServerError,
        ) as exc:
            raise TransientError(f"secret manager unavailable: {type(exc).__name__}") from exc
        except (gexc.RetryError, OSError) as exc:  # REST transport: requests' errors are OSErrors
            raise TransientError(f"secret manager unreachable: {type(exc).__name__}") from exc
        except gexc.GoogleAPICallError as exc:
            raise SecretError(f"cannot access secret {name}: {type(exc).__name__}") from exc
        data: bytes = response.payload.data
        expected = response.payload.data_crc32c
        if expected is not None and int(expected) != google_crc32c.value(data):
            raise SecretError(f"checksum mismatch for secret {name}")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise SecretError(f"secret {name} is not UTF-8") from exc
