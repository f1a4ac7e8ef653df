"""``RedisOutageGuard`` against a real Redis and an unreachable one: an outage costs one
error per window, not one timeout per call (docs/kpi.md, "Redis down")."""

from __future__ import annotations

import logging
import threading
import time
import uuid

import pytest
from pydantic import SecretStr

from shared.cache import RedisError, RedisOutageGuard, create_redis
from shared.settings import Settings


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _dead_settings(settings: Settings) -> Settings:
    # Nothing listens on port 1: every call fails with a real ConnectionError.
    return settings.model_copy(update={"redis_url": SecretStr("redis://127.0.0.1:1/0")})


def test_retry_s_is_one_top_level_setting(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings.redis_retry_s == 5.0
    monkeypatch.setenv("REDIS_RETRY_S", "2.5")
    assert Settings().redis_retry_s == 2.5


def test_a_redis_error_skips_redis_for_retry_s_then_tries_again(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = create_redis(_dead_settings(settings))
    clock = FakeClock()
    guard = RedisOutageGuard(3.0, "computing directly", clock=clock)
    calls = 0

    def ping() -> bool:
        nonlocal calls
        calls += 1
        return bool(dead.ping())

    assert guard.usable()
    with caplog.at_level(logging.WARNING, logger="sightops.cache"):
        assert guard.call(ping, default=False) is False
        assert calls == 1 and not guard.usable()
        for _ in range(5):  # inside the window: Redis is not called at all
            assert guard.call(ping, default=False) is False
        assert calls == 1
        clock.now += 2.9
        assert not guard.usable()
        clock.now += 0.2
        assert guard.usable()
        assert guard.call(ping, default=False) is False  # tried again, failed again
        assert calls == 2
    warnings = [r.getMessage() for r in caplog.records if "redis unavailable" in r.getMessage()]
    # One warning per outage window: the second one opened after the first had closed.
    assert (
        warnings
        == [
            "redis unavailable (ConnectionError); computing directly for the next 3s",
        ]
        * 2
    )


def test_failures_inside_the_window_extend_it_and_log_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = create_redis(_dead_settings(settings))
    clock = FakeClock()
    guard = RedisOutageGuard(1.0, clock=clock)
    errors: list[RedisError] = []
    for _ in range(2):
        try:
            dead.get("k")
        except RedisError as exc:
            errors.append(exc)
    assert len(errors) == 2
    with caplog.at_level(logging.WARNING):
        assert guard.failed(errors[0]) is True
        clock.now += 0.8
        assert guard.failed(errors[1]) is False  # a caller that was already in flight
    assert caplog.text.count("redis unavailable") == 1
    clock.now += 0.8  # 1.6 s after the first failure, 0.8 s after the second
    assert not guard.usable()
    clock.now += 0.3
    assert guard.usable()


def test_a_live_redis_goes_through(settings: Settings) -> None:
    client = create_redis(settings)
    guard = RedisOutageGuard(settings.redis_retry_s)
    key = f"guard:{uuid.uuid4().hex}"
    assert guard.call(lambda: client.set(key, "1", ex=5), default=None)
    assert guard.call(lambda: client.get(key), default=None) == b"1"
    assert guard.usable()


def test_only_redis_errors_are_absorbed() -> None:
    guard = RedisOutageGuard(5.0)

    def broken() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        guard.call(broken, default=None)
    assert guard.usable()


def test_concurrent_failures_open_one_window_and_log_once(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    dead = create_redis(_dead_settings(settings))
    guard = RedisOutageGuard(60.0)
    opened: list[bool] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        try:
            dead.ping()
        except RedisError as exc:
            barrier.wait()
            opened.append(guard.failed(exc))

    started = time.monotonic()
    with caplog.at_level(logging.WARNING):
        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert sorted(opened) == [False] * 7 + [True]
    assert caplog.text.count("redis unavailable") == 1
    assert not guard.usable()
    assert time.monotonic() - started < 5
