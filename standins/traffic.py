"""A traffic generator: real HTTP requests at a steady rate, on a background thread.

Local canaries need traffic through the Cloud Run stand-in's split for the Cloud
Monitoring stand-in to count (docs/standins.md, "Traffic"). :class:`Traffic` sends
request k at ``start + k / rps`` (a steady rate, not a burst: Monitoring's per-second
samples then see what a steady service sees), hands each to a small pool so a slow
revision does not slow the rate, and reports what came back, per status and per
revision (the ``X-Standin-Revision`` header the router sets)::

    with Traffic(service_uri, rps=50) as traffic:
        time.sleep(120)
    print(traffic.report)

``python -m standins traffic --url URL --rps 50 --duration 60`` does the same and prints
the report as JSON.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Self

import httpx

REVISION_HEADER = "X-Standin-Revision"


@dataclass(frozen=True)
class TrafficReport:
    """What the traffic got back. ``failed``: requests without an answer (connection
    refused, timeout); ``by_revision_status``: status counts per serving revision."""

    sent: int
    by_status: Mapping[int, int]
    by_revision: Mapping[str, int]
    by_revision_status: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    failed: int = 0
    elapsed_s: float = 0.0

    def server_errors(self, revision: str | None = None) -> int:
        """5xx answers, of one revision or of all."""
        counts = self.by_status if revision is None else self.by_revision_status.get(revision, {})
        return sum(n for status, n in counts.items() if status >= 500)

    def to_json(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "failed": self.failed,
            "elapsed_s": round(self.elapsed_s, 3),
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_revision": dict(sorted(self.by_revision.items())),
            "by_revision_status": {
                revision: {str(k): v for k, v in sorted(counts.items())}
                for revision, counts in sorted(self.by_revision_status.items())
            },
        }


class Traffic:
    """Steady traffic to ``url`` + a path until :meth:`stop` (or the ``with`` block ends).

    ``path``: one path, or several picked at random (``seed``) per request; ``clock``:
    monotonic seconds (the schedule); ``concurrency``: requests in flight at most (a
    request waits for a free slot, so a slow upstream lowers the rate only once that
    many are waiting on it).
    """

    def __init__(
        self,
        url: str,
        rps: float,
        *,
        path: str | Sequence[str] = "/health",
        method: str = "GET",
        clock: Callable[[], float] = time.monotonic,
        seed: int | None = None,
        concurrency: int = 16,
        timeout_s: float = 10.0,
    ) -> None:
        if not rps > 0:
            raise ValueError("rps must be > 0")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.url = url.rstrip("/")
        self.rps = float(rps)
        self.paths = (path,) if isinstance(path, str) else tuple(path)
        if not self.paths:
            raise ValueError("give at least one path")
        self.method = method.upper()
        self._clock = clock
        self._rng = random.Random(seed)
        self._concurrency = concurrency
        self._timeout_s = timeout_s
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(concurrency)
        self._thread: threading.Thread | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._client: httpx.Client | None = None
        self._sent = 0
        self._failed = 0
        self._by_status: dict[int, int] = {}
        self._by_revision_status: dict[str, dict[int, int]] = {}
        self._started_at = 0.0
        self._until: float | None = None
        self.report: TrafficReport | None = None

    # ---------------------------------------------------------------- lifecycle

    def start(self, duration_s: float | None = None) -> Self:
        """Start sending; with ``duration_s``, the requests due within that time and no
        more (however late a busy machine runs the schedule)."""
        if self._thread is not None:
            raise RuntimeError("this traffic was already started")
        limits = httpx.Limits(max_connections=self._concurrency)
        self._client = httpx.Client(timeout=self._timeout_s, limits=limits)
        self._pool = ThreadPoolExecutor(self._concurrency, thread_name_prefix="traffic")
        self._started_at = self._clock()
        if duration_s is not None:
            self._until = self._started_at + duration_s
        self._thread = threading.Thread(target=self._run, name="traffic-schedule", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> TrafficReport:
        """Stop sending, wait for the requests in flight, and report. Idempotent."""
        if self.report is not None:
            return self.report
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        with self._lock:
            self.report = TrafficReport(
                sent=self._sent,
                by_status=dict(self._by_status),
                by_revision={r: sum(c.values()) for r, c in self._by_revision_status.items()},
                by_revision_status={r: dict(c) for r, c in self._by_revision_status.items()},
                failed=self._failed,
                elapsed_s=self._clock() - self._started_at if self._thread else 0.0,
            )
        return self.report

    def run(self, duration_s: float) -> TrafficReport:
        """Send ``rps * duration_s`` requests at the steady rate (fewer if :meth:`stop`
        comes first), wait for their answers and report."""
        self.start(duration_s)
        assert self._thread is not None
        self._thread.join()
        return self.stop()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- sending

    def _run(self) -> None:
        assert self._pool is not None
        k = 0
        while not self._stop.is_set():
            due = self._started_at + k / self.rps
            if self._until is not None and due >= self._until:
                return
            wait = due - self._clock()
            if wait > 0 and self._stop.wait(wait):
                return
            # a free slot first: at most ``concurrency`` requests in flight
            while not self._slots.acquire(timeout=0.1):
                if self._stop.is_set():
                    return
            path = self.paths[0] if len(self.paths) == 1 else self._rng.choice(self.paths)
            with self._lock:
                self._sent += 1
            self._pool.submit(self._send, path)
            k += 1

    def _send(self, path: str) -> None:
        assert self._client is not None
        try:
            answer = self._client.request(self.method, self.url + path)
        except httpx.HTTPError:
            with self._lock:
                self._failed += 1
            return
        finally:
            self._slots.release()
        revision = answer.headers.get(REVISION_HEADER)
        status = answer.status_code
        with self._lock:
            self._by_status[status] = self._by_status.get(status, 0) + 1
            if revision:  # answered through the Cloud Run stand-in's router
                counts = self._by_revision_status.setdefault(revision, {})
                counts[status] = counts.get(status, 0) + 1


__all__ = ["Traffic", "TrafficReport"]
