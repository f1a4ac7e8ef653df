"""Slack incoming-webhook delivery through slack_sdk, with our error mapping.

slack_sdk's retry handlers absorb short throttling in-process (429 with a Retry-After we
are willing to wait, 5xx, connection resets); whatever is left is mapped for the
runtime: 429/5xx/connection -> TransientError (Pub/Sub redelivers later), any other 4xx
(``channel_is_archived``, ``no_service``, ``invalid_payload``) -> PermanentError. The URL
is a credential: it is registered with the redactor and never put in an error.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from slack_sdk.http_retry import RetryHandler, RetryState
from slack_sdk.http_retry.builtin_handlers import (
    ConnectionErrorRetryHandler,
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.webhook import WebhookClient

from shared.errors import PermanentError, TransientError
from shared.log import REDACTOR


class _RedactingFilter(logging.Filter):
    """slack_sdk logs the request URL (the credential) at DEBUG: redact every record of
    its logger before any handler, pytest's capture included, can see it."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg = REDACTOR.redact(record.getMessage())
        record.args = ()
        return True


#: The logger handed to slack_sdk instead of its own.
SDK_LOGGER = logging.getLogger("sightops.slack.sdk")
SDK_LOGGER.addFilter(_RedactingFilter())
# slack_sdk formats a DEBUG line with the whole request when the level allows it.
SDK_LOGGER.setLevel(logging.INFO)


class BoundedRateLimitRetryHandler(RateLimitErrorRetryHandler):
    """Retry a 429 in-process only when Retry-After is short; otherwise hand the wait to
    Pub/Sub's backoff instead of holding an instance busy."""

    def __init__(self, max_retry_count: int, max_wait_s: float) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._max_wait_s = max_wait_s

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        if not super()._can_retry(state=state, request=request, response=response, error=error):
            return False
        assert response is not None
        values = response.headers.get("retry-after") or response.headers.get("Retry-After") or []
        try:
            wait = float(values[0]) if values else 1.0
        except ValueError:
            wait = 1.0
        return wait <= self._max_wait_s


class SlackWebhook:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        max_retries: int = 2,
        max_retry_wait_s: float = 5.0,
    ) -> None:
        REDACTOR.add(url)
        handlers: list[RetryHandler] = [
            BoundedRateLimitRetryHandler(max_retries, max_retry_wait_s),
            ServerErrorRetryHandler(max_retry_count=max_retries),
            ConnectionErrorRetryHandler(max_retry_count=max_retries),
        ]
        self._client = WebhookClient(
            url, timeout=int(max(1, timeout_s)), retry_handlers=handlers, logger=SDK_LOGGER
        )

    def send(self, text: str, blocks: Sequence[Any] | None = None) -> None:
        """Post one message; raises TransientError or PermanentError when it did not land."""
        try:
            response = self._client.send(text=text, blocks=list(blocks) if blocks else None)
        except OSError as exc:
            raise TransientError(f"slack unreachable: {type(exc).__name__}") from None
        status = response.status_code
        if 200 <= status < 300:
            return
        body = (response.body or "")[:100]
        if status == 429 or status >= 500:
            raise TransientError(f"slack answered {status} {body}")
        raise PermanentError(f"slack answered {status} {body}")
