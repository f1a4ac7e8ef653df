"""KPI cache stampede benchmark: this cache vs dogpile.cache vs cashews, same run, same Redis.

    .venv/bin/python bench/kpi_stampede.py                 # both workloads
    .venv/bin/python bench/kpi_stampede.py --callers 200 --rounds 5 --reads 5000

For each cache and each workload:

- **stampede**: ``--callers`` concurrent callers released at once on a cold key, ``--rounds``
  times with a new key: computations per stampede (counted inside the compute function),
  and p50/p99 latency of every caller;
- **warm reads**: one caller reading a warm key ``--reads`` times, against raw Redis GETs of
  the same key through the same client (ratio >= 0.5 is the target).

Workloads: ``synthetic`` (a fixed 200 ms computation returning a 2 KB payload) and ``kpi``
(the real KPI computation on a project seeded by bench/seed.py into ``DATABASE_URL``).

Peers, configured as their documentation recommends against stampedes:

- dogpile.cache: ``dogpile.cache.redis`` with ``distributed_lock=True`` (a redis-py Lock,
  polled every ``lock_sleep`` = 0.1 s), ``thread_local_lock=False``; callers are threads;
- cashews: Redis backend, ``@cache(ttl, lock=True)`` (a Redis lock plus its default
  in-process "thunder protection"); callers are asyncio tasks (its native model), a sync
  computation runs in ``asyncio.to_thread``.

This cache runs twice: as deployed (in-process coalescing on) and with coalescing off, so
every caller goes through the Redis lock (what N single-request instances would see).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import redis  # noqa: E402

from shared.cache import create_redis  # noqa: E402
from shared.kpi.cache import BytesCodec, SingleFlightCache  # noqa: E402
from shared.metrics import create_metrics  # noqa: E402
from shared.settings import Settings  # noqa: E402

SYNTHETIC_S = 0.2
PAYLOAD = json.dumps({"k": "x" * 2000}).encode()


@dataclass
class Row:
    workload: str
    cache: str
    compute_ms: float
    computations: list[int]
    p50_ms: float
    p99_ms: float
    max_ms: float
    warm_reads_per_s: float
    raw_get_per_s: float

    @property
    def warm_ratio(self) -> float:
        return self.warm_reads_per_s / self.raw_get_per_s


class Counter:
    """Counts real computations; the compute function of every cache goes through it."""

    def __init__(self, compute: Callable[[], bytes]) -> None:
        self.compute = compute
        self.calls = 0
        self._lock = threading.Lock()

    def __call__(self) -> bytes:
        with self._lock:
            self.calls += 1
        return self.compute()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def read_rate(read: Callable[[], object], n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        read()
    return n / (time.perf_counter() - started)


Stampede = tuple[list[float], set[bytes]]


class ThreadedImpl:
    """A synchronous cache driven by threads released together by a barrier."""

    name = ""

    def __init__(self, pool: ThreadPoolExecutor, callers: int) -> None:
        self.pool = pool
        self.callers = callers

    def get(self, key: str, compute: Callable[[], bytes]) -> bytes:
        raise NotImplementedError

    def raw_get(self, key: str) -> object:
        raise NotImplementedError

    def stampede(self, key: str, compute: Callable[[], bytes]) -> Stampede:
        barrier = threading.Barrier(self.callers)

        def one(_: int) -> tuple[float, bytes]:
            barrier.wait()
            started = time.perf_counter()
            value = self.get(key, compute)
            return (time.perf_counter() - started) * 1000, value

        results = list(self.pool.map(one, range(self.callers)))
        return [ms for ms, _ in results], {v for _, v in results}

    def warm_rates(self, key: str, compute: Callable[[], bytes], reads: int) -> tuple[float, float]:
        """Median rates of 5 alternating chunks: the cache's read vs a raw GET."""
        self.get(key, compute)
        warm, raw = [], []
        for _ in range(5):
            warm.append(read_rate(lambda: self.get(key, compute), reads // 5))
            raw.append(read_rate(lambda: self.raw_get(key), reads // 5))
        return statistics.median(warm), statistics.median(raw)

    def close(self) -> None:
        """Release clients."""


class Ours(ThreadedImpl):
    def __init__(
        self, settings: Settings, pool: ThreadPoolExecutor, callers: int, coalesce: bool
    ) -> None:
        super().__init__(pool, callers)
        self.name = "this cache" if coalesce else "this cache, Redis lock only"
        # The production client, with a patient pool wait: 200 callers share one process.
        self.client = create_redis(settings.model_copy(update={"redis_timeout_s": 30.0}))
        self.cache = SingleFlightCache(
            self.client,
            BytesCodec(),
            settings.kpi,
            name="bench",
            prefix=f"bench:ours:{uuid.uuid4().hex[:6]}",
            metrics=create_metrics(settings),
            local_coalesce=coalesce,
        )

    def get(self, key: str, compute: Callable[[], bytes]) -> bytes:
        return self.cache.get(key, compute).value

    def raw_get(self, key: str) -> object:
        return self.client.get(self.cache.value_key(key))

    def close(self) -> None:
        self.client.close()


class Dogpile(ThreadedImpl):
    name = "dogpile.cache"

    def __init__(self, settings: Settings, pool: ThreadPoolExecutor, callers: int) -> None:
        from dogpile.cache import make_region

        super().__init__(pool, callers)
        self.region = make_region(key_mangler=lambda k: f"bench:dogpile:{k}").configure(
            "dogpile.cache.redis",
            expiration_time=settings.kpi.ttl_s,
            arguments={
                # The same blocking pool as this cache: redis-py's default pool raises
                # MaxConnectionsError past 100 concurrent users.
                "connection_pool": redis.BlockingConnectionPool.from_url(
                    settings.redis_url.get_secret_value(),
                    max_connections=settings.redis_max_connections,
                    timeout=30,
                ),
                "distributed_lock": True,
                "thread_local_lock": False,
                "lock_timeout": int(settings.kpi.lock_ttl_s),
                "redis_expiration_time": int(settings.kpi.ttl_s + settings.kpi.stale_ttl_s),
            },
        )
        self.client = self.region.backend.reader_client

    def get(self, key: str, compute: Callable[[], bytes]) -> bytes:
        return self.region.get_or_create(key, compute)  # type: ignore[no-any-return]

    def raw_get(self, key: str) -> object:
        return self.client.get(f"bench:dogpile:{key}")


class Cashews:
    """cashews on its own event loop (a background thread), driven with asyncio tasks."""

    name = "cashews (lock=True)"

    def __init__(self, settings: Settings, callers: int) -> None:
        self.callers = callers
        self.settings = settings
        self.counter = Counter(synthetic)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self._run(self._setup())

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _setup(self) -> None:
        from cashews import Cache

        self.cache = Cache()
        self.cache.setup(
            self.settings.redis_url.get_secret_value(),
            client_side=False,
            max_connections=self.settings.redis_max_connections,
        )

        @self.cache(ttl=int(self.settings.kpi.ttl_s), key="bench:cashews:{key}", lock=True)
        async def cached(key: str) -> bytes:
            counter = self.counter
            if counter.compute is synthetic:  # its native equivalent of the 200 ms sleep
                counter.calls += 1  # one event loop thread: no race
                await asyncio.sleep(SYNTHETIC_S)
                return PAYLOAD
            return await asyncio.to_thread(counter)

        self.cached = cached
        await cached(uuid.uuid4().hex)
        backend: Any = next(iter(self.cache._backends.values()))
        self.client = backend._client  # the backend's own redis.asyncio client

    def stampede(self, key: str, compute: Callable[[], bytes]) -> Stampede:
        assert isinstance(compute, Counter)
        self.counter = compute
        return self._run(self._stampede(key))  # type: ignore[no-any-return]

    async def _stampede(self, key: str) -> Stampede:
        go = asyncio.Event()

        async def one() -> tuple[float, bytes]:
            await go.wait()
            started = time.perf_counter()
            value = await self.cached(key)
            return (time.perf_counter() - started) * 1000, value

        tasks = [asyncio.create_task(one()) for _ in range(self.callers)]
        await asyncio.sleep(0.05)
        go.set()
        results = await asyncio.gather(*tasks)
        return [ms for ms, _ in results], {v for _, v in results}

    def warm_rates(self, key: str, compute: Callable[[], bytes], reads: int) -> tuple[float, float]:
        self.counter = Counter(compute)
        return self._run(self._warm_rates(key, reads))  # type: ignore[no-any-return]

    async def _warm_rates(self, key: str, reads: int) -> tuple[float, float]:
        await self.cached(key)

        async def rate(read: Callable[[], Any]) -> float:
            started = time.perf_counter()
            for _ in range(reads // 5):
                await read()
            return (reads // 5) / (time.perf_counter() - started)

        warm, raw = [], []
        for _ in range(5):
            warm.append(await rate(lambda: self.cached(key)))
            raw.append(await rate(lambda: self.client.get(f"bench:cashews:{key}")))
        return statistics.median(warm), statistics.median(raw)

    def close(self) -> None:
        self._run(self.cache.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


Impl = ThreadedImpl | Cashews


def run_workload(
    settings: Settings, workload: str, compute: Callable[[], bytes], args: Any
) -> list[Row]:
    """Every cache on the same workload, stampede rounds interleaved so that machine noise
    falls on all of them alike; the first ``--warmup`` rounds are not counted."""
    pool = ThreadPoolExecutor(args.callers)
    impls: list[Impl] = [
        Ours(settings, pool, args.callers, coalesce=True),
        Ours(settings, pool, args.callers, coalesce=False),
        Dogpile(settings, pool, args.callers),
        Cashews(settings, args.callers),
    ]
    latencies: dict[str, list[float]] = {i.name: [] for i in impls}
    computations: dict[str, list[int]] = {i.name: [] for i in impls}
    for round_no in range(args.warmup + args.rounds):
        for impl in impls:
            counter = Counter(compute)
            ms, values = impl.stampede(uuid.uuid4().hex, counter)
            assert len(values) == 1, f"{impl.name}: callers saw different values"
            if round_no >= args.warmup:
                latencies[impl.name] += ms
                computations[impl.name].append(counter.calls)
    rows = []
    for impl in impls:
        warm, raw = impl.warm_rates(uuid.uuid4().hex, compute, args.reads)
        impl.close()
        rows.append(
            Row(
                workload,
                impl.name,
                round(typical_compute_ms(compute), 1),
                computations[impl.name],
                round(percentile(latencies[impl.name], 50), 1),
                round(percentile(latencies[impl.name], 99), 1),
                round(max(latencies[impl.name]), 1),
                round(warm),
                round(raw),
            )
        )
    pool.shutdown()
    return rows


# ---- workloads and report ------------------------------------------------------------------


def synthetic() -> bytes:
    time.sleep(SYNTHETIC_S)
    return PAYLOAD


_compute_ms: dict[int, float] = {}


def typical_compute_ms(compute: Callable[[], bytes]) -> float:
    """Median of a few direct runs (what "compute time" means in the targets)."""
    key = id(compute)
    if key not in _compute_ms:
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            compute()
            runs.append((time.perf_counter() - started) * 1000)
        _compute_ms[key] = statistics.median(runs)
    return _compute_ms[key]


def kpi_compute(settings: Settings, reseed: bool) -> Callable[[], bytes]:
    """The real computation on a seeded project (seeds the "kpi-bench" namespace if absent)."""
    from sqlalchemy import text

    from bench.seed import SeedSpec, project_ids, seed
    from shared.db import create_db_engine
    from shared.graph import create_driver
    from shared.kpi.queries import compute_project_kpis

    spec = SeedSpec(namespace="kpi-bench")
    engine = create_db_engine(settings, pool_size=20, max_overflow=20)
    driver = create_driver(settings)
    project_id = project_ids(spec)[3]
    with engine.connect() as conn:
        present = conn.execute(
            text("SELECT count(*) FROM personas WHERE project_id = :p"), {"p": project_id}
        ).scalar_one()
    if reseed or not present:
        seed(engine, driver, spec)

    def compute() -> bytes:
        kpis = compute_project_kpis(engine, driver, project_id, datetime.now(UTC))
        return kpis.model_dump_json(exclude={"computed_at", "compute_ms"}).encode()

    return compute


def targets(rows: list[Row]) -> list[str]:
    notes = []
    for row in rows:
        if not row.cache.startswith("this cache"):
            continue
        peers = [r for r in rows if r.workload == row.workload and not r.cache.startswith("this")]
        checks = {
            "1 computation per stampede": set(row.computations) == {1},
            "p99 <= compute + 50 ms": row.p99_ms <= row.compute_ms + 50,
            "warm reads >= 0.5x raw GET": row.warm_ratio >= 0.5,
            "no column worse than a peer": all(
                max(row.computations) <= max(p.computations)
                and row.p50_ms <= p.p50_ms
                and row.p99_ms <= p.p99_ms
                and row.warm_ratio >= p.warm_ratio
                for p in peers
            ),
        }
        for name, ok in checks.items():
            notes.append(f"{row.workload} / {row.cache}: {name}: {'met' if ok else 'NOT met'}")
    return notes


def markdown(rows: list[Row]) -> str:
    lines = [
        "| workload | cache | compute ms | computations per stampede | p50 ms | p99 ms |"
        " warm reads/s | raw GET/s | warm/raw |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.workload} | {r.cache} | {r.compute_ms} | {', '.join(map(str, r.computations))}"
            f" | {r.p50_ms} | {r.p99_ms} | {r.warm_reads_per_s} | {r.raw_get_per_s}"
            f" | {r.warm_ratio:.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--reads", type=int, default=5000)
    parser.add_argument("--warmup", type=int, default=1, help="uncounted rounds first")
    parser.add_argument("--workload", choices=["synthetic", "kpi", "both"], default="both")
    parser.add_argument("--reseed", action="store_true", help="seed the kpi workload again")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    args = parser.parse_args(argv)
    settings = Settings()
    workloads: list[tuple[str, Callable[[], bytes]]] = []
    if args.workload in {"synthetic", "both"}:
        workloads.append(("synthetic 200 ms", synthetic))
    if args.workload in {"kpi", "both"}:
        workloads.append(("real KPI", kpi_compute(settings, args.reseed)))
    rows: list[Row] = []
    for name, compute in workloads:
        typical_compute_ms(compute)
        rows += run_workload(settings, name, compute, args)
    print(
        f"{args.callers} callers per stampede, {args.rounds} stampedes (+{args.warmup} warm-up),"
        f" {args.reads} warm reads\n"
    )
    print(markdown(rows))
    print()
    for note in targets(rows):
        print(note)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
