"""migrate records the build's ``createTime`` with its run: where the release metrics
start a change's lead time (docs/metrics.md)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from tests.functions.migrate.test_migrate import Env, make_env
from tests.shared.migrate.helpers import golden_build, migration_rows

__all__ = ["make_env"]


def test_a_migration_run_records_when_its_build_was_created(make_env: Any) -> None:
    env: Env = make_env("apply")
    data, attributes = golden_build(build_id=str(uuid.uuid4()))
    assert env.push(data, attributes) == 200
    [row] = migration_rows(env.url)
    assert row["status"] == "succeeded"
    # the golden build's createTime, 2025-06-02T09:14:03.512874113Z (to the microsecond)
    recorded = datetime.fromisoformat(row["detail"]["build_created_at"])
    assert recorded.isoformat() == "2025-06-02T09:14:03.512874+00:00"
