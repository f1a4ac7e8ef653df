"""Dashboard KPIs: the model, the index-driven aggregates, and the
stampede-proof cache they are served through. Semantics: docs/kpi.md."""

from shared.kpi.cache import (
    BytesCodec,
    CachePolicy,
    CacheResult,
    CacheStatus,
    CacheUnavailableError,
    Codec,
    Entry,
    KnownAbsentError,
    SingleFlightCache,
)
from shared.kpi.model import SCHEMA_VERSION, GraphKpis, ProjectKpis
from shared.kpi.queries import ProjectNotFoundError, compute_project_kpis
from shared.kpi.service import KpiService, OverloadedError, RefreshReport, kpi_service

__all__ = [
    "SCHEMA_VERSION",
    "BytesCodec",
    "CachePolicy",
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
    "SingleFlightCache",
    "compute_project_kpis",
    "kpi_service",
]
