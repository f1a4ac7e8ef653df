"""Smoke runner: the checks Sight's deploy pipeline runs against a revision's URL, as a
library (``smoke``) and as ``sightops smoke``. docs/rollback.md."""

from shared.smoke._runner import (
    CHECK_NAMES,
    DB,
    DOCS,
    HEALTH,
    LOGIN,
    NEO4J,
    PERSONA,
    SmokeOptions,
    run_checks,
    smoke,
)

__all__ = [
    "CHECK_NAMES",
    "DB",
    "DOCS",
    "HEALTH",
    "LOGIN",
    "NEO4J",
    "PERSONA",
    "SmokeOptions",
    "run_checks",
    "smoke",
]
