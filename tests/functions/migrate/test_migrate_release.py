"""migrate and a release (docs/release.md): the build names the release (its _SERVICE and
commit), so the run's record and the migration event it publishes carry the release id
and the release's trace, which the deploy and notify continue."""

from __future__ import annotations

import uuid
from typing import Any

from shared.release import release_id, release_trace_id
from tests.functions.migrate.test_migrate import Env, make_env
from tests.shared.migrate.helpers import GOLDEN_COMMIT, golden_build, rows

__all__ = ["make_env"]


def test_the_migration_event_and_record_carry_the_builds_release_and_trace(
    make_env: Any,
) -> None:
    env: Env = make_env("apply")
    release = release_id("sight-api", GOLDEN_COMMIT)
    trace_id = release_trace_id(release)
    assert env.push(*golden_build(build_id=str(uuid.uuid4()))) == 200

    [(_, attributes)] = env.events(wait_for=1)
    assert attributes["type"] == "sight.ops.migration.succeeded"
    assert attributes["release_id"] == release
    assert attributes["traceparent"].startswith(f"00-{trace_id}-")
    [record] = rows(
        env.url, "SELECT status, release_id, trace_id FROM ops.actions WHERE kind = 'migration'"
    )
    assert record == {"status": "succeeded", "release_id": release, "trace_id": trace_id}
