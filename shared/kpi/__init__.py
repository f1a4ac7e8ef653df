"""Dashboard KPIs: the model, the index-driven aggregates, the stampede-proof cache they
are served through, the release metrics (docs/metrics.md), and the ``kpi_refresh``
consumer's face (:func:`parse`, :func:`dedupe_key`, :func:`handle`). Semantics:
docs/kpi.md."""

from typing import TYPE_CHECKING

from shared._lazy import lazy_attributes

if TYPE_CHECKING:
    from shared.kpi.cache import (
        BytesCodec,
        CacheResult,
        CacheStatus,
        CacheUnavailableError,
        Codec,
        Entry,
        KnownAbsentError,
        SingleFlightCache,
    )
    from shared.kpi.http import HTTP_METHODS, serve
    from shared.kpi.model import SCHEMA_VERSION, GraphKpis, ProjectKpis
    from shared.kpi.queries import ProjectNotFoundError, compute_project_kpis

    # a type alias only (no run-time object): re-exported for annotations, not in __all__
    from shared.kpi.refresh import RefreshInput as RefreshInput
    from shared.kpi.refresh import dedupe_key, handle, parse
    from shared.kpi.release_metrics import compute_report
    from shared.kpi.release_report import (
        ReleaseMetricsService,
        ReportQuery,
        compute_release_report,
        release_metrics_service,
    )
    from shared.kpi.service import KpiService, OverloadedError, RefreshReport, kpi_service
else:  # each name is imported on first use (docs/architecture.md, "Cold start")
    __getattr__ = lazy_attributes(
        __name__,
        {
            "cache": (
                "BytesCodec",
                "CacheResult",
                "CacheStatus",
                "CacheUnavailableError",
                "Codec",
                "Entry",
                "KnownAbsentError",
                "SingleFlightCache",
            ),
            "http": ("HTTP_METHODS", "serve"),
            "model": (
                "SCHEMA_VERSION",
                "GraphKpis",
                "ProjectKpis",
            ),
            "queries": (
                "ProjectNotFoundError",
                "compute_project_kpis",
            ),
            "refresh": (
                "dedupe_key",
                "handle",
                "parse",
            ),
            "release_metrics": ("compute_report",),
            "release_report": (
                "ReleaseMetricsService",
                "ReportQuery",
                "compute_release_report",
                "release_metrics_service",
            ),
            "service": (
                "KpiService",
                "OverloadedError",
                "RefreshReport",
                "kpi_service",
            ),
        },
    )

__all__ = [
    "HTTP_METHODS",
    "SCHEMA_VERSION",
    "BytesCodec",
    "CacheResult",
    "CacheStatus",
    "CacheUnavailableError",
    "Codec",
    "Entry",
    "GraphKpis",
    "KnownAbsentError",
    "KpiService",
    "OverloadedError",
    "ProjectKpis",
    "ProjectNotFoundError",
    "RefreshReport",
    "ReleaseMetricsService",
    "ReportQuery",
    "SingleFlightCache",
    "compute_project_kpis",
    "compute_release_report",
    "compute_report",
    "dedupe_key",
    "handle",
    "kpi_service",
    "parse",
    "release_metrics_service",
    "serve",
]
