"""Cloud Logging reader for the canary: Cloud Run's request log entries per revision and
per period of ``alignment_s`` (10 s by default), as the analysis's typed inputs
(docs/canary.md, "Reading the request logs").

Cloud Run writes one LogEntry per request it serves (log ``run.googleapis.com/requests``,
resource ``cloud_run_revision``, ``httpRequest.status`` and ``httpRequest.latency``), and
Cloud Logging shows it within seconds, where Monitoring's points are 60 s samples up to
180 s late: the first, 5 % step can be analysed every 10 s. One ``entries.list`` query per
read, ``orderBy "timestamp asc"``, every page followed, on ``resourceNames
[projects/<p>]`` (or the log view ``canary.logs_view``)::

    resource.type="cloud_run_revision"
    AND logName="projects/<p>/logs/run.googleapis.com%2Frequests"
    AND resource.labels.service_name="<s>" AND resource.labels.location="<r>"
    AND (resource.labels.revision_name="<canary>"
         OR (resource.labels.revision_name="<stable>" AND sample(insertId, <f>)))
    AND timestamp>"<from>" AND timestamp<="<to>"

(one line; the ``sample()`` clause only when ``stable_fraction`` < 1; values quoted with
``"`` and ``\\`` escaped). Every entry is a request, a 5xx is an error (a 4xx is the
client's doing), its latency falls in a bucket of ``bounds``; an entry without latency
counts as a request but not in the histogram.

**Sampling the stable.** The stable revision serves 95 % of the traffic on the first step:
reading all of it would cost pages (1000 entries each) and quota. ``sample(insertId, f)``
keeps a fraction ``f`` of its entries, chosen by a hash of each entry's insertId, which has
nothing to do with how the request went: the sample's error rate and latency distribution
are those of all the stable's requests, which is all the relative tests compare
(docs/canary.md, "The two tests"). The stable's ``Sample`` then counts the sampled
entries only. The canary is always read whole.

**Incremental reads.** Cloud Logging allows about one ``entries.list`` call a second per
project and the analysis re-reads the step every 10 s. The reader keeps, per query
(project, region, service, both revisions, fraction, grid, bounds), the whole periods it
has read (LRU over ``cache_size`` queries) and reads only after the last of them. The
cache trusts ``visibility_delay_s``: an entry arriving later than that after its period
was read is not counted (a new instance, which reads the step from its start, would).

google-cloud-logging is imported on first use (docs/architecture.md, "Cold start").
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from shared.canary._model import Histogram, Interval, Sample, exponential_bounds
from shared.canary._reading import US, ApiReader, from_us, grid, grpc_client, quote
from shared.errors import PermanentError, TransientError

if TYPE_CHECKING:
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client

    from shared.runtime import Deps
    from shared.settings import Settings

REQUESTS_LOG = "run.googleapis.com/requests"
RESOURCE_TYPE = "cloud_run_revision"
#: the Monitoring stand-in's request_latencies buckets (standins/monitoring.py,
#: LATENCY_BUCKETS), so both readers bucket a latency alike
LATENCY_BOUNDS = exponential_bounds(100, 1.4, 1.0)
MAX_PAGE_SIZE = 1000  # the API's


class LogsError(PermanentError):
    """Cloud Logging refused the query (bad filter, no permission, unknown resource): a
    retry cannot fix it."""


class LogsUnavailable(TransientError):
    """Cloud Logging stayed unavailable, slow or throttling through the bounded retries;
    a later analysis may succeed."""


@dataclass(slots=True)
class _Tally:
    """One revision over one period: requests, 5xx, latency bucket counts (None until an
    entry has a latency)."""

    requests: int = 0
    errors: int = 0
    counts: list[int] | None = None

    def add(self, status: int, latency_ms: float | None, bounds: tuple[float, ...]) -> None:
        self.requests += 1
        if status >= 500:
            self.errors += 1
        if latency_ms is not None:
            if self.counts is None:
                self.counts = [0] * (len(bounds) + 1)
            self.counts[bisect.bisect_right(bounds, latency_ms)] += 1

    def sample(self, bounds: tuple[float, ...]) -> Sample:
        if self.counts is None:
            return Sample(self.requests, self.errors)
        last = max(i for i, n in enumerate(self.counts) if n)
        return Sample(self.requests, self.errors, Histogram(bounds, tuple(self.counts[: last + 1])))


@dataclass(frozen=True, slots=True)
class _Key:
    """One query: what the cache of periods read is kept for."""

    resource: str
    project: str
    region: str
    service: str
    canary: str
    stable: str
    fraction: float
    alignment_s: int
    bounds: tuple[float, ...]


@dataclass(slots=True)
class _Read:
    """The whole periods read of one query: every period ending in ``(first_end - period,
    last_end]`` on the grid; ``periods`` holds those with entries, by their end."""

    first_end: int
    last_end: int
    periods: dict[int, tuple[_Tally, _Tally]] = field(default_factory=dict)


class LogsReader(ApiReader):
    """Reads Cloud Run's request log entries of a canary and its stable revision.

    ``client`` is the official GAPIC ``LoggingServiceV2Client`` (the stand-in's over an
    insecure channel in tests and locally: :func:`create_logging_client`). Every call
    retries UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED and INTERNAL for at most
    ``timeout_s`` in all (pages included), then raises :class:`LogsUnavailable`; any other
    refusal is a :class:`LogsError`. ``bounds`` are the latency histogram's boundaries
    (ms); ``view`` a log view to read instead of the project.
    """

    unavailable = LogsUnavailable
    refused = LogsError

    def __init__(
        self,
        client: LoggingServiceV2Client,
        *,
        alignment_s: int = 10,
        visibility_delay_s: float = 10.0,
        timeout_s: float = 10.0,
        page_size: int = MAX_PAGE_SIZE,
        bounds: tuple[float, ...] = LATENCY_BOUNDS,
        cache_size: int = 16,
        view: str | None = None,
    ) -> None:
        super().__init__(
            alignment_s=alignment_s, visibility_delay_s=visibility_delay_s, timeout_s=timeout_s
        )
        if not 1 <= page_size <= MAX_PAGE_SIZE or cache_size < 1:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE} and cache_size >= 1")
        Histogram(tuple(bounds), ())  # the bounds must increase
        self._client = client
        self.page_size = page_size
        self.bounds = tuple(bounds)
        self.cache_size = cache_size
        self.view = view
        self._cache: OrderedDict[_Key, _Read] = OrderedDict()
        self._lock = threading.Lock()

    def intervals(
        self,
        *,
        project: str,
        region: str,
        service: str,
        canary: str,
        stable: str,
        start: datetime,
        end: datetime,
        stable_fraction: float = 1.0,
        bounds: tuple[float, ...] | None = None,
    ) -> list[Interval]:
        """Canary and stable per period of the grid inside ``(start, end -
        visibility_delay]``, oldest first; empty when no whole period fits yet. The
        stable's entries are a ``stable_fraction`` sample (0 < f <= 1); ``bounds``
        replace the reader's latency bounds (a baseline's, so both are comparable)."""
        if not 0 < stable_fraction <= 1:
            raise ValueError(f"stable_fraction must be in (0, 1], not {stable_fraction}")
        periods = grid(start, end, self.alignment_s, self.visibility_delay_s)
        if periods is None:
            return []
        first_end, last_end, period = periods
        key = _Key(
            self.view or f"projects/{project}",
            project,
            region,
            service,
            canary,
            stable,
            float(stable_fraction),
            self.alignment_s,
            self.bounds if bounds is None else tuple(bounds),
        )
        read = self._cached(key, first_end)
        if read is None:  # a miss, or a cache that begins after ``start``: from the start
            read = _Read(first_end, first_end - period)
        if read.last_end < last_end:
            deadline = time.monotonic() + self.timeout_s
            fresh = self._read(key, read.last_end, last_end, period, deadline)
            read = _Read(read.first_end, last_end, {**read.periods, **fresh})
            self._store(key, read)
        empty = (_Tally(), _Tally())
        out: list[Interval] = []
        for period_end in range(first_end, last_end + 1, period):
            canary_tally, stable_tally = read.periods.get(period_end, empty)
            out.append(
                Interval(
                    canary=canary_tally.sample(key.bounds), stable=stable_tally.sample(key.bounds)
                )
            )
        return out

    # ------------------------------------------------------------------ the cache

    def _cached(self, key: _Key, first_end: int) -> _Read | None:
        with self._lock:
            read = self._cache.get(key)
            if read is None or read.first_end > first_end:
                return None
            self._cache.move_to_end(key)
            return read

    def _store(self, key: _Key, read: _Read) -> None:
        with self._lock:
            self._cache[key] = read
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # ------------------------------------------------------------------ the reads

    def _read(
        self, key: _Key, after: int, until: int, period: int, deadline: float
    ) -> dict[int, tuple[_Tally, _Tally]]:
        """Tallies per period end of the entries in ``(after, until]`` (microseconds),
        every page of one query."""
        request: dict[str, Any] = {
            "resource_names": [key.resource],
            "filter": _filter(key, after, until),
            "order_by": "timestamp asc",
            "page_size": self.page_size,
        }
        out: dict[int, tuple[_Tally, _Tally]] = {}
        token = ""
        while True:
            page = self._page({**request, "page_token": token}, key.service, deadline)
            raw = type(page).pb(page)  # plain protobuf: thousands of entries, read fast
            for entry in raw.entries:
                self._count(entry, key, after, until, period, out)
            token = raw.next_page_token
            if not token:
                return out

    @staticmethod
    def _count(
        entry: Any,
        key: _Key,
        after: int,
        until: int,
        period: int,
        out: dict[int, tuple[_Tally, _Tally]],
    ) -> None:
        revision = entry.resource.labels.get("revision_name", "")
        side = 0 if revision == key.canary else 1 if revision == key.stable else None
        moment = int(entry.timestamp.seconds) * US + int(entry.timestamp.nanos) // 1000
        if side is None or not after < moment <= until:
            return  # not asked for: the filter already keeps such entries out
        period_end = -(-moment // period) * period
        tallies = out.get(period_end)
        if tallies is None:
            tallies = out[period_end] = (_Tally(), _Tally())
        http = entry.http_request
        latency_ms = None
        if entry.HasField("http_request") and http.HasField("latency"):
            latency_ms = int(http.latency.seconds) * 1000.0 + int(http.latency.nanos) / 1e6
        tallies[side].add(int(http.status), latency_ms, key.bounds)

    def _page(self, request: dict[str, Any], service: str, deadline: float) -> Any:
        what = f"Cloud Logging request logs of {service}"
        return self.first_page(self._client.list_log_entries, request, what, deadline)


# --------------------------------------------------------------------------- helpers


def stable_fraction(stable_per_s: float, max_per_s: float) -> float:
    """The share of the stable's log entries to read: all of them up to ``max_per_s`` a
    second, else the largest power of two under ``max_per_s / stable_per_s``. A power of
    two keeps one fraction while the stable's rate moves a little between analyses (the
    reader's cache is per fraction)."""
    if stable_per_s <= max_per_s:
        return 1.0
    return float(2.0 ** math.floor(math.log2(max_per_s / stable_per_s)))


def _rfc3339(moment_us: int) -> str:
    moment = from_us(moment_us)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond:06d}Z" if moment.microsecond else f"{text}Z"


def _fraction(value: float) -> str:
    """A fraction as a plain decimal (at most 6 places, never 0)."""
    return f"{max(value, 1e-6):.6f}".rstrip("0").rstrip(".")


def _filter(key: _Key, after: int, until: int) -> str:
    revision = "resource.labels.revision_name"
    stable = f"{revision}={quote(key.stable)}"
    if key.fraction < 1:
        stable = f"({stable} AND sample(insertId, {_fraction(key.fraction)}))"
    log_name = f"projects/{key.project}/logs/{REQUESTS_LOG.replace('/', '%2F')}"
    return " AND ".join(
        (
            f"resource.type={quote(RESOURCE_TYPE)}",
            f"logName={quote(log_name)}",
            f"resource.labels.service_name={quote(key.service)}",
            f"resource.labels.location={quote(key.region)}",
            f"({revision}={quote(key.canary)} OR {stable})",
            f"timestamp>{quote(_rfc3339(after))}",
            f"timestamp<={quote(_rfc3339(until))}",
        )
    )


# --------------------------------------------------------------------------- wiring


def create_logging_client(settings: Settings) -> LoggingServiceV2Client:
    """The official GAPIC LoggingServiceV2Client: over an insecure gRPC channel to
    ``canary.logging_endpoint`` (``host:port`` of the stand-in) when it is set, with
    Application Default Credentials to the real API otherwise."""
    from google.cloud.logging_v2.services.logging_service_v2 import LoggingServiceV2Client
    from google.cloud.logging_v2.services.logging_service_v2.transports import (
        LoggingServiceV2GrpcTransport,
    )

    endpoint = settings.canary.logging_endpoint
    return grpc_client(endpoint, LoggingServiceV2Client, LoggingServiceV2GrpcTransport)


def create_logs_reader(settings: Settings) -> LogsReader:
    config = settings.canary
    return LogsReader(
        create_logging_client(settings),
        alignment_s=config.logs_alignment_s,
        visibility_delay_s=config.logs_visibility_delay_s,
        timeout_s=config.api_timeout_s,
        view=config.logs_view,
    )


def _reader_of(deps: Deps) -> LogsReader:
    return create_logs_reader(deps.settings)


def logs_reader_for(deps: Deps) -> LogsReader:
    """The one reader of these deps, built on first use (a gRPC channel is costly; the
    cache of periods read lives as long as the deps)."""
    return deps.service(_reader_of)


__all__ = [
    "LATENCY_BOUNDS",
    "REQUESTS_LOG",
    "LogsError",
    "LogsReader",
    "LogsUnavailable",
    "create_logging_client",
    "create_logs_reader",
    "logs_reader_for",
    "stable_fraction",
]
