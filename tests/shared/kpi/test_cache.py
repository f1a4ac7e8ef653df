"""The single-flight cache against a real Redis: stampedes, stale values, XFetch, dead
lock holders and a stopped Redis. Compute functions are the test's own, counting calls."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis

from shared.cache import create_redis
from shared.errors import TransientError
from shared.kpi.cache import (
    BytesCodec,
    CacheResult,
    CacheUnavailableError,
    Entry,
    SingleFlightCache,
)
from shared.metrics import Metrics
from shared.settings import KpiConfig, Settings
from tests.shared.kpi.helpers import OwnRedis

LOCK_HOLDER = Path(__file__).parent / "lock_holder.py"


class Counted:
    """A computation of fixed duration that counts how often it really ran."""

    def __init__(self, duration_s: float = 0.2, prefix: bytes = b"v") -> None:
        self.duration_s = duration_s
        self.prefix = prefix
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
            n = self.calls
        time.sleep(self.duration_s)
        return self.prefix + str(n).encode()


class FakeClock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


MakeCache = Callable[..., SingleFlightCache[bytes]]


@pytest.fixture
def prefix() -> str:
    return f"test:cache:{uuid.uuid4().hex[:8]}"


@pytest.fixture
def make_cache(settings: Settings, metrics: Metrics, prefix: str) -> Iterator[MakeCache]:
    """Each call is a separate cache with its own Redis client: a separate instance."""
    clients: list[redis.Redis] = []

    def make(client: redis.Redis | None = None, **options: Any) -> SingleFlightCache[bytes]:
        kwargs = {k: options.pop(k) for k in ("local_coalesce", "clock", "rand") if k in options}
        key_prefix = options.pop("prefix", prefix)
        if client is None:
            client = create_redis(settings)
            clients.append(client)
        return SingleFlightCache(
            client,
            BytesCodec(),
            KpiConfig(**options),
            name="test",
            prefix=key_prefix,
            metrics=metrics,
            **kwargs,
        )

    yield make
    for client in clients:
        client.close()


def stampede(
    caches: list[SingleFlightCache[bytes]], key: str, compute: Callable[[], bytes], n: int
) -> list[tuple[CacheResult[bytes], float]]:
    """``n`` callers released at once, spread over ``caches``: (result, seconds taken)."""
    barrier = threading.Barrier(n)

    def call(i: int) -> tuple[CacheResult[bytes], float]:
        barrier.wait()
        started = time.monotonic()
        result = caches[i % len(caches)].get(key, compute)
        return result, time.monotonic() - started

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(call, range(n)))


@pytest.mark.parametrize("local_coalesce", [True, False], ids=["coalesced", "redis-lock-only"])
def test_200_concurrent_callers_of_a_cold_key_compute_once_and_get_the_same_value(
    make_cache: MakeCache, metrics: Metrics, local_coalesce: bool
) -> None:
    caches = [make_cache(local_coalesce=local_coalesce) for _ in range(8)]
    compute = Counted(0.2)
    results = stampede(caches, "cold", compute, 200)
    assert compute.calls == 1
    assert {r.value for r, _ in results} == {b"v1"}
    assert sum(r.computed_here for r, _ in results) == 1
    assert {r.status for r, _ in results} <= {"miss", "hit"}
    assert metrics.counter("cache_computations", cache="test", reason="cold") == 1


def test_fresh_value_is_served_from_redis_without_computing(make_cache: MakeCache) -> None:
    cache = make_cache(xfetch_beta=0)
    compute = Counted(0.0)
    first = cache.get("k", compute)
    second = cache.get("k", compute)
    assert (first.status, first.reason, first.computed_here) == ("miss", "cold", True)
    assert (second.status, second.value, second.computed_here) == ("hit", b"v1", False)
    assert compute.calls == 1
    assert second.compute_ms == pytest.approx(first.compute_ms, abs=0.01)


def test_stale_value_is_served_at_once_while_exactly_one_caller_recomputes(
    make_cache: MakeCache,
) -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10, stale_ttl_s=100, xfetch_beta=0, clock=clock)
    cache.get("k", lambda: b"old")
    clock.advance(11)
    compute = Counted(0.3, b"new")
    finished: list[tuple[float, CacheResult[bytes]]] = []
    lock = threading.Lock()

    def call() -> None:
        result = cache.get("k", compute)
        with lock:
            finished.append((time.monotonic(), result))

    threads = [threading.Thread(target=call) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert compute.calls == 1
    seen = [(r.status, r.value, r.reason) for _, r in finished]
    assert seen.count(("miss", b"new1", "stale_refresh")) == 1
    # Everyone else got the old value at once, or (a caller that read the stale value
    # just as the refresh landed) the new one without computing it again.
    assert set(seen) - {("miss", b"new1", "stale_refresh")} <= {
        ("stale", b"old", "stale_locked"),
        ("hit", b"new1", "fresh"),
    }
    assert seen.count(("stale", b"old", "stale_locked")) >= 1
    assert cache.get("k", compute).value == b"new1"


class _RefreshLandsBeforeLock:
    """A real Redis client that lets another caller finish its refresh right before
    our lock attempt: the interleaving a loaded machine produces now and then."""

    def __init__(self, client: redis.Redis, before_lock: Callable[[], object]) -> None:
        self._client, self._before_lock = client, before_lock

    def set(self, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("nx") and self._before_lock is not None:
            hook, self._before_lock = self._before_lock, None  # type: ignore[assignment]
            hook()
        return self._client.set(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def test_caller_that_read_a_stale_value_just_before_a_refresh_landed_does_not_recompute(
    make_cache: MakeCache, settings: Settings
) -> None:
    clock = FakeClock()
    other = make_cache(ttl_s=10, stale_ttl_s=100, xfetch_beta=0, clock=clock)
    other.get("k", lambda: b"old")
    clock.advance(11)
    theirs, ours = Counted(0.0, b"theirs"), Counted(0.0, b"ours")
    client = create_redis(settings)
    try:
        racing = make_cache(
            client=_RefreshLandsBeforeLock(client, lambda: other.get("k", theirs)),
            ttl_s=10,
            stale_ttl_s=100,
            xfetch_beta=0,
            clock=clock,
        )
        result = racing.get("k", ours)
    finally:
        client.close()
    assert (theirs.calls, ours.calls) == (1, 0)
    assert (result.status, result.value, result.computed_here) == ("hit", b"theirs1", False)
    assert other.peek("k")[1] == -2  # no lock left behind


def test_xfetch_recomputes_a_hot_key_early_only_near_its_expiry(make_cache: MakeCache) -> None:
    clock = FakeClock()
    draw = [0.999]  # -ln(1 - 0.999) = 6.9: an early-refresh window of 6.9 * delta
    cache = make_cache(ttl_s=10, xfetch_beta=1.0, clock=clock, rand=lambda: draw[0])
    cache.get("k", Counted(0.05, b"a"))  # delta ~0.05 s: window ~0.35 s before expiry
    compute = Counted(0.0, b"b")

    assert cache.get("k", compute).status == "hit"  # 10 s before expiry: too early
    clock.advance(9.9)  # 0.1 s before expiry
    draw[0] = 0.0  # -ln(1) = 0: this caller is not the one
    assert cache.get("k", compute).status == "hit"
    draw[0] = 0.999
    early = cache.get("k", compute)
    assert (early.status, early.reason, early.value) == ("miss", "early_refresh", b"b1")
    assert compute.calls == 1
    assert early.fresh_until == pytest.approx(clock.now + 10)


def test_xfetch_beta_zero_never_refreshes_before_expiry(make_cache: MakeCache) -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10, xfetch_beta=0.0, clock=clock, rand=lambda: 0.999999)
    cache.get("k", Counted(1.0))
    clock.advance(9.99)
    compute = Counted(0.0)
    assert cache.get("k", compute).status == "hit"
    assert compute.calls == 0


def test_lock_holder_killed_mid_computation_is_taken_over_after_the_lock_expires(
    make_cache: MakeCache, settings: Settings, prefix: str
) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            str(LOCK_HOLDER),
            settings.redis_url.get_secret_value(),
            prefix,
            "k",
            "1.0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "computing"
    finally:
        holder.kill()
        holder.wait(10)
    caches = [make_cache(lock_ttl_s=1.0, wait_s=4.0) for _ in range(4)]
    dead_token = caches[0].client.get(caches[0].lock_key("k"))
    assert dead_token is not None, "the killed process held the lock"
    tokens_seen: list[bytes | None] = []
    compute = Counted(0.2)

    def compute_and_look() -> bytes:
        tokens_seen.append(caches[0].client.get(caches[0].lock_key("k")))
        return compute()

    results = stampede(caches, "k", compute_and_look, 50)
    assert compute.calls == 1
    assert tokens_seen[0] not in (None, dead_token)  # a new holder, after expiry
    assert {r.value for r, _ in results} == {b"v1"}
    assert max(seconds for _, seconds in results) < 4.0 + 0.2 + 1.0  # bounded wait


def test_hung_computation_stops_extending_its_lock_and_is_taken_over_without_overwriting(
    make_cache: MakeCache, metrics: Metrics
) -> None:
    """The hung caller gets its own late result, but the value the new holder stored stays."""
    release = threading.Event()
    hung = make_cache(lock_ttl_s=0.3, compute_timeout_s=0.6)
    hung_results: list[CacheResult[bytes]] = []

    def never_finishes() -> bytes:
        release.wait(30)
        return b"late"

    thread = threading.Thread(
        target=lambda: hung_results.append(hung.get("k", never_finishes)), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 5
    while not hung.client.exists(hung.lock_key("k")):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    others = [make_cache(lock_ttl_s=0.3, wait_s=5.0) for _ in range(2)]
    compute = Counted(0.1, b"fresh")
    results = stampede(others, "k", compute, 20)
    release.set()
    thread.join(5)
    assert compute.calls == 1
    assert {r.value for r, _ in results} == {b"fresh1"}
    assert max(seconds for _, seconds in results) < 5.0 + 1.0
    assert [r.value for r in hung_results] == [b"late"]
    stored = Entry.decode(hung.client.get(hung.value_key("k")) or b"")
    assert stored is not None and stored.payload == b"fresh1"
    assert hung.get("k", Counted(0.0, b"again")).value == b"fresh1"
    assert metrics.counter("cache_lock_lost", cache="test") == 1


def test_lock_holder_never_overwrites_a_value_stored_after_its_computation_started(
    make_cache: MakeCache,
) -> None:
    """A caller that gave up waiting stored a newer value meanwhile: the slow holder's older
    numbers are returned to its own caller only."""
    cache = make_cache(xfetch_beta=0)

    def slow_and_overtaken() -> bytes:
        newer = Entry(b"newer", time.time() + 300, 0.01, time.time())
        cache.client.set(cache.value_key("k"), newer.encode(), px=60_000)
        return b"older"

    assert cache.get("k", slow_and_overtaken).value == b"older"
    assert cache.get("k", Counted(0.0)).value == b"newer"
    assert not cache.client.exists(cache.lock_key("k"))


def test_concurrent_callers_in_one_process_behind_a_stuck_lock_compute_once(
    make_cache: MakeCache, metrics: Metrics
) -> None:
    """Followers wait for their leader's bounded wait and computation, not for as long as
    the leader waits, so they do not all give up with it and compute one each."""
    cache = make_cache(wait_s=0.5)
    cache.client.set(cache.lock_key("k"), "held-by-a-stuck-instance", px=30_000)
    compute = Counted(0.2)
    results = stampede([cache], "k", compute, 40)
    assert compute.calls == 1
    assert {r.value for r, _ in results} == {b"v1"}
    assert {r.reason for r, _ in results} == {"wait_timeout", "coalesced"}
    assert metrics.counter("cache_wait_timeouts", cache="test") == 1


def test_waiters_give_up_after_the_bounded_wait_and_compute_themselves(
    make_cache: MakeCache, metrics: Metrics, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(wait_s=0.5, local_coalesce=False)
    cache.client.set(cache.lock_key("k"), "held-by-a-stuck-instance", px=30_000)
    started = time.monotonic()
    result = cache.get("k", Counted(0.01))
    assert time.monotonic() - started < 0.5 + 1.0
    assert (result.status, result.reason, result.value) == ("miss", "wait_timeout", b"v1")
    assert metrics.counter("cache_wait_timeouts", cache="test") == 1
    assert "computing directly" in caplog.text


def test_lock_taken_over_by_another_holder_is_never_deleted_by_the_old_one(
    make_cache: MakeCache, metrics: Metrics
) -> None:
    cache = make_cache()
    lock_key = cache.lock_key("k")

    def expires_mid_way() -> bytes:
        cache.client.set(lock_key, "new-holder", px=5_000)  # ours expired; someone took it
        return b"v"

    assert cache.get("k", expires_mid_way).value == b"v"
    assert cache.client.get(lock_key) == b"new-holder"
    assert metrics.counter("cache_lock_lost", cache="test") == 1

    def expires_then_fails() -> bytes:
        cache.client.set(lock_key, "newer-holder", px=5_000)
        raise RuntimeError("computation failed")

    cache.invalidate("k")
    with pytest.raises(RuntimeError):
        cache.get("k", expires_then_fails)
    assert cache.client.get(lock_key) == b"newer-holder"


def test_failed_computation_raises_releases_the_lock_and_the_next_caller_computes(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()

    def boom() -> bytes:
        raise ValueError("no")

    with pytest.raises(ValueError, match="no"):
        cache.get("k", boom)
    assert not cache.client.exists(cache.lock_key("k"))
    assert cache.get("k", Counted(0.0)).value == b"v1"


def test_failed_refresh_serves_the_previous_value(make_cache: MakeCache) -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10, xfetch_beta=0, clock=clock)
    cache.get("k", lambda: b"old")
    clock.advance(11)

    def outage() -> bytes:
        raise TransientError("database unavailable")

    result = cache.get("k", outage)
    assert (result.status, result.reason, result.value) == ("stale", "refresh_failed", b"old")
    assert not cache.client.exists(cache.lock_key("k"))


def test_refresh_failing_with_an_invalidating_error_drops_the_entry(make_cache: MakeCache) -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10, xfetch_beta=0, clock=clock)
    cache.get("k", lambda: b"old")
    clock.advance(11)

    def gone() -> bytes:
        raise LookupError("deleted")

    with pytest.raises(LookupError):
        cache.get("k", gone, invalidate_on=(LookupError,))
    assert not cache.client.exists(cache.value_key("k"))


def test_redis_stopped_values_are_computed_directly_with_one_warning(
    own_redis: OwnRedis, make_cache: MakeCache, caplog: pytest.LogCaptureFixture
) -> None:
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = make_cache(client=client, redis_retry_s=0.3, xfetch_beta=0)
    compute = Counted(0.0)
    assert cache.get("k", compute).status == "miss"
    assert cache.get("k", compute).status == "hit"

    own_redis.stop()
    with caplog.at_level(logging.WARNING, logger="sightops.cache"):
        down = [cache.get("k", compute) for _ in range(3)]
    assert [(r.status, r.reason) for r in down] == [("miss", "redis_down")] * 3
    assert [r.value for r in down] == [b"v2", b"v3", b"v4"]
    assert caplog.text.count("redis unavailable") == 1

    own_redis.start()  # same port, empty
    time.sleep(0.35)  # the breaker's retry interval
    back = cache.get("k", compute)
    assert (back.status, back.reason) == ("miss", "cold")
    assert cache.get("k", compute).status == "hit"
    client.close()


def test_redis_stopped_concurrent_callers_in_one_process_still_compute_once(
    own_redis: OwnRedis, make_cache: MakeCache
) -> None:
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = make_cache(client=client)
    own_redis.stop()
    compute = Counted(0.5)
    results = stampede([cache], "k", compute, 50)
    assert compute.calls == 1
    assert {(r.value, r.reason) for r, _ in results} <= {
        (b"v1", "redis_down"),
        (b"v1", "coalesced"),
    }
    client.close()


def test_refresh_recomputes_unless_someone_holds_the_lock(make_cache: MakeCache) -> None:
    cache = make_cache()
    cache.get("k", lambda: b"old")
    refreshed = cache.refresh("k", lambda: b"new")
    assert refreshed is not None and refreshed.value == b"new"
    assert cache.get("k", Counted()).value == b"new"
    cache.client.set(cache.lock_key("k"), "busy", px=5_000)
    assert cache.refresh("k", lambda: b"newer") is None


def test_refresh_with_redis_down_says_so(own_redis: OwnRedis, make_cache: MakeCache) -> None:
    client = redis.Redis.from_url(own_redis.url, socket_timeout=0.5, socket_connect_timeout=0.5)
    cache = make_cache(client=client)
    own_redis.stop()
    with pytest.raises(CacheUnavailableError):
        cache.refresh("k", lambda: b"v")
    client.close()


def test_foreign_data_under_a_key_is_replaced_not_served(make_cache: MakeCache) -> None:
    cache = make_cache()
    cache.client.set(cache.value_key("k"), b"not an entry")
    result = cache.get("k", lambda: b"real")
    assert (result.status, result.value) == ("miss", b"real")
    assert cache.get("k", lambda: b"other").value == b"real"


def test_entry_header_round_trips() -> None:
    entry = Entry(b"{\n}", 123.5, 0.25, 113.5)
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(b"sf1 x y z\n{}") is None
    assert Entry.decode(b"{}") is None


def test_counters_say_hit_miss_and_stale(make_cache: MakeCache, metrics: Metrics) -> None:
    clock = FakeClock()
    cache = make_cache(ttl_s=10, xfetch_beta=0, clock=clock)
    cache.get("k", lambda: b"a")
    cache.get("k", lambda: b"a")
    clock.advance(11)
    cache.client.set(cache.lock_key("k"), "busy", px=5_000)
    cache.get("k", lambda: b"a")
    assert metrics.counter("cache_requests", cache="test", status="miss", reason="cold") == 1
    assert metrics.counter("cache_requests", cache="test", status="hit", reason="fresh") == 1
    assert (
        metrics.counter("cache_requests", cache="test", status="stale", reason="stale_locked") == 1
    )
    assert metrics.counter("cache_computations", cache="test", reason="cold") == 1
