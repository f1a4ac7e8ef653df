"""Dependencies passed into handlers, created lazily so a cold start pays only for what
the function touches. Tests build a Deps pointed at real local services."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cached_property
from typing import TYPE_CHECKING, Any, TypeVar

from shared.clock import Clock, utcnow

if TYPE_CHECKING:  # each is imported where first used: a cold start pays for what it touches
    import redis
    from neo4j import Driver
    from sqlalchemy.engine import Engine

    from shared.metrics import Metrics
    from shared.pubsub import Publisher
    from shared.secrets import Secrets
    from shared.settings import Settings
    from shared.trace import Tracing


T = TypeVar("T")


class Deps:
    """Clients, clock and settings for one process (or one test).

    Besides the clients, a Deps owns the per-process services built on them (the Cloud
    Run adapter, the notifier, the KPI service): :meth:`service` creates each once, on
    first use, so a test's Deps never shares one with another test's.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        clock: Clock = utcnow,
        engine: Engine | None = None,
        redis_client: redis.Redis | None = None,
        neo4j_driver: Driver | None = None,
        publisher: Publisher | None = None,
        secrets: Secrets | None = None,
        metrics: Metrics | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._lock = threading.Lock()
        self._services: dict[Callable[[Deps], Any], Any] = {}
        self._services_lock = threading.RLock()  # a factory may ask for another service
        for name, value in (
            ("engine", engine),
            ("redis", redis_client),
            ("neo4j", neo4j_driver),
            ("publisher", publisher),
            ("secrets", secrets),
            ("metrics", metrics),
            ("tracing", tracing),
        ):
            if value is not None:
                self.__dict__[name] = value

    @cached_property
    def engine(self) -> Engine:
        from shared.db import create_db_engine

        with self._lock:
            return create_db_engine(self.settings)

    @cached_property
    def redis(self) -> redis.Redis:
        from shared.cache import create_redis

        return create_redis(self.settings)

    @cached_property
    def neo4j(self) -> Driver:
        from shared.graph import create_driver

        with self._lock:
            return create_driver(self.settings)

    @cached_property
    def publisher(self) -> Publisher:
        from shared.pubsub import Publisher

        return Publisher(self.settings)

    @cached_property
    def secrets(self) -> Secrets:
        from shared.secrets import Secrets

        return Secrets(self.settings)

    @cached_property
    def metrics(self) -> Metrics:
        from shared.metrics import create_metrics

        return create_metrics(self.settings)

    @cached_property
    def tracing(self) -> Tracing:
        """Spans of this process (OpenTelemetry is imported here, on the first delivery)."""
        from shared.trace import Tracing

        with self._lock:
            return Tracing(self.settings)

    def service(self, factory: Callable[[Deps], T]) -> T:
        """The one ``factory(self)`` of these deps, built on first use."""
        with self._services_lock:
            if factory not in self._services:
                self._services[factory] = factory(self)
            found: T = self._services[factory]
            return found

    def close(self) -> None:
        """Release whatever was created; safe to call twice."""
        with self._services_lock:
            self._services.clear()
        created = self.__dict__
        if "engine" in created:
            created.pop("engine").dispose()
        if "neo4j" in created:
            created.pop("neo4j").close()
        if "redis" in created:
            created.pop("redis").close()
        if "publisher" in created:
            created.pop("publisher").close()
        if "metrics" in created:
            created.pop("metrics").close()
        if "tracing" in created:
            created.pop("tracing").shutdown()


_process_deps: Deps | None = None
_process_lock = threading.Lock()


def process_deps() -> Deps:
    """The Deps of this process, built from env on first use."""
    global _process_deps
    with _process_lock:
        if _process_deps is None:
            from shared.log import configure_logging
            from shared.settings import get_settings

            settings = get_settings()
            configure_logging(settings.log_level)
            _process_deps = Deps(settings)
        return _process_deps


def set_process_deps(deps: Deps | None) -> None:
    """Replace the process Deps (tests and ``make dev`` use this)."""
    global _process_deps
    with _process_lock:
        _process_deps = deps
