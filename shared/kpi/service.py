"""KPIs through the cache: what the HTTP function, kpi_refresh and the CLI call.

Cached values are the model's JSON bytes, so a hit is served without parsing or
re-serialising anything. Unknown projects are cached as "not found" for
``not_found_ttl_s``, and at most ``max_computations`` run at once per instance: a flood of
distinct ids is refused fast (:class:`OverloadedError`) instead of queueing on the
database pool while cached projects keep being served (docs/kpi.md).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

from shared.db import is_transient as db_is_transient
from shared.errors import SightOpsError, TransientError
from shared.graph import is_transient as graph_is_transient
from shared.kpi.cache import (
    BytesCodec,
    CacheResult,
    CacheUnavailableError,
    KnownAbsentError,
    SingleFlightCache,
)
from shared.kpi.model import SCHEMA_VERSION, ProjectKpis
from shared.kpi.queries import ProjectNotFoundError, active_project_ids, compute_project_kpis

if TYPE_CHECKING:
    from shared.runtime import Deps

logger = logging.getLogger("sightops.kpi")

T = TypeVar("T")

#: Compute function: project id -> the KPI document's JSON bytes.
Computer = Callable[[uuid.UUID], bytes]


class OverloadedError(TransientError):
    """Every computation slot of this instance stayed busy for ``compute_slot_wait_s``
    (HTTP 503 ``overloaded``): refused at once rather than queued on the database pool."""


def is_outage(exc: BaseException) -> bool:
    """Whether a failure is a store being unreachable (worth a retry), not bad data."""
    return (
        (isinstance(exc, SightOpsError) and exc.retryable)
        or db_is_transient(exc)
        or graph_is_transient(exc)
    )


@dataclass
class RefreshReport:
    """What a refresh of all active projects did."""

    refreshed: list[str] = field(default_factory=list)
    locked: list[str] = field(default_factory=list)  # another caller was computing it
    gone: list[str] = field(default_factory=list)  # deleted since it was listed
    failed: dict[str, str] = field(default_factory=dict)
    outages: list[str] = field(default_factory=list)  # failed because a store was down
    not_reached: int = 0  # left when the time budget ran out

    @property
    def attempted(self) -> int:
        return len(self.refreshed) + len(self.locked) + len(self.gone) + len(self.failed)


class KpiService:
    """Project KPIs, computed once and cached; one per process (see :func:`kpi_service`)."""

    def __init__(
        self,
        deps: Deps,
        *,
        compute: Computer | None = None,
        local_coalesce: bool = True,
    ) -> None:
        self.deps = deps
        self.config = deps.settings.kpi
        self._compute = compute or self._compute_from_stores
        slots = self.config.max_computations or deps.settings.db_pool_size
        self._slots = threading.BoundedSemaphore(max(1, slots))
        self.client = deps.redis
        self.cache: SingleFlightCache[bytes] = SingleFlightCache(
            self.client,
            BytesCodec(),
            self.config,
            name="kpi",
            prefix=f"{self.config.key_prefix}:s{SCHEMA_VERSION}",
            metrics=deps.metrics,
            local_coalesce=local_coalesce,
            redis_retry_s=deps.settings.redis_retry_s,
        )

    def _compute_from_stores(self, project_id: uuid.UUID) -> bytes:
        kpis = compute_project_kpis(
            self.deps.engine,
            self.deps.neo4j,
            project_id,
            self.deps.clock(),
            graph_timeout_s=self.deps.settings.db_statement_timeout_ms / 1000,
        )
        return kpis.model_dump_json().encode()

    def _compute_bounded(self, project_id: uuid.UUID) -> bytes:
        return self.bounded(lambda: self._compute(project_id))

    def bounded(self, compute: Callable[[], T]) -> T:
        """Compute in one of the instance's slots, or raise ``OverloadedError`` after a
        short wait. Slots <= the pool size, so a computation never waits for a connection.
        The release metrics (``shared.kpi.release_report``) share these slots."""
        if not self._slots.acquire(timeout=self.config.compute_slot_wait_s):
            self.deps.metrics.incr("kpi_overloaded", 1.0)
            raise OverloadedError("every KPI computation slot of this instance is busy")
        try:
            return compute()
        finally:
            self._slots.release()

    def get(self, project_id: uuid.UUID) -> CacheResult[bytes]:
        """The project's KPI JSON; ``ProjectNotFoundError`` for an unknown project (also
        when remembered as unknown), ``OverloadedError`` when no slot is free."""
        try:
            return self.cache.get(
                str(project_id),
                lambda: self._compute_bounded(project_id),
                invalidate_on=(ProjectNotFoundError,),
                absent_on=(ProjectNotFoundError,),
            )
        except KnownAbsentError as exc:
            raise ProjectNotFoundError(str(exc)) from None

    def get_model(self, project_id: uuid.UUID) -> tuple[ProjectKpis, CacheResult[bytes]]:
        result = self.get(project_id)
        return ProjectKpis.model_validate_json(result.value), result

    def refresh(self, project_id: uuid.UUID) -> CacheResult[bytes] | None:
        """Recompute now; None if someone else is computing it right now."""
        try:
            return self.cache.refresh(str(project_id), lambda: self._compute(project_id))
        except ProjectNotFoundError:
            self.cache.invalidate(str(project_id))
            raise

    def refresh_all_active(self, budget_s: float, concurrency: int = 4) -> RefreshReport:
        """Precompute every active project, ``concurrency`` at a time, for up to ``budget_s``.

        Each project is isolated: whatever its computation raises (a Neo4j error, bad
        data, an outage) is logged with its id and counted in ``failed``, and the others
        are still refreshed. Only Redis being down stops the run (nowhere to store)."""
        ids = active_project_ids(self.deps.engine)
        report = RefreshReport()
        deadline = time.monotonic() + budget_s
        pending = iter(ids)
        lock = threading.Lock()

        def worker() -> None:
            while time.monotonic() < deadline:
                with lock:
                    project_id = next(pending, None)
                if project_id is None:
                    return
                key = str(project_id)
                try:
                    result = self.refresh(project_id)
                except ProjectNotFoundError:
                    outcome = "gone"
                except CacheUnavailableError:
                    raise  # nowhere to store anything: stop the whole run
                except Exception as exc:
                    outage = is_outage(exc)
                    logger.warning(
                        "kpi refresh of project %s failed: %s",
                        key,
                        type(exc).__name__,
                        extra={"project_id": key, "error": str(exc)[:300], "outage": outage},
                    )
                    with lock:
                        report.failed[key] = f"{type(exc).__name__}: {exc}"[:200]
                        if outage:
                            report.outages.append(key)
                    continue
                else:
                    outcome = "refreshed" if result is not None else "locked"
                with lock:
                    getattr(report, outcome).append(key)

        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="kpi-refresh") as pool:
            futures = [pool.submit(worker) for _ in range(max(1, concurrency))]
            for future in futures:
                future.result()
        report.not_reached = len(ids) - report.attempted
        return report


def kpi_service(deps: Deps) -> KpiService:
    """The one service of these deps (its cache holds the in-process flights)."""
    return deps.service(KpiService)
