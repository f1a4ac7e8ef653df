"""Redis client. Redis holds nothing that cannot be rebuilt, so callers treat its
errors as "degrade", never as "fail"; short timeouts keep a dead Redis cheap."""

from __future__ import annotations

import redis

from shared.log import REDACTOR
from shared.settings import Settings

RedisError = redis.RedisError


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
