"""Pool hygiene (docs/reliability.md): ``POOL_DELIVERIES`` mixed deliveries (200 in ``make
test``, 10,000 in ``make proof``) through every entry point, on ONE Deps whose stores are
reached through FaultProxy ports: handled messages, poison (rejected and kept),
duplicates, unknown projects, refused requests, and stretches where PostgreSQL is down,
Redis and Neo4j hang (client timeouts) and Slack answers 500.

Sampled after a warm-up (a tenth of the run) and at the end:

- PostgreSQL: no connection checked out, the pool within its size + overflow;
- Redis: connections created stay within ``redis_max_connections`` and do not grow;
- Neo4j: the driver's pool holds at most its configured maximum, none in use;
- threads: ``threading.active_count()`` grows by at most a small fixed number;
- RSS (psutil): grows by less than 10 %.
"""

from __future__ import annotations

import base64
import contextlib
import gc
import json
import logging
import os
import threading
import tracemalloc
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import yaml
from pydantic import SecretStr

from shared.db import pool_usage
from shared.runtime import Deps, set_process_deps
from shared.settings import IntakeConfig, KpiConfig, NotifyConfig, RollbackConfig, Settings, Topics
from tests.helpers import envelope, push
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.report import POOL
from tests.reliability.worlds import (
    INTAKE_PASSWORD,
    INTAKE_USER,
    WEBHOOK_PATH,
    Pull,
    app,
    failed_build,
    golden_build,
    incident_body,
    make_deps,
    short_timeouts,
)
from tests.shared.kpi.helpers import delete_graph, insert_project

#: Threads a long run may add for good (driver housekeeping, a grpc poller): a leak of one
#: per delivery, or per failed delivery, is far beyond it.
THREAD_SLACK = 8
RSS_GROWTH_MAX = 0.10
#: POOL_TRACEMALLOC=1: print where memory grew between the warm-up and the end.
TRACE = os.environ.get("POOL_TRACEMALLOC") == "1"


def deliveries() -> int:
    return int(os.environ.get("POOL_DELIVERIES", "200"))


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Keep the harness from holding every log line of thousands of deliveries (pytest's
    per-phase capture, the session's secret scan): that would be the test's memory
    growing, not the functions'. Entered in the test body, after pytest added the call
    phase's handlers; a logger with a level of its own passes records on to the root's
    handlers whatever the root's level, so the handlers' levels are raised too."""
    root = logging.getLogger()
    level = root.level
    handlers = [(h, h.level) for h in root.handlers]
    root.setLevel(logging.ERROR)
    for handler, _ in handlers:
        handler.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)
        for handler, previous in handlers:
            handler.setLevel(previous)


def redis_connections(deps: Deps) -> tuple[int, int]:
    """(connections created, in use) of the Redis client's blocking pool."""
    pool: Any = deps.redis.connection_pool
    created = len(pool._connections)
    idle = sum(1 for conn in list(pool.pool.queue) if conn is not None)
    return created, created - idle


def neo4j_connections(deps: Deps) -> tuple[int, int]:
    pool: Any = deps.neo4j._pool
    addresses = list(pool.connections)
    total = sum(len(pool.connections[a]) for a in addresses)
    in_use = sum(pool.in_use_connection_count(a) for a in addresses)
    return total, in_use


def sample(deps: Deps) -> dict[str, int]:
    gc.collect()
    db = pool_usage(deps.engine)
    redis_created, redis_in_use = redis_connections(deps)
    neo_total, neo_in_use = neo4j_connections(deps)
    return {
        "db_checked_out": db["checked_out"],
        "db_idle": db["idle"],
        "redis_created": redis_created,
        "redis_in_use": redis_in_use,
        "neo4j_connections": neo_total,
        "neo4j_in_use": neo_in_use,
        "threads": threading.active_count(),
        "rss_mb": psutil.Process().memory_info().rss // (1024 * 1024),
    }


@pytest.mark.timeout(3600)  # make proof: 10,000 deliveries take about 25 minutes
def test_pool_hygiene_over_mixed_deliveries(
    settings: Settings,
    database_url: str,
    deps: Deps,
    proxies: dict[str, FaultProxy],
    sink: Any,
    cloudrun: Any,
    cloudrun_clock: Any,
    tmp_path: Path,
) -> None:
    with quiet_logs():
        run_pool_hygiene(
            settings, database_url, deps, proxies, sink, cloudrun, cloudrun_clock, tmp_path
        )


def run_pool_hygiene(
    settings: Settings,
    database_url: str,
    deps: Deps,
    proxies: dict[str, FaultProxy],
    sink: Any,
    cloudrun: Any,
    cloudrun_clock: Any,
    tmp_path: Path,
) -> None:
    from tests.functions.rollback.conftest import Env, Published

    n = deliveries()
    slack_state, slack_server = sink
    cr_state, cr_server = cloudrun
    intake_topic = Pull(f"monitoring-alerts-pool-{uuid.uuid4().hex[:8]}")
    ops_topic = Pull(f"ops-events-pool-{uuid.uuid4().hex[:8]}")
    config = tmp_path / "notify.yaml"
    config.write_text(yaml.safe_dump({}))
    configured = short_timeouts(settings, proxies, database_url).model_copy(
        update={
            "slack_webhook_url": SecretStr(slack_server.url + WEBHOOK_PATH),
            "cloud_run_endpoint": cr_server.url,
            "topics": Topics(monitoring_alerts=intake_topic.topic, ops_events=ops_topic.topic),
            "notify": NotifyConfig(
                config_file=str(config),
                redis_prefix=f"sightops:pool:{uuid.uuid4().hex[:8]}:",
                group_wait_s=0.0,
                inline_wait_max_s=0.0,
            ),
            "intake": IntakeConfig(
                username=SecretStr(INTAKE_USER), password=SecretStr(INTAKE_PASSWORD)
            ),
            "kpi": KpiConfig(
                key_prefix=f"sightops:pool:{uuid.uuid4().hex[:8]}", redis_retry_s=0.3, wait_s=1.0
            ),
            "rollback": RollbackConfig(api_timeout_s=1.0, operation_timeout_s=5.0),
        }
    )
    d = make_deps(configured)
    set_process_deps(d)
    clients = {
        "notify": app("notify", "notify", "cloudevent"),
        "kpi": app("kpi", "kpi", "http"),
        "kpi_refresh": app("kpi", "kpi_refresh", "cloudevent"),
        "alert_intake": app("alert_intake", "alert_intake", "http"),
        "rollback": app("rollback", "rollback", "cloudevent"),
        "migrate": app("migrate", "migrate", "cloudevent"),
    }
    projects = [
        insert_project(deps, old_personas=2, new_personas=1, groups=["completed"], graph_personas=2)
        for _ in range(3)
    ]
    env = Env(
        clients["rollback"],
        deps,
        cr_state,
        cr_server,
        Published.__new__(Published),
        f"svc-pool-{uuid.uuid4().hex[:6]}",
        lambda **_: d,
        cloudrun_clock,
    )
    revisions = env.deploy()
    token = base64.b64encode(f"{INTAKE_USER}:{INTAKE_PASSWORD}".encode()).decode()
    auth = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
    last_build: dict[str, Any] = {}

    def notify_build(_i: int) -> tuple[str, Any]:
        data, attributes, _ = failed_build()
        body = envelope(data, attributes)
        last_build["body"] = body
        return "notify build", push(clients["notify"], "cloud-builds", body)

    def notify_duplicate(i: int) -> tuple[str, Any]:
        body = last_build.get("body") or envelope(*failed_build()[:2])
        return "notify duplicate", push(clients["notify"], "cloud-builds", body)

    def notify_poison(_i: int) -> tuple[str, Any]:
        return "notify poison", push(clients["notify"], "cloud-builds", envelope(b"{not json"))

    def notify_alert(i: int) -> tuple[str, Any]:
        incident = f"0.pool{i}-{uuid.uuid4().hex[:6]}"
        body = envelope(incident_body(incident, f"pool policy {i % 7}"))
        return "notify alert", push(clients["notify"], "monitoring-alerts", body)

    def kpi_known(i: int) -> tuple[str, Any]:
        project = projects[i % len(projects)].id
        return "kpi", clients["kpi"].get(f"/v1/projects/{project}/kpis")

    def kpi_unknown(_i: int) -> tuple[str, Any]:
        return "kpi unknown", clients["kpi"].get(f"/v1/projects/{uuid.uuid4()}/kpis")

    def refresh(i: int) -> tuple[str, Any]:
        data = json.dumps({"project_id": str(projects[i % len(projects)].id)}).encode()
        return "kpi_refresh", push(clients["kpi_refresh"], "kpi-refresh", envelope(data))

    def refresh_poison(_i: int) -> tuple[str, Any]:
        return "kpi_refresh poison", push(clients["kpi_refresh"], "kpi-refresh", envelope(b"[]"))

    def intake(i: int) -> tuple[str, Any]:
        body = incident_body(f"0.pool-intake{i}", "pool intake")
        return "alert_intake", clients["alert_intake"].post("/", data=body, headers=auth)

    def intake_refused(_i: int) -> tuple[str, Any]:
        return "alert_intake unauthorised", clients["alert_intake"].post("/", data=b"{}")

    def smoke_passed(_i: int) -> tuple[str, Any]:
        data, attributes = env.smoke(True, revisions[-1])
        return "rollback smoke.passed", push(
            clients["rollback"], "smoke-tests", envelope(data, attributes)
        )

    def migrate_working(_i: int) -> tuple[str, Any]:
        data, attributes, _ = golden_build()
        payload = json.loads(data)
        payload["status"] = "WORKING"
        body = envelope(json.dumps(payload).encode(), attributes)
        return "migrate skipped", push(clients["migrate"], "cloud-builds", body)

    mix: list[Callable[[int], tuple[str, Any]]] = [
        notify_build,
        notify_poison,
        notify_duplicate,
        kpi_known,
        kpi_unknown,
        refresh,
        intake,
        smoke_passed,
        migrate_working,
        refresh_poison,
        notify_alert,
        intake_refused,
    ]

    stretch = max(6, min(40, n * 3 // 100))
    faults: dict[int, tuple[Callable[[], None], Callable[[], None], str]] = {
        int(n * 0.3): (
            lambda: proxies["postgres"].set("down"),
            lambda: proxies["postgres"].set("up"),
            "postgres down",
        ),
        int(n * 0.5): (
            lambda: proxies["redis"].set("blackhole"),
            lambda: proxies["redis"].set("up"),
            "redis hung",
        ),
        int(n * 0.7): (
            lambda: proxies["neo4j"].set("blackhole"),
            lambda: proxies["neo4j"].set("up"),
            "neo4j hung",
        ),
        int(n * 0.8): (
            lambda: slack_state.inject_fault(500, count=10**6),
            slack_state.clear_faults,
            "slack 500",
        ),
    }
    kinds: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    warmup = max(50, n // 10)
    before: dict[str, int] = {}
    active: tuple[int, Callable[[], None]] | None = None
    traced: Any = None
    try:
        for i in range(n):
            if i == warmup:
                before = sample(d)
                if TRACE:
                    tracemalloc.start(12)
                    traced = tracemalloc.take_snapshot()
            if i in faults:
                on, off, _ = faults[i]
                on()
                active = (i + stretch, off)
            if active and i == active[0]:
                active[1]()
                active = None
            kind, response = mix[i % len(mix)](i)
            kinds[kind] += 1
            statuses[f"{kind} {response.status_code}"] += 1
            if i % 500 == 499:  # the in-process stand-ins keep what they received
                slack_state.clear()
                cr_state.log.reset()
    finally:
        if active:
            active[1]()
        for proxy in proxies.values():
            proxy.set("up")
        slack_state.clear_faults()
    after = sample(d)
    if TRACE:
        top = tracemalloc.take_snapshot().compare_to(traced, "traceback")[:8]
        tracemalloc.stop()
        for stat in top:
            print(stat)
            print("\n".join(stat.traceback.format()[-12:]))

    bounds = {
        "db_checked_out": 0,
        "db_idle": configured.db_pool_size + configured.db_max_overflow,
        "redis_created": configured.redis_max_connections,
        "redis_in_use": 0,
        "neo4j_connections": 100,  # the driver's default max_connection_pool_size
        "neo4j_in_use": 0,
        "threads": before["threads"] + THREAD_SLACK,
        "rss_mb": int(before["rss_mb"] * (1 + RSS_GROWTH_MAX)),
    }
    POOL.clear()
    POOL.update(
        {
            "deliveries": n,
            "mix": dict(kinds),
            "outcomes": {
                "2xx": sum(v for k, v in statuses.items() if k.rsplit(" ", 1)[1].startswith("2")),
                "4xx": sum(v for k, v in statuses.items() if k.rsplit(" ", 1)[1].startswith("4")),
                "5xx": sum(v for k, v in statuses.items() if k.rsplit(" ", 1)[1].startswith("5")),
            },
            "statuses": dict(statuses),
            "faults": [f"{name} for {stretch} deliveries" for _, _, name in faults.values()],
            "figures": {
                name: {"before": before[name], "after": after[name], "bound": bounds[name]}
                for name in bounds
            },
        }
    )
    print(json.dumps(POOL, indent=1, default=str))

    try:
        assert after["db_checked_out"] == 0
        assert after["db_idle"] <= bounds["db_idle"]
        assert after["redis_in_use"] == 0
        assert after["redis_created"] <= bounds["redis_created"]
        assert after["redis_created"] <= before["redis_created"] + 2, "Redis connections grow"
        assert after["neo4j_in_use"] == 0
        assert after["neo4j_connections"] <= max(before["neo4j_connections"] + 2, 4)
        assert after["threads"] <= bounds["threads"], (before, after)
        assert after["rss_mb"] <= bounds["rss_mb"], (before, after)
        # The mix really ran: handled, refused and faulted deliveries all happened.
        assert POOL["outcomes"]["2xx"] > n // 2
        assert POOL["outcomes"]["4xx"] > 0
        assert POOL["outcomes"]["5xx"] > 0
        assert statuses["notify poison 200"] > 0 and statuses["notify duplicate 200"] > 0
    finally:
        set_process_deps(None)
        d.close()
        intake_topic.close()
        ops_topic.close()
        delete_graph(deps, [p.id for p in projects])
