"""A read-through Redis cache that computes each value once, however many callers ask.

Reusable for any expensive, idempotent computation keyed by a string. Per key:

- **fresh** (younger than ``ttl_s``): served from one ``GET``. With probability rising
  towards expiry (XFetch: recompute when ``now - delta * beta * ln(rand) >= expiry``, delta
  being how long the value took to compute) one caller refreshes it early, so a hot key is
  recomputed before it ever expires;
- **stale** (older than ``ttl_s``, within ``stale_ttl_s`` more): one caller takes the lock
  and recomputes; everybody else gets the stale value at once;
- **missing**: one caller takes the lock and computes; the rest wait (bounded) for the
  value. Inside one process the waiters are coalesced first (only one of them talks to
  Redis), so an instance with 80 concurrent requests costs Redis one poller, not 80.

The lock is ``SET lock token NX PX`` with a random token; it is released (and extended,
by a watchdog while the computation runs) only through compare-and-delete / -expire Lua
scripts, so a caller never deletes a lock it no longer owns, and a dead holder's lock
expires by itself. Only the lock's current holder stores its value, and never over one
stored after its computation started: a caller whose lock expired (a hung computation that
was taken over) returns its result to its own caller but cannot overwrite the newer
value. Any Redis error opens the outage guard (:class:`shared.cache.RedisOutageGuard`)
for ``redis_retry_s``, during which values are computed directly (still coalesced per
process): slower, never broken.

The timings are ``KpiConfig``'s (``KPI__*``), whose fields say what each one means; the
semantics are in docs/kpi.md, "Cache semantics".

**Negative caching** (``absent_on``, ``not_found_ttl_s``): when the computation says the
thing does not exist, a short-lived marker is stored under the key instead of a value, so
repeated requests for it are answered from one ``GET`` (:class:`KnownAbsentError`) with no
lock and no computation. Any later stored value replaces the marker.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import logging
import math
import random
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar

from redis.exceptions import RedisError

from shared.cache import RedisOutageGuard
from shared.errors import TransientError
from shared.settings import KpiConfig, Settings

if TYPE_CHECKING:
    import redis

    from shared.metrics import Metrics

logger = logging.getLogger("sightops.cache")

T = TypeVar("T")
CacheStatus = Literal["hit", "miss", "stale"]

#: Entry layout: ``sf1 <fresh_until> <delta_s> <stored_at>\n<payload>`` (unix seconds).
#: A text header keeps entries readable with redis-cli and costs one split to parse.
_MAGIC = b"sf1"
#: An absence marker: ``nf1 <stored_at>\n<message>``, stored for ``not_found_ttl_s``. It does
#: not match ``_STORE_AND_RELEASE``'s ``sf1`` pattern, so any computed value overwrites it.
_ABSENT = b"nf1 "

# KEYS[1] value, KEYS[2] lock; ARGV[1] token, ARGV[2] lock ms.
# The value, or the lock taken atomically when there is no value: no read-then-lock race.
_GET_OR_LOCK = """
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return {2, ''} end
return {0, ''}
"""
# KEYS[1] lock; ARGV[1] token.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS[1] lock; ARGV[1] token, ARGV[2] ms.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
# KEYS[1] value, KEYS[2] lock; ARGV[1] entry, ARGV[2] entry ms, ARGV[3] token ('' for a
# caller that computed without the lock), ARGV[4] when the computation started.
# Store (and release) in one round trip. -1: the lock is no longer ours, nothing written
# (whoever holds it now stores a newer value); 0: a value stored after our computation
# started is kept (ours is older); 1: stored.
_STORE_AND_RELEASE = """
local holder = ARGV[3] ~= ''
if holder and redis.call('GET', KEYS[2]) ~= ARGV[3] then return -1 end
local v = redis.call('GET', KEYS[1])
local m = v and string.match(v, '^sf1 %S+ %S+ (%S+)')
local stored_at = m and tonumber(m)
local written = 0
if not stored_at or stored_at <= tonumber(ARGV[4]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  written = 1
end
if holder then redis.call('DEL', KEYS[2]) end
return written
"""


class Codec(Protocol[T]):
    """How values become bytes in Redis and back."""

    def dumps(self, value: T) -> bytes: ...

    def loads(self, data: bytes) -> T: ...


class BytesCodec:
    """Values that already are bytes (e.g. a JSON document served as is)."""

    def dumps(self, value: bytes) -> bytes:
        return value

    def loads(self, data: bytes) -> bytes:
        return data


class CacheUnavailableError(TransientError):
    """Redis cannot be reached, so there is nowhere to store a precomputed value."""


class KnownAbsentError(LookupError):
    """The key is cached as absent (negative caching); the message is the original one."""


@dataclass(frozen=True)
class Entry:
    """What is stored under a key, with the payload still encoded."""

    payload: bytes
    fresh_until: float
    delta_s: float
    stored_at: float

    def encode(self) -> bytes:
        head = b"%s %.6f %.6f %.6f\n" % (_MAGIC, self.fresh_until, self.delta_s, self.stored_at)
        return head + self.payload

    @classmethod
    def decode(cls, raw: bytes) -> Entry | None:
        """None for anything that is not an entry (old format, foreign data)."""
        head, sep, payload = raw.partition(b"\n")
        parts = head.split(b" ")
        if not sep or len(parts) != 4 or parts[0] != _MAGIC:
            return None
        try:
            return cls(payload, float(parts[1]), float(parts[2]), float(parts[3]))
        except ValueError:
            return None


@dataclass(frozen=True)
class CacheResult(Generic[T]):
    """A value and how it was obtained.

    ``status`` is what the caller saw: ``hit`` (a fresh value), ``stale`` (a value past
    its freshness, served while someone else recomputes it) or ``miss`` (no usable value:
    computed now, by this caller or one it waited for). ``reason`` says more, for logs
    and metrics. ``compute_ms`` is how long the served value took to compute.
    """

    value: T
    status: CacheStatus
    reason: str
    compute_ms: float
    stored_at: float
    fresh_until: float
    computed_here: bool


class _LocalFlight:
    """In-process single flight: one caller per key runs ``fn``, the others share it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[str, concurrent.futures.Future[Any]] = {}

    def busy(self, key: str) -> bool:
        """Whether a caller in this process is fetching ``key`` (a racy hint, lock-free)."""
        return key in self._calls

    def run(self, key: str, fn: Callable[[], T], timeout_s: float) -> tuple[T, bool]:
        """``(result, led)``; followers raise ``TimeoutError`` after ``timeout_s``, and the
        timed-out flight is abandoned so the next caller of ``key`` starts a new one."""
        with self._lock:
            future = self._calls.get(key)
            leader = future is None
            if future is None:
                future = concurrent.futures.Future()
                self._calls[key] = future
        if not leader:
            try:
                return future.result(timeout_s), False
            except concurrent.futures.TimeoutError:
                with self._lock:
                    if self._calls.get(key) is future:
                        del self._calls[key]
                raise TimeoutError(f"waited {timeout_s}s for the in-process leader") from None
        try:
            result = fn()
        except BaseException as exc:
            future.set_exception(exc)
            raise
        else:
            future.set_result(result)
            return result, True
        finally:
            with self._lock:
                if self._calls.get(key) is future:
                    del self._calls[key]


class _Watchdog:
    """Extends a held lock every ``ttl/3`` until stopped or ``max_s`` has passed."""

    def __init__(self, cache: SingleFlightCache[Any], lock_key: str, token: str, ttl_ms: int):
        self._cache = cache
        self._lock_key = lock_key
        self._token = token
        self._ttl_ms = ttl_ms
        self._stop = threading.Event()
        self.lost = False
        self._thread = threading.Thread(target=self._run, name="cache-lock-watchdog", daemon=True)

    def __enter__(self) -> _Watchdog:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        # Joined so ``lost`` is final before the caller decides whether to store.
        self._thread.join()

    def _run(self) -> None:
        interval = max(self._ttl_ms / 3000, 0.01)
        deadline = time.monotonic() + self._cache.compute_timeout_s
        while not self._stop.wait(interval):
            if time.monotonic() >= deadline:
                logger.warning(
                    "cache computation still running after %.0fs; letting its lock expire",
                    self._cache.compute_timeout_s,
                    extra={"cache": self._cache.name, "lock": self._lock_key},
                )
                return
            try:
                owned = self._cache._extend(keys=[self._lock_key], args=[self._token, self._ttl_ms])
            except RedisError:
                continue  # the next tick tries again; the lock may expire meanwhile
            if not owned:
                self.lost = True
                self._cache._count("cache_lock_lost")
                logger.warning(
                    "cache lock lost during computation (expired or taken over)",
                    extra={"cache": self._cache.name, "lock": self._lock_key},
                )
                return


class SingleFlightCache(Generic[T]):
    """Stampede-proof read-through cache; thread-safe, one instance per process."""

    def __init__(
        self,
        client: redis.Redis,
        codec: Codec[T],
        config: KpiConfig,
        *,
        name: str = "cache",
        prefix: str = "sightops:cache",
        metrics: Metrics | None = None,
        local_coalesce: bool = True,
        clock: Callable[[], float] = time.time,
        rand: Callable[[], float] = random.random,
        redis_retry_s: float | None = None,
    ) -> None:
        """``redis_retry_s``: the outage window when ``config.redis_retry_s`` is unset
        (``Settings.redis_retry_s``; default, that setting's default)."""
        self.client = client
        self.codec = codec
        self.config = config
        self.name = name
        self.prefix = prefix
        self.metrics = metrics
        self.local_coalesce = local_coalesce
        self.clock = clock
        self.rand = rand
        self._flight = _LocalFlight()
        #: The watchdog stops extending the lock after this long, so a computation that
        #: hangs (not merely slow) lets its lock expire and another caller take over.
        self.compute_timeout_s = max(config.compute_timeout_s, config.lock_ttl_s)
        if config.redis_retry_s is not None:
            redis_retry_s = config.redis_retry_s
        elif redis_retry_s is None:
            redis_retry_s = float(Settings.model_fields["redis_retry_s"].default)
        self.redis_guard = RedisOutageGuard(
            redis_retry_s, "computing values directly", logger=logger, extra={"cache": name}
        )
        self._entry_ms = int((config.ttl_s + config.stale_ttl_s) * 1000)
        self._get_or_lock = client.register_script(_GET_OR_LOCK)
        self._release = client.register_script(_RELEASE)
        self._extend = client.register_script(_EXTEND)
        self._store_and_release = client.register_script(_STORE_AND_RELEASE)

    # ---- keys ------------------------------------------------------------------------
    def value_key(self, key: str) -> str:
        """Hash-tagged so value and lock share a Redis Cluster slot (one Lua script)."""
        return f"{self.prefix}:{{{key}}}"

    def lock_key(self, key: str) -> str:
        return f"{self.prefix}:{{{key}}}:lock"

    # ---- public API --------------------------------------------------------------------
    def get(
        self,
        key: str,
        compute: Callable[[], T],
        *,
        invalidate_on: tuple[type[BaseException], ...] = (),
        absent_on: tuple[type[BaseException], ...] = (),
    ) -> CacheResult[T]:
        """The value for ``key``, computing it at most once across all callers.

        Exceptions from ``compute`` propagate to the caller that needed the value; when a
        refresh fails but an older value exists, that value is served instead (logged),
        unless the exception is one of ``invalidate_on`` (e.g. "the thing is gone"): then
        the entry is deleted and the exception raised. An exception of ``absent_on``
        (with ``not_found_ttl_s`` > 0) also leaves an absence marker: until it expires, ``get``
        raises :class:`KnownAbsentError` for the key without computing anything.
        """
        if absent_on and self.config.not_found_ttl_s > 0:
            compute = self._remembering_absence(key, compute, absent_on)
        else:
            absent_on = ()
        if not self._redis_usable():
            return self._coalesced(
                key, compute, lambda: self._compute_direct(key, compute, "redis_down")
            )
        if self.local_coalesce and self._flight.busy(key):
            # This process is already fetching the key: join it, no Redis round trip.
            return self._coalesced(key, compute, lambda: self._load(key, compute))
        try:
            raw = self.client.get(self.value_key(key))
        except RedisError as exc:
            self._redis_failed(exc)
            return self._coalesced(
                key, compute, lambda: self._compute_direct(key, compute, "redis_down")
            )
        self._raise_if_absent(key, raw)
        entry = Entry.decode(raw) if isinstance(raw, bytes) else None
        if entry is None:
            return self._coalesced(key, compute, lambda: self._load(key, compute))
        return self._serve(key, entry, compute, invalidate_on, absent_on)

    def refresh(self, key: str, compute: Callable[[], T]) -> CacheResult[T] | None:
        """Recompute and store now (scheduled precompute); None if another caller holds
        the lock (it is computing the same value). Raises ``CacheUnavailableError``
        when Redis is down: a value that cannot be stored is not worth computing."""
        token = uuid.uuid4().hex
        try:
            acquired = self.client.set(
                self.lock_key(key), token, nx=True, px=int(self.config.lock_ttl_s * 1000)
            )
        except RedisError as exc:
            self._redis_failed(exc)
            raise CacheUnavailableError(f"redis unavailable: {type(exc).__name__}") from exc
        if not acquired:
            return None
        return self._compute_locked(
            key, token, compute, "refresh", int(self.config.lock_ttl_s * 1000)
        )

    def peek(self, key: str) -> tuple[Entry | None, int]:
        """The stored entry (payload still encoded) and the lock's remaining ms (-2: none)."""
        pipe = self.client.pipeline(transaction=False)
        pipe.get(self.value_key(key))
        pipe.pttl(self.lock_key(key))
        raw, lock_ms = pipe.execute()
        return (Entry.decode(raw) if isinstance(raw, bytes) else None), int(lock_ms)

    def invalidate(self, key: str) -> None:
        """Delete the value (not the lock: a running computation releases its own)."""
        self.client.delete(self.value_key(key))

    # ---- paths -------------------------------------------------------------------------
    def _serve(
        self,
        key: str,
        entry: Entry,
        compute: Callable[[], T],
        invalidate_on: tuple[type[BaseException], ...],
        absent_on: tuple[type[BaseException], ...],
    ) -> CacheResult[T]:
        now = self.clock()
        if now < entry.fresh_until:
            beta = self.config.xfetch_beta
            # XFetch: -ln(rand) is Exp(1); 1 - random() is in (0, 1] so log() is defined.
            if beta > 0 and now - entry.delta_s * beta * math.log(1.0 - self.rand()) >= (
                entry.fresh_until
            ):
                return self._refresh_or_serve(key, entry, compute, "hit", invalidate_on, absent_on)
            return self._result(entry, "hit", "fresh")
        return self._refresh_or_serve(key, entry, compute, "stale", invalidate_on, absent_on)

    def _refresh_or_serve(
        self,
        key: str,
        entry: Entry,
        compute: Callable[[], T],
        status: CacheStatus,
        invalidate_on: tuple[type[BaseException], ...],
        absent_on: tuple[type[BaseException], ...],
    ) -> CacheResult[T]:
        """One caller recomputes (lock); everybody else gets ``entry`` right away."""
        reason = "early_refresh" if status == "hit" else "stale_refresh"
        token = uuid.uuid4().hex
        # The lock outlives the computation: at least twice the last compute time.
        lock_ms = int(max(self.config.lock_ttl_s, 2 * entry.delta_s) * 1000)
        try:
            acquired = self.client.set(self.lock_key(key), token, nx=True, px=lock_ms)
        except RedisError as exc:
            self._redis_failed(exc)
            acquired = False
        if not acquired:
            return self._result(entry, status, "fresh" if status == "hit" else "stale_locked")
        newer = self._stored_since(key, entry)
        if newer is not None:
            # Between our read and our lock another caller stored a new value and let the
            # lock go: serve theirs instead of computing the same thing a second time.
            self._safe(lambda: self._release(keys=[self.lock_key(key)], args=[token]))
            fresh = self.clock() < newer.fresh_until
            return self._result(newer, "hit" if fresh else "stale", "fresh")
        try:
            return self._compute_locked(key, token, compute, reason, lock_ms)
        except invalidate_on as exc:
            if not isinstance(exc, absent_on):  # otherwise its marker replaced the entry
                self._safe(lambda: self.client.delete(self.value_key(key)))
            raise
        except Exception as exc:
            self._count("cache_refresh_errors")
            logger.warning(
                "cache refresh failed; serving the previous value: %s",
                type(exc).__name__,
                extra={"cache": self.name, "key": key, "error": str(exc)[:300]},
            )
            return self._result(entry, status, "refresh_failed")

    def _stored_since(self, key: str, seen: Entry) -> Entry | None:
        """The entry under ``key`` if someone stored one since we read ``seen`` (None when
        it is unchanged, gone, or Redis failed)."""
        try:
            raw = self.client.get(self.value_key(key))
        except RedisError as exc:
            self._redis_failed(exc)
            return None
        current = Entry.decode(raw) if isinstance(raw, bytes) else None
        return current if current is not None and current != seen else None

    def _load(self, key: str, compute: Callable[[], T]) -> CacheResult[T]:
        """No value: take the lock and compute, or wait (bounded) for whoever holds it."""
        token = uuid.uuid4().hex
        lock_ms = int(self.config.lock_ttl_s * 1000)
        deadline = time.monotonic() + self.config.wait_s
        delay = self.config.poll_min_s
        waited = False
        value_key, lock_key = self.value_key(key), self.lock_key(key)
        while True:
            try:
                kind, raw = self._get_or_lock(keys=[value_key, lock_key], args=[token, lock_ms])
            except RedisError as exc:
                self._redis_failed(exc)
                return self._compute_direct(key, compute, "redis_down")
            if kind == 1:
                self._raise_if_absent(key, raw)
                entry = Entry.decode(raw)
                if entry is not None:
                    if waited:
                        return self._result(entry, "miss", "waited")
                    fresh = self.clock() < entry.fresh_until
                    return self._result(entry, "hit" if fresh else "stale", "fresh")
                # Undecodable junk under our key: overwrite it under a lock.
                self._safe(lambda: self.client.delete(value_key))
                continue
            if kind == 2:
                return self._compute_locked(
                    key, token, compute, "takeover" if waited else "cold", lock_ms
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._count("cache_wait_timeouts")
                logger.warning(
                    "waited %.1fs for another caller's computation; computing directly",
                    self.config.wait_s,
                    extra={"cache": self.name, "key": key},
                )
                return self._compute_direct(key, compute, "wait_timeout", store=True)
            waited = True
            time.sleep(min(delay * (0.8 + 0.4 * random.random()), remaining))
            delay = min(delay * 2, self.config.poll_max_s)

    def _compute_locked(
        self, key: str, token: str, compute: Callable[[], T], reason: str, lock_ms: int
    ) -> CacheResult[T]:
        lock_key = self.lock_key(key)
        started = self.clock()
        try:
            with _Watchdog(self, lock_key, token, lock_ms) as watchdog:
                value, payload, delta = self._timed(compute)
        except BaseException:
            self._safe(lambda: self._release(keys=[lock_key], args=[token]))
            raise
        entry = self._entry(payload, delta)
        if self._store(key, entry, started, token) < 0:
            # Our lock expired and someone else took over: their value is newer than ours,
            # so ours goes to our caller only.
            if not watchdog.lost:
                self._count("cache_lock_lost")
            logger.warning(
                "cache lock lost during computation; result not stored",
                extra={"cache": self.name, "key": key},
            )
        return self._computed(key, value, entry, reason)

    def _compute_direct(
        self, key: str, compute: Callable[[], T], reason: str, store: bool = False
    ) -> CacheResult[T]:
        started = self.clock()
        value, payload, delta = self._timed(compute)
        entry = self._entry(payload, delta)
        if store:
            self._store(key, entry, started, "")
        return self._computed(key, value, entry, reason)

    def _store(self, key: str, entry: Entry, started: float, token: str) -> int:
        """Store unless the lock was lost or a newer value is there (``_STORE_AND_RELEASE``);
        a Redis error counts as not stored."""
        try:
            return int(
                self._store_and_release(
                    keys=[self.value_key(key), self.lock_key(key)],
                    args=[entry.encode(), self._entry_ms, token, f"{started:.6f}"],
                )
            )
        except RedisError as exc:
            self._redis_failed(exc)
            return 0

    def _coalesced(
        self, key: str, compute: Callable[[], T], fn: Callable[[], CacheResult[T]]
    ) -> CacheResult[T]:
        """Run ``fn`` once per key in this process; the other callers share its result.

        Followers wait as long as the leader may take (its own bounded wait for Redis plus
        a computation), so they never give up together with it and compute one each. A
        leader that overruns even that is presumed hung: its followers share one new
        flight computing directly, then (if that hangs too) each computes its own.
        """
        if not self.local_coalesce:
            return fn()
        budget = self.config.wait_s + self.compute_timeout_s

        def direct() -> CacheResult[T]:
            return self._compute_direct(key, compute, "wait_timeout", store=True)

        try:
            result, led = self._flight.run(key, fn, budget)
        except TimeoutError:
            self._count("cache_wait_timeouts")
            logger.warning(
                "waited %.1fs for this process's leader; computing directly, once",
                budget,
                extra={"cache": self.name, "key": key},
            )
            try:
                result, led = self._flight.run(key, direct, budget)
            except TimeoutError:
                return self._compute_direct(key, compute, "wait_timeout")
        if led:
            return result
        self._count("cache_requests", status=result.status, reason="coalesced")
        return dataclasses.replace(result, reason="coalesced", computed_here=False)

    # ---- negative caching ----------------------------------------------------------------
    def _remembering_absence(
        self, key: str, compute: Callable[[], T], absent_on: tuple[type[BaseException], ...]
    ) -> Callable[[], T]:
        """``compute``, leaving an absence marker when it raises one of ``absent_on``.

        Stored like a lock-less value (``_STORE_AND_RELEASE`` without a token): a value
        stored after this computation started is kept, so "not found" never hides a
        project that a concurrent computation (or refresh) has just found.
        """

        def compute_or_mark() -> T:
            started = self.clock()
            try:
                return compute()
            except absent_on as exc:
                if self._redis_usable():
                    marker = b"%s%.6f\n%s" % (_ABSENT, self.clock(), str(exc)[:200].encode())
                    ttl_ms = max(1, int(self.config.not_found_ttl_s * 1000))
                    self._safe(
                        lambda: self._store_and_release(
                            keys=[self.value_key(key), self.lock_key(key)],
                            args=[marker, ttl_ms, "", f"{started:.6f}"],
                        )
                    )
                raise

        return compute_or_mark

    def _raise_if_absent(self, key: str, raw: object) -> None:
        if isinstance(raw, bytes) and raw.startswith(_ABSENT):
            self._count("cache_requests", status="absent", reason="not_found")
            _head, _sep, message = raw.partition(b"\n")
            raise KnownAbsentError(message.decode(errors="replace") or f"{key} does not exist")

    # ---- helpers -----------------------------------------------------------------------
    def _timed(self, compute: Callable[[], T]) -> tuple[T, bytes, float]:
        started = time.perf_counter()
        value = compute()
        payload = self.codec.dumps(value)
        return value, payload, time.perf_counter() - started

    def _entry(self, payload: bytes, delta: float) -> Entry:
        now = self.clock()
        return Entry(payload, now + self.config.ttl_s, delta, now)

    def _computed(self, key: str, value: T, entry: Entry, reason: str) -> CacheResult[T]:
        # One line per computation: rare by design, and the first place to look when
        # computations are not rare.
        logger.info(
            "%s %s computed in %.1f ms (%s)",
            self.name,
            key,
            entry.delta_s * 1000,
            reason,
            extra={
                "cache": self.name,
                "key": key,
                "cache_reason": reason,
                "compute_ms": round(entry.delta_s * 1000, 1),
            },
        )
        self._count("cache_computations", reason=reason)
        if self.metrics is not None:
            self.metrics.timing("cache_compute_ms", entry.delta_s * 1000, cache=self.name)
        self._count("cache_requests", status="miss", reason=reason)
        return CacheResult(
            value, "miss", reason, entry.delta_s * 1000, entry.stored_at, entry.fresh_until, True
        )

    def _result(self, entry: Entry, status: CacheStatus, reason: str) -> CacheResult[T]:
        self._count("cache_requests", status=status, reason=reason)
        return CacheResult(
            self.codec.loads(entry.payload),
            status,
            reason,
            entry.delta_s * 1000,
            entry.stored_at,
            entry.fresh_until,
            False,
        )

    def _count(self, name: str, **tags: object) -> None:
        if self.metrics is not None:
            self.metrics.incr(name, 1.0, cache=self.name, **tags)

    def _redis_usable(self) -> bool:
        return self.redis_guard.usable()

    def _redis_failed(self, exc: BaseException) -> None:
        """Count every error; the guard skips Redis for a while and warns once."""
        self._count("cache_redis_errors")
        self.redis_guard.failed(exc)

    def _safe(self, op: Callable[[], object]) -> None:
        """A best-effort Redis call: never raises (a lock we no longer own, Redis gone)."""
        try:
            op()
        except RedisError as exc:
            self._redis_failed(exc)
