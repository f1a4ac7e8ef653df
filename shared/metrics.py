"""Metrics seam: counters and timings.

Handlers only call :meth:`Metrics.incr` / :meth:`Metrics.timing`, which aggregate in
memory (cheap, never blocking the hot path). The log backend writes each observation as
a structured log line (log-based metrics work on them too); the Cloud Monitoring
backend flushes cumulative custom metrics in batches from a background thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from shared.log import labels as log_labels
from shared.settings import Settings

logger = logging.getLogger("sightops.metrics")

METRIC_PREFIX = "custom.googleapis.com/sightops/"
SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


def _key(name: str, tags: Mapping[str, object]) -> SeriesKey:
    return name, tuple(sorted((k, str(v)) for k, v in tags.items()))


class Metrics:
    """In-memory aggregation shared by every backend; also the test double's truth."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counters: dict[SeriesKey, float] = defaultdict(float)
        self._timings: dict[SeriesKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self.started_at = datetime.now(UTC)

    def incr(self, name: str, value: float = 1.0, **tags: object) -> None:
        with self._lock:
            self._counters[_key(name, tags)] += value
        self._observed("counter", name, value, tags)

    def timing(self, name: str, ms: float, **tags: object) -> None:
        with self._lock:
            series = self._timings[_key(name, tags)]
            series[0] += 1
            series[1] += ms
        self._observed("timing", name, ms, tags)

    def gauge(self, name: str, value: float, **tags: object) -> None:
        with self._lock:
            self._counters[_key(name, tags)] = value
        self._observed("gauge", name, value, tags)

    def counter(self, name: str, **tags: object) -> float:
        with self._lock:
            return self._counters.get(_key(name, tags), 0.0)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "counters": dict(self._counters),
                "timings": {k: tuple(v) for k, v in self._timings.items()},
            }

    def _observed(self, kind: str, name: str, value: float, tags: Mapping[str, object]) -> None:
        """Backends hook here; the base does nothing."""

    def close(self) -> None:
        """Flush what is pending; the base has nothing to flush."""


class LogMetrics(Metrics):
    """Local backend: one DEBUG log line per observation."""

    def _observed(self, kind: str, name: str, value: float, tags: Mapping[str, object]) -> None:
        if logger.isEnabledFor(logging.DEBUG):
            logger.debug(
                "metric %s",
                name,
                extra={
                    "metric": {"kind": kind, "name": name, "value": value},
                    **log_labels(**tags),
                },
            )


class CloudMonitoringMetrics(Metrics):
    """Production backend: cumulative custom metrics written in batches, off the hot path."""

    def __init__(
        self,
        project: str,
        flush_interval_s: float = 60.0,
        client_factory: Callable[[], Any] | None = None,
    ) -> None:
        super().__init__()
        self._project = project
        self._interval = flush_interval_s
        self._factory = client_factory
        self._client: Any = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-flush", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def _make_client(self) -> Any:
        if self._factory is not None:
            return self._factory()
        from google.cloud import monitoring_v3

        return monitoring_v3.MetricServiceClient()

    def time_series(self) -> list[Any]:
        """Current totals as TimeSeries protos (one point each, cumulative since start)."""
        from google.api import metric_pb2
        from google.cloud import monitoring_v3

        snap = self.snapshot()
        now = time.time()
        start = self.started_at.timestamp()
        interval = monitoring_v3.TimeInterval(
            {
                "start_time": {"seconds": int(start), "nanos": int((start % 1) * 1e9)},
                "end_time": {"seconds": int(now), "nanos": int((now % 1) * 1e9)},
            }
        )
        rows: list[tuple[str, tuple[tuple[str, str], ...], float]] = [
            (name, tags, value) for (name, tags), value in snap["counters"].items()
        ]
        for (name, tags), (count, total) in snap["timings"].items():
            rows.append((f"{name}_count", tags, count))
            rows.append((f"{name}_sum_ms", tags, total))
        series = []
        for name, tags, value in rows:
            ts = monitoring_v3.TimeSeries()
            ts.metric.type = METRIC_PREFIX + name
            ts.metric.labels.update(dict(tags))
            ts.resource.type = "global"
            ts.resource.labels["project_id"] = self._project
            ts.metric_kind = metric_pb2.MetricDescriptor.MetricKind.CUMULATIVE
            ts.value_type = metric_pb2.MetricDescriptor.ValueType.DOUBLE
            ts.points = [
                monitoring_v3.Point({"interval": interval, "value": {"double_value": value}})
            ]
            series.append(ts)
        return series

    def flush(self) -> int:
        """Write all series (200 per request, the API's limit); returns how many were sent."""
        series = self.time_series()
        if not series:
            return 0
        try:
            if self._client is None:
                self._client = self._make_client()
            for i in range(0, len(series), 200):
                self._client.create_time_series(
                    name=f"projects/{self._project}", time_series=series[i : i + 200]
                )
        except Exception as exc:  # metrics must never break the function
            logger.warning("metrics flush failed: %s", type(exc).__name__)
            return 0
        return len(series)

    def close(self) -> None:
        self._stop.set()
        self.flush()


def create_metrics(settings: Settings) -> Metrics:
    if settings.metrics_backend == "cloud_monitoring":
        return CloudMonitoringMetrics(settings.gcp_project)
    return LogMetrics()
