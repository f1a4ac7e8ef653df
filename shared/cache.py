"""Redis client and outage guard. Redis holds nothing that cannot be rebuilt, so callers
treat its errors as "degrade", never as "fail"; short timeouts keep a dead Redis cheap,
and :class:`RedisOutageGuard` keeps it from costing a timeout on every call
(docs/kpi.md, "Redis down"; docs/notify.md)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TypeVar

import redis

from shared.log import REDACTOR
from shared.settings import Settings

__all__ = ["RedisError", "RedisOutageGuard", "create_redis"]

RedisError = redis.RedisError

T = TypeVar("T")

_logger = logging.getLogger("sightops.cache")


def create_redis(settings: Settings) -> redis.Redis:
    url = settings.redis_url.get_secret_value()
    # A blocking pool: past max_connections a caller waits (bounded) for a free connection.
    # redis-py's default pool raises MaxConnectionsError instead, which a burst of threads
    # reaches easily and which would look exactly like "Redis is down".
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=settings.redis_max_connections,
        timeout=settings.redis_timeout_s,
        socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s,
        health_check_interval=30,
        retry_on_timeout=False,
    )
    client = redis.Redis(connection_pool=pool)
    password = client.connection_pool.connection_kwargs.get("password")
    if isinstance(password, str):
        REDACTOR.add(password)
    return client


class RedisOutageGuard:
    """After a Redis error, skip Redis for ``retry_s`` instead of paying a timeout per call.

    One guard per service that talks to Redis (the KPI cache, the notifier), built with
    ``Settings.redis_retry_s`` (env ``REDIS_RETRY_S``). Thread-safe. The first failure of
    an outage logs one WARNING (``redis unavailable (<error>); <degraded> for the next
    <n>s``); later failures inside the window only extend it. Usage::

        guard = RedisOutageGuard(settings.redis_retry_s, "alerts are sent ungrouped")
        if guard.usable():
            try:
                client.set(key, value)
            except RedisError as exc:
                guard.failed(exc)

        # or, for a call whose failure has a plain fallback value:
        seen = guard.call(lambda: bool(client.exists(key)), default=False)

    ``clock`` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self,
        retry_s: float,
        degraded: str = "skipping it",
        *,
        logger: logging.Logger | None = None,
        extra: Mapping[str, object] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retry_s = retry_s
        self.degraded = degraded
        self._logger = logger or _logger
        self._extra = dict(extra or {})
        self._clock = clock
        self._down_until = float("-inf")
        self._lock = threading.Lock()

    def usable(self) -> bool:
        """False while an outage window is open: do not call Redis, degrade instead."""
        return self._clock() >= self._down_until

    def failed(self, exc: BaseException) -> bool:
        """Open (or extend) the outage window; True when this failure opened it (the one
        that logged)."""
        with self._lock:
            now = self._clock()
            opened = now >= self._down_until
            self._down_until = now + self.retry_s
        if opened:
            self._logger.warning(
                "redis unavailable (%s); %s for the next %.0fs",
                type(exc).__name__,
                self.degraded,
                self.retry_s,
                extra=self._extra,
            )
        return opened

    def call(self, op: Callable[[], T], default: T) -> T:
        """``op()``, or ``default`` without calling it while the window is open, or
        ``default`` after a Redis error (which opens the window)."""
        if not self.usable():
            return default
        try:
            return op()
        except redis.RedisError as exc:
            self.failed(exc)
            return default
