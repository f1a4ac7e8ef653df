"""The area packages export lazily (docs/architecture.md, "Cold start"): each name of
``__all__`` must resolve at run time, to the object its private module defines, and
``import`` of the package alone must not load the heavy libraries a face defers."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from tests.helpers import ROOT

LAZY_PACKAGES = (
    "shared.backup",
    "shared.canary",
    "shared.console",
    "shared.kpi",
    "shared.maintain",
    "shared.migrate",
    "shared.notify",
    "shared.rollback",
)


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_every_exported_name_resolves(package: str) -> None:
    module = importlib.import_module(package)
    missing = [name for name in module.__all__ if not hasattr(module, name)]
    assert missing == []
    with pytest.raises(AttributeError):
        _ = module.no_such_name


@pytest.mark.parametrize("package", LAZY_PACKAGES)
def test_importing_a_face_loads_no_database_or_cloud_client(package: str) -> None:
    heavy = (
        "sqlalchemy",
        "redis",
        "neo4j",
        "google.cloud.pubsub_v1",
        "google.cloud.monitoring_v3",
        "grpc",
        "slack_sdk",
        "alembic",
    )
    probe = (
        f"import sys, {package}\n"
        f"loaded = [m for m in {heavy!r} if m in sys.modules]\n"
        "print(','.join(loaded))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", f"{package} loads {out.stdout.strip()} at import"
