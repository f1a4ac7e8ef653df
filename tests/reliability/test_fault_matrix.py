"""The fault matrix (docs/reliability.md): each dependency faulted in the middle of a
stream of deliveries to every function that uses it, then restored.

``make proof`` runs every row (``FAULT_MATRIX=full``); ``make test`` the rows not marked
proof-only, at least one per dependency. Per row, ``FAULT_MESSAGES`` messages (6 in
``make test``, 12 in ``make proof``) are
delivered one per tick by a Pub/Sub-faithful driver (tests/reliability/driver.py): the
fault goes on at the first third of the stream and off at the second. Then, per message:

- nothing lost: acknowledged with an outcome (handled / failed-and-recorded / skipped
  with a reason / kept in ``ops.rejected_events``), or dead-lettered after 5 attempts with
  the runtime's reason logged for every attempt;
- no duplicate effect: its effect (a migration event per build, a rollback decision per
  trigger, a Slack message per notice, a KPI answer or cache entry per project, a Pub/Sub
  message per incident) happened at most once, and exactly once when handled;
- recovery without a restart: every message that arrives after the restore is handled
  at its first delivery, on the same Deps, and no database connection is left checked out.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.runtime import Deps
from shared.settings import Settings
from tests.helpers import rejected_events
from tests.reliability.driver import RuntimeLog, Stream
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.report import MATRIX, full_matrix, messages_per_row
from tests.reliability.worlds import (
    World,
    intake_world,
    kpi_world,
    migrate_world,
    notify_world,
    rollback_world,
)
from tests.shared.kpi.helpers import delete_graph, insert_project
from tests.shared.migrate.helpers import GraphNamespace


@dataclass(frozen=True)
class Row:
    dependency: str
    function: str
    fault: str
    #: run only in ``make proof`` (the slowest rows; each dependency keeps a row in make test)
    proof_only: bool = False

    @property
    def id(self) -> str:
        return f"{self.dependency.split()[0].split('/')[0].lower()}-{self.function}-{self.fault}"


STORE = {"PostgreSQL": "postgres", "Redis": "redis", "Neo4j": "neo4j"}
STORE["Pub/Sub emulator"] = "pubsub"
SLACK, CLOUD_RUN = "Slack sink", "Cloud Run stand-in"

ROWS = [
    Row("PostgreSQL", "migrate", "down"),
    Row("PostgreSQL", "rollback", "down", proof_only=True),
    Row("PostgreSQL", "notify", "down"),
    Row("PostgreSQL", "kpi", "down"),
    Row("PostgreSQL", "kpi_refresh", "down"),
    Row("Redis", "notify", "down"),
    Row("Redis", "kpi", "blackhole"),
    Row("Redis", "kpi_refresh", "down"),
    Row("Neo4j", "migrate", "down", proof_only=True),
    Row("Neo4j", "kpi", "blackhole"),
    Row("Neo4j", "kpi_refresh", "down"),
    Row("Pub/Sub emulator", "migrate", "down", proof_only=True),
    Row("Pub/Sub emulator", "rollback", "down", proof_only=True),
    Row("Pub/Sub emulator", "alert_intake", "down"),
    Row(SLACK, "notify", "429"),
    Row(SLACK, "notify", "500"),
    Row(SLACK, "notify", "timeout"),
    Row(CLOUD_RUN, "rollback", "409"),
    Row(CLOUD_RUN, "rollback", "429", proof_only=True),
    Row(CLOUD_RUN, "rollback", "503", proof_only=True),
    Row(CLOUD_RUN, "rollback", "slow", proof_only=True),
    Row(CLOUD_RUN, "rollback", "timeout", proof_only=True),
]

#: Runtime outcomes that acknowledge a message and what each must have done.
EFFECT_ONCE = {"handled", "failed", "duplicate"}  # its effect exists exactly once
NO_EFFECT_OK = {"skipped", "rejected"}  # a reason was logged (rejected: kept too)


@pytest.fixture
def world_for(
    request: pytest.FixtureRequest,
    settings: Settings,
    database_url: str,
    deps: Deps,
    proxies: dict[str, FaultProxy],
    tmp_path: Path,
) -> Any:
    """``world_for(row)`` -> (World, fault_on, fault_off); everything closed after."""
    opened: list[Any] = []

    def make(row: Row) -> tuple[World, Any, Any]:
        extra: FaultProxy | None = None
        if row.dependency == SLACK and row.fault == "timeout":
            _, running = request.getfixturevalue("sink")
            extra = FaultProxy(running.port).start()
        if row.dependency == CLOUD_RUN and row.fault in ("slow", "timeout"):
            _, running = request.getfixturevalue("cloudrun")
            extra = FaultProxy(running.port, slow_s=0.2).start()
        if extra is not None:
            opened.append(extra.close)
        world = _world(row, extra)
        opened.append(world.close)
        on, off = _faults(row, world, extra)
        return world, on, off

    def _world(row: Row, extra: FaultProxy | None) -> World:
        if row.function == "migrate":
            graph = graph_dir = None
            if row.dependency == "Neo4j":
                graph = request.getfixturevalue("graph_ns")
                assert isinstance(graph, GraphNamespace)
                graph_dir = graph.install(tmp_path / "graph")
            db = request.getfixturevalue("migration_db")
            return migrate_world(settings, proxies, db, graph, graph_dir)
        if row.function == "rollback":
            return rollback_world(
                settings,
                proxies,
                database_url,
                deps,
                request.getfixturevalue("cloudrun"),
                request.getfixturevalue("cloudrun_clock"),
                extra,
            )
        if row.function == "notify":
            return notify_world(
                settings,
                proxies,
                database_url,
                request.getfixturevalue("sink"),
                tmp_path,
                alerts=row.dependency == "Redis",
                slack_proxy=extra,
            )
        if row.function in ("kpi", "kpi_refresh"):
            projects = [
                insert_project(
                    deps,
                    old_personas=2,
                    new_personas=1,
                    groups=["completed"],
                    graph_personas=2,
                    influences=1,
                )
                for _ in range(messages_per_row())
            ]
            ids = [p.id for p in projects]
            opened.append(lambda: delete_graph(deps, ids))
            return kpi_world(
                settings, proxies, database_url, deps, ids, refresh=row.function == "kpi_refresh"
            )
        assert row.function == "alert_intake"
        return intake_world(settings, proxies, database_url)

    def _faults(row: Row, world: World, extra: FaultProxy | None) -> tuple[Any, Any]:
        if row.dependency in STORE:
            proxy = proxies[STORE[row.dependency]]
            return (lambda: proxy.set(row.fault)), (lambda: proxy.set("up"))  # type: ignore[arg-type]
        if extra is not None:
            mode = "blackhole" if row.fault == "timeout" else row.fault
            return (lambda: extra.set(mode)), (lambda: extra.set("up"))  # type: ignore[arg-type]
        if row.dependency == SLACK:
            state, _ = request.getfixturevalue("sink")
            status = int(row.fault)
            if status == 429:  # longer than we wait in-process: handed to Pub/Sub's backoff
                return (
                    lambda: state.inject_fault(
                        429, error="rate_limited", count=10**6, retry_after=30
                    )
                ), state.clear_faults
            return (lambda: state.inject_fault(status, count=10**6)), state.clear_faults
        state, _ = request.getfixturevalue("cloudrun")
        status = int(row.fault)
        return (lambda: state.inject_fault(status, method="PATCH", count=10**6)), state.clear_faults

    yield make
    for close in reversed(opened):
        close()
    for proxy in proxies.values():
        proxy.set("up")


#: ``make test`` runs the rows that are not proof-only: every dependency, fewer faults.
RUN = ROWS if full_matrix() else [r for r in ROWS if not r.proof_only]


@pytest.mark.parametrize("row", RUN, ids=[r.id for r in RUN])
def test_fault_in_the_middle_of_deliveries(
    row: Row, world_for: Any, runtime_log: RuntimeLog, deps: Deps
) -> None:
    world, fault_on, fault_off = world_for(row)
    n = messages_per_row()
    fault_at, restore_at = n // 3, 2 * n // 3
    messages = [world.message(i) for i in range(n)]
    Stream(messages, fault_on, fault_off, fault_at, restore_at, log=runtime_log).run()
    time.sleep(0.2)

    problems: list[str] = []
    outcomes: Counter[str] = Counter()
    lost = duplicated = dead = first_try = redelivered = 0
    for m in messages:
        effect = world.effects(m)
        final = m.final_runtime_outcome
        label = f"{m.key} attempts={m.attempts} statuses={m.statuses} outcome={final}"
        if effect > 1:
            duplicated += 1
            problems.append(f"{label}: effect happened {effect} times")
        if m.acked:
            outcome = final or "answered"
            outcomes[outcome] += 1
            if m.attempts == 1:
                first_try += 1
            else:
                redelivered += 1
            if outcome in EFFECT_ONCE or outcome == "answered":
                if effect != 1:
                    lost += 1
                    problems.append(f"{label}: acknowledged as {outcome}, effect {effect} times")
            elif outcome in NO_EFFECT_OK:
                reason = m.runtime[-1]["reason"]
                if not reason:
                    lost += 1
                    problems.append(f"{label}: {outcome} without a reason")
                if (
                    outcome == "rejected"
                    and m.message_id
                    and not rejected_events(deps.engine, world.function, m.message_id)
                ):
                    lost += 1
                    problems.append(f"{label}: rejected but not kept")
            else:
                problems.append(f"{label}: unexpected outcome")
        else:
            dead += 1
            if m.message_id is not None:
                reasons = [d for d in m.runtime if d["outcome"] == "retry" and d["reason"]]
                if len(reasons) < m.attempts:
                    lost += 1
                    problems.append(f"{label}: dead-lettered, a reason logged for {len(reasons)}")
        if m.arrives > restore_at and not (m.acked and m.attempts == 1):
            problems.append(f"{label}: arrived after the restore, not handled at once")
    recovered = all(m.acked and m.attempts == 1 for m in messages if m.arrives > restore_at)
    checked_out = world.checked_out()
    if checked_out:
        problems.append(f"{checked_out} database connections still checked out")
    MATRIX.append(
        {
            "dependency": row.dependency,
            "function": row.function,
            "fault": row.fault,
            "messages": n,
            "first_try": first_try,
            "redelivered": redelivered,
            "outcomes": ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items())),
            "dead_lettered": dead,
            "lost": lost,
            "duplicated": duplicated,
            "recovered": recovered and not checked_out,
            "detail": [
                f"{m.key}: {m.statuses} {m.final_runtime_outcome} {world.detail(m)}"
                for m in messages
            ],
        }
    )
    assert not problems, "\n".join(problems)
