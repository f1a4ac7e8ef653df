"""Fixtures for the fuzz proof: every entry point served by functions-framework in this
process, on the test's Deps and the existing stand-ins, plus a log capture.

The rollback and notify worlds are the ones their own suites use (imported from their
conftests: the Cloud Run stand-in, a private ops-events topic, the Slack sink); migrate
gets its own scratch database and ops-events topic, as its suite does.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from pydantic import SecretStr
from sqlalchemy import text

from shared.log import LABELS_KEY
from shared.runtime import Deps, set_process_deps
from shared.settings import IntakeConfig, MigrateConfig, Settings, Topics
from sightops.pubsub_admin import ensure_topic
from tests.functions.notify.conftest import make_notify, sink
from tests.functions.rollback.conftest import (
    REGION,
    cloudrun,
    cloudrun_clock,
    env,
    published,
    pubsub_clients,
    shared_publisher,
)
from tests.helpers import PROJECT, ROOT
from tests.shared.kpi.helpers import delete_graph, insert_project
from tests.shared.migrate.helpers import OpsTopic, make_deps, migration_db

__all__ = [
    "cloudrun",
    "cloudrun_clock",
    "env",
    "make_notify",
    "migration_db",
    "published",
    "pubsub_clients",
    "shared_publisher",
    "sink",
]

FUNCTIONS = ROOT / "functions"
INTAKE_USER = "monitoring"
INTAKE_PASSWORD = "fuzz-intake-password-7c1d"  # pragma: allowlist secret
GOLDEN_TRIGGER = "5d2f8a61-93c4-4b7e-a0d2-1c6e9f3b7a48"  # the golden builds' buildTriggerId
PROOF_DIR = ROOT / ".local" / "proof"


def examples() -> int:
    """Examples per entry point: ``FUZZ_EXAMPLES`` (``make proof``: 2000), else 60."""
    return int(os.environ.get("FUZZ_EXAMPLES", "60"))


# ---------------------------------------------------------------------------- logs


class Records(logging.Handler):
    """Every record of every logger while a fuzz test runs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def take(self) -> list[logging.LogRecord]:
        out, self.records = self.records, []
        return out


@pytest.fixture
def records() -> Iterator[Records]:
    handler = Records()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    yield handler
    root.removeHandler(handler)
    root.setLevel(level)


def outcome_of(records: list[logging.LogRecord]) -> list[str]:
    """The runtime's outcome label of each delivery log line among ``records``."""
    out = []
    for record in records:
        if record.name == "sightops.runtime":
            labels = getattr(record, LABELS_KEY, None) or record.__dict__.get(LABELS_KEY)
            if isinstance(labels, dict) and "outcome" in labels:
                out.append(str(labels["outcome"]))
    return out


def tracebacks(records: list[logging.LogRecord]) -> list[logging.LogRecord]:
    """ERROR (or worse) records that carry an exception or a traceback: an exception
    nobody expected, whether caught by Flask or by the runtime's last resort."""
    return [
        r
        for r in records
        if r.levelno >= logging.ERROR and (r.exc_info or r.__dict__.get("traceback"))
    ]


def excerpt(record: logging.LogRecord) -> str:
    try:
        message = record.getMessage()
    except Exception:
        message = str(record.msg)
    tb = record.__dict__.get("traceback") or (
        logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
    )
    tail = " | ".join(line.strip() for line in str(tb).strip().splitlines()[-3:])
    return f"{record.name} {record.levelname}: {message[:300]} | {tail[:400]}"


# ---------------------------------------------------------------------------- results


@dataclass
class Tally:
    """Per entry point: what the proof saw."""

    examples: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    status_5xx: int = 0
    status_500: int = 0
    rejected: int = 0
    rejected_kept: int = 0
    error_logs: int = 0
    tracebacks: int = 0
    failures: int = 0
    #: why deliveries were answered 503 (the runtime's reason, shortened): for the report
    retries: dict[str, int] = field(default_factory=dict)


TALLIES: dict[str, Tally] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not TALLIES:
        return
    terminalreporter.section("fuzz proof")
    terminalreporter.write_line(
        f"{'entry point':<26}{'examples':>9}{'5xx':>6}{'500':>6}{'rejected':>9}{'kept':>6}"
        f"{'ERROR':>7}{'tb':>5}{'failed':>7}  statuses"
    )
    for name, t in sorted(TALLIES.items()):
        statuses = " ".join(f"{k}:{v}" for k, v in sorted(t.statuses.items()))
        terminalreporter.write_line(
            f"{name:<26}{t.examples:>9}{t.status_5xx:>6}{t.status_500:>6}{t.rejected:>9}"
            f"{t.rejected_kept:>6}{t.error_logs:>7}{t.tracebacks:>5}{t.failures:>7}  {statuses}"
        )
    results = PROOF_DIR / f"fuzz-results-{examples()}.json"
    results.parent.mkdir(parents=True, exist_ok=True)
    previous: dict[str, Any] = {}
    if results.exists():
        try:
            previous = json.loads(results.read_text())
        except ValueError:
            previous = {}
    previous.update({name: t.__dict__ for name, t in TALLIES.items()})
    results.write_text(json.dumps(previous, indent=2, sort_keys=True))
    terminalreporter.write_line(f"(also in {results.relative_to(ROOT)})")


# ---------------------------------------------------------------------------- worlds


@dataclass
class World:
    """One entry point's functions-framework test client and the Deps it runs on."""

    client: Any
    deps: Deps
    extra: dict[str, Any] = field(default_factory=dict)

    def rejected_rows(self, consumer: str) -> int:
        with self.deps.engine.connect() as conn:
            return int(
                conn.execute(
                    text("SELECT count(*) FROM ops.rejected_events WHERE consumer = :c"),
                    {"c": consumer},
                ).scalar_one()
            )

    def last_rejected(self, consumer: str) -> dict[str, Any] | None:
        with self.deps.engine.connect() as conn:
            row = (
                conn.execute(
                    text(
                        "SELECT event_id, reason, payload, attributes FROM ops.rejected_events"
                        " WHERE consumer = :c ORDER BY id DESC LIMIT 1"
                    ),
                    {"c": consumer},
                )
                .mappings()
                .first()
            )
        return dict(row) if row else None


def _app(function: str, target: str, signature: str) -> Any:
    return functions_framework.create_app(
        target=target, source=str(FUNCTIONS / function / "main.py"), signature_type=signature
    ).test_client()


@pytest.fixture
def migrate_world(settings: Settings, migration_db: str) -> Iterator[World]:
    """migrate on its own database at head (nothing pending: a selected SUCCESS build
    runs the whole migrate path and finds nothing to do), graph disabled."""
    topic = OpsTopic()
    configured = settings.model_copy(
        update={
            "database_url": SecretStr(migration_db),
            "topics": Topics(ops_events=topic.name),
            "migrate": MigrateConfig(
                selector={"trigger_ids": [GOLDEN_TRIGGER], "services": ["sight-api"]},
                publish_skipped=True,
                graph_enabled=False,
                lock_wait_s=30.0,
            ),
        }
    )
    deps = make_deps(configured)
    set_process_deps(deps)
    yield World(_app("migrate", "migrate", "cloudevent"), deps)
    set_process_deps(None)
    deps.close()
    topic.close()


@pytest.fixture
def rollback_world(env: Any) -> World:
    """rollback against the Cloud Run stand-in, with ``sight-api`` (the service of the
    golden smoke events and incidents) deployed there, so decisions reach Cloud Run."""
    replace(env, service="sight-api").deploy(3)
    assert REGION == "europe-west1"
    return World(env.client, env.deps)


@pytest.fixture
def notify_world(make_notify: Any) -> World:
    """notify with the built-in routes, posting to the Slack sink; alert groups due at
    once, so no delivery waits for its group."""
    client, deps = make_notify(group_wait_s=0.0, inline_wait_max_s=0.0)
    return World(client, deps)


@pytest.fixture
def notify_flush_world(make_notify: Any) -> World:
    _, deps = make_notify(group_wait_s=0.0, inline_wait_max_s=0.0)
    return World(_app("notify", "notify_flush", "http"), deps)


@pytest.fixture
def kpi_refresh_world(deps: Deps) -> World:
    return World(_app("kpi", "kpi_refresh", "cloudevent"), deps)


@pytest.fixture
def kpi_world(deps: Deps) -> Iterator[World]:
    project = insert_project(deps, old_personas=2, new_personas=1, groups=["completed"])
    yield World(_app("kpi", "kpi", "http"), deps, {"known": [str(project.id)]})
    delete_graph(deps, [project.id])


@pytest.fixture
def intake_world(settings: Settings, deps: Deps, pubsub_clients: tuple[Any, Any]) -> World:
    """alert_intake with plain-value credentials, publishing to a private topic (so no
    other suite's subscription sees the fuzz)."""
    publisher, _ = pubsub_clients
    topic = f"monitoring-alerts-fuzz-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    configured = settings.model_copy(
        update={
            "intake": IntakeConfig(
                username=SecretStr(INTAKE_USER), password=SecretStr(INTAKE_PASSWORD)
            ),
            "topics": Topics(monitoring_alerts=topic),
        }
    )
    d = Deps(configured, metrics=deps.metrics, engine=deps.engine, publisher=deps.publisher)
    set_process_deps(d)
    return World(_app("alert_intake", "alert_intake", "http"), d, {"topic": topic})


def write_reproduction(name: str, text_: str) -> Path:
    """The violations of one entry point, per example count (runs of other sizes, or of
    other sessions, do not overwrite each other's)."""
    path = PROOF_DIR / f"{name}-{examples()}-failures.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    if text_:
        path.write_text(text_)
    else:
        path.unlink(missing_ok=True)
    return path
