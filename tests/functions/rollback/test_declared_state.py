"""What rollback reads back to decide lives in declared columns (migration 0003), not in
JSON keys of the audit trail: ``ops.revisions.health_evidence_at`` and
``ops.actions.breaking`` (docs/rollback.md, docs/schema.md). Driven through
functions-framework like the rest of tests/functions/rollback."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from shared.events import EventType
from tests.functions.rollback.conftest import Env
from tests.helpers import envelope, push


def deliver(env: Env, message: tuple[bytes, dict[str, str]]) -> Any:
    return push(env.client, "smoke-tests", envelope(*message))


def evidence_at(env: Env, revision: str) -> datetime | None:
    with env.deps.engine.connect() as conn:
        value = conn.execute(
            text(
                "SELECT health_evidence_at FROM ops.revisions WHERE service = :s AND revision = :r"
            ),
            {"s": env.service, "r": revision},
        ).scalar_one()
    return value if isinstance(value, datetime) else None


def test_a_mark_writes_its_evidence_time_to_the_column_and_to_the_audit_row(env: Env) -> None:
    v1, v2, _ = env.deploy()
    env.seed_health(**{v1: "good"})
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    assert deliver(env, env.smoke(True, v2, at=at)).status_code == 200
    assert evidence_at(env, v2) == at
    [mark] = env.actions("health")
    assert mark["detail"]["evidence_time"] == at.isoformat()


def test_newer_evidence_in_the_column_supersedes_an_older_smoke_failed(env: Env) -> None:
    """Only the column says the revision was found good after the failure: no ``health``
    action exists, so the decision can only have read the column."""
    v1, _, v3 = env.deploy()
    env.seed_health(**{v1: "good", v3: "good"})
    now = datetime.now(UTC)
    with env.deps.engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE ops.revisions SET health_evidence_at = :t"
                " WHERE service = :s AND revision = :r"
            ),
            {"t": now - timedelta(minutes=1), "s": env.service, "r": v3},
        )
    assert deliver(env, env.smoke(False, v3, at=now - timedelta(minutes=2))).status_code == 200
    assert env.patches() == 0
    assert env.health()[v3] == "good"
    kind, result = env.published.one()
    assert kind is EventType.ROLLBACK_SKIPPED and "superseded" in result.reason
    assert env.actions("health") == []


def test_the_breaking_column_freezes_even_when_the_detail_says_nothing(
    env: Env, breaking_migration: Callable[..., None]
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    breaking_migration(datetime.now(UTC) - timedelta(minutes=30), detail_breaking=False)
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.patches() == 0
    assert env.published.one()[0] is EventType.ROLLBACK_FROZEN


def test_a_breaking_key_in_the_detail_alone_does_not_freeze(
    env: Env, breaking_migration: Callable[..., None]
) -> None:
    v1, v2, v3 = env.deploy()
    env.seed_health(**{v1: "good", v2: "good"})
    breaking_migration(
        datetime.now(UTC) - timedelta(minutes=30), breaking=False, detail_breaking=True
    )
    assert deliver(env, env.smoke(False, v3)).status_code == 200
    assert env.serving() == {v2: 100}
    assert env.published.one()[0] is EventType.ROLLBACK_SUCCEEDED
