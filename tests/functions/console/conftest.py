"""The console function through functions-framework, on the session's database, with the
Cloud Run stand-in serving the services it shows (docs/console.md).

Ledger rows are written the way the functions write them: ``write_action`` (the one
writer of ``ops.actions``), rollback's decision journal (``shared.rollback._store``) and
health store; each test's service has a name of its own, so tests never see each other's
releases."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import functions_framework
import pytest

from shared.db import transaction
from shared.release import release_id, release_trace_id
from shared.runtime import Deps, set_process_deps
from shared.runtime._actions import write_action
from shared.settings import Settings
from standins import RunningServer, serve
from standins import cloudrun as cloudrun_standin
from tests.helpers import PROJECT, ROOT

SOURCE = ROOT / "functions" / "console" / "main.py"
REGION = "europe-west1"

#: Every page body a console test rendered, and the secrets those tests planted in the
#: ledger: tests/test_no_secrets_in_logs.py checks the pages for them and for the suite's
#: other secrets, like the log lines.
CONSOLE_PAGES: list[str] = []
CONSOLE_SECRETS: list[str] = []


@pytest.fixture(scope="module")
def cloudrun() -> Iterator[tuple[cloudrun_standin.CloudRunState, RunningServer]]:
    state = cloudrun_standin.CloudRunState(seed=3)
    with serve(cloudrun_standin.create_app(state)) as running:
        yield state, running


@pytest.fixture
def console_settings(
    settings: Settings, cloudrun: tuple[cloudrun_standin.CloudRunState, RunningServer]
) -> Settings:
    return settings.model_copy(
        update={
            "cloud_run_endpoint": cloudrun[1].url,
            "gcp_project": PROJECT,
            "gcp_region": REGION,
        }
    )


@pytest.fixture
def console_deps(console_settings: Settings, deps: Deps) -> Iterator[Deps]:
    d = Deps(console_settings, engine=deps.engine, metrics=deps.metrics)
    set_process_deps(d)
    yield d
    set_process_deps(deps)


class Pages:
    """GET a page; every body is kept for the secrets check."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def get(self, path: str, status: int = 200) -> str:
        response = self.client.get(path)
        body = response.get_data(as_text=True)
        CONSOLE_PAGES.append(body)
        assert response.status_code == status, body[:2000]
        return body


@pytest.fixture
def pages(console_deps: Deps) -> Pages:
    app = functions_framework.create_app(
        target="console", source=str(SOURCE), signature_type="http"
    )
    return Pages(app.test_client())


def commit() -> str:
    return uuid.uuid4().hex + uuid.uuid4().hex[:8]


@dataclass
class Ledger:
    """Rows of one service's releases, written as the functions write them."""

    deps: Deps
    service: str = field(default_factory=lambda: f"svc-{uuid.uuid4().hex[:8]}")
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    def release(self, sha: str | None = None) -> str:
        return release_id(self.service, sha or commit())

    def action(
        self,
        release: str | None,
        kind: str,
        status: str,
        *,
        at: datetime | None = None,
        detail: dict[str, Any] | None = None,
        actor: str = "automation",
        trigger: str | None = None,
        service: str | None = None,
    ) -> int:
        with transaction(self.deps.engine) as conn:
            found = write_action(
                conn,
                kind=kind,
                status=status,
                now=at or self.now,
                service=service or self.service,
                trigger_event_id=trigger,
                actor=actor,
                detail=detail or {},
                release_id=release,
                trace_id=release_trace_id(release) if release else None,
            )
        assert found is not None
        return found

    def decision(
        self,
        *,
        from_revision: str,
        to_revision: str,
        reason: str,
        before: dict[str, int],
        after: dict[str, int],
        at: datetime,
    ) -> str:
        """A traffic move in rollback's journal, intent then outcome; its event id."""
        from shared.rollback import _store as store

        key = f"rollback:{uuid.uuid4()}"
        decision_id = store.decision_id_for(key)
        record = store.DecisionRecord(
            decision_id=decision_id,
            trigger_key=key,
            service=self.service,
            trigger_kind="smoke",
            trigger_event_id=str(uuid.uuid4()),
            actor="automation",
            from_revision=from_revision,
            to_revision=to_revision,
            reason=reason,
            event_id=store.event_id_for(decision_id),
            serving_before=before,
            created_at=at,
        )
        with transaction(self.deps.engine) as conn:
            store.record_intent(conn, record)
            store.record_outcome(
                conn,
                decision_id,
                verdict="succeeded",
                reason=reason,
                serving_after=after,
                published=True,
                finished_at=at,
            )
        return record.event_id

    def revision(self, revision: str, health: str, reason: str, at: datetime) -> None:
        from sqlalchemy import text

        with transaction(self.deps.engine) as conn:
            conn.execute(
                text(
                    "INSERT INTO ops.revisions (service, revision, created_at, health,"
                    " health_reason, health_evidence_at) VALUES (:s, :r, :t, :h, :why, :t)"
                ),
                {"s": self.service, "r": revision, "t": at, "h": health, "why": reason},
            )

    def rolled_back_release(self) -> tuple[str, str, str]:
        """A release promoted, then rolled back by a failed smoke test, as rollback
        records it: (release id, bad revision, good revision)."""
        good, bad = f"{self.service}-00001-aaa", f"{self.service}-00002-bbb"
        release = self.release()
        t0 = self.now - timedelta(minutes=10)
        self.revision(good, "good", "baseline", t0)
        self.revision(bad, "bad", "smoke.failed e1: GET /health", t0 + timedelta(minutes=3))
        self.action(
            release,
            "migration",
            "succeeded",
            at=t0,
            detail={"postgres": {"from": "0004", "to": "0005"}},
        )
        self.action(
            release, "release", "deployed", at=t0 + timedelta(minutes=1), detail={"revision": bad}
        )
        self.action(
            release,
            "release",
            "promoted",
            at=t0 + timedelta(minutes=2),
            detail={"revision": bad, "previous_revision": good, "region": REGION},
        )
        event_id = self.decision(
            from_revision=bad,
            to_revision=good,
            reason=f"smoke.failed for {bad} while serving 100% of traffic",
            before={bad: 100},
            after={good: 100},
            at=t0 + timedelta(minutes=3),
        )
        self.action(
            release,
            "rollback",
            "succeeded",
            at=t0 + timedelta(minutes=3),
            detail={
                "from": bad,
                "to": good,
                "reason": f"smoke.failed for {bad} while serving 100% of traffic",
                "trigger": "smoke",
                "event_id": event_id,
                "dry_run": False,
            },
            trigger="e1",
        )
        return release, bad, good


@pytest.fixture
def ledger(console_deps: Deps) -> Ledger:
    return Ledger(console_deps)


@pytest.fixture
def make_ledger(console_deps: Deps) -> Callable[[], Ledger]:
    return lambda: Ledger(console_deps)


def json_of(value: Any) -> str:
    return json.dumps(value)


@pytest.fixture(autouse=True)
def _console_secrets_stay_in_console_tests() -> Iterator[None]:
    """The console registers every secret of its settings with the process-wide redactor
    (shared/console/_registry.py). Locally the database password, ``sight-local``, is also
    the project id, so a registration left behind would mask the project in later tests'
    trace names: each console test gets the redactor back as it found it."""
    from shared.console import _registry
    from shared.log import REDACTOR

    secrets, registered = REDACTOR._secrets, set(_registry._registered)
    yield
    with REDACTOR._lock:
        REDACTOR._secrets = secrets
    with _registry._lock:
        _registry._registered.clear()
        _registry._registered.update(registered)
