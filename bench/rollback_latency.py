"""Rollback reaction latency: smoke.failed published to the emulator -> traffic verified
on the Cloud Run stand-in, in one process, next to the anchors' polling intervals.

- the Cloud Run stand-in (standins.cloudrun) served on a free port;
- the rollback function served by functions-framework (real HTTP, threaded werkzeug);
- a topic on the Pub/Sub emulator pushing to it (short retry backoff);
- per run: a fresh service (v1 known-good, v2 serving), then publish smoke.failed for v2
  and poll the stand-in until its traffic_statuses show v1 at 100 %.
Baseline, measured in the same run: the emulator's own publish -> push delivery to a bare
endpoint that does nothing (the floor any push-triggered function pays). The emulator
dispatches pushes on a ~100 ms tick, so every publish (in both loops) waits a random
0-120 ms first: samples then see the tick at every phase, as real publishes would.

Needs the local services and a migrated database (make bench does both; DATABASE_URL
selects it). Prints numbers and ratios; never asserts wall time.
"""

from __future__ import annotations

import logging
import os
import random
import statistics
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import functions_framework
from flask import Flask, request
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.events import EventType, OpsEvent, SmokeCheck, SmokeResult  # noqa: E402
from shared.metrics import Metrics  # noqa: E402
from shared.runtime import Deps, set_process_deps  # noqa: E402
from shared.settings import RollbackConfig, Settings, Topics  # noqa: E402
from sightops.pubsub_admin import ensure_subscription, ensure_topic  # noqa: E402
from standins import serve  # noqa: E402
from standins.cloudrun import CloudRunState, create_app  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "120"))
WARMUP = 5
PROJECT, REGION = "sight-local", "europe-west1"
SOURCE = ROOT / "functions" / "rollback" / "main.py"
ANCHORS_S = {
    "Flagger analysis interval": 60.0,
    "Cloud Run Release Manager": 60.0,
}
TARGET_P50_MS, TARGET_P99_MS = 300.0, 1000.0


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def wire(publisher: Any, subscriber: Any, url: str, name: str) -> str:
    topic = f"{name}-{uuid.uuid4().hex[:8]}"
    ensure_topic(publisher, PROJECT, topic)
    ensure_subscription(
        subscriber,
        PROJECT,
        f"{topic}-push",
        topic,
        push_to=f"{url}/projects/{PROJECT}/topics/{topic}",
        min_backoff_s=0.1,
        max_backoff_s=0.5,
    )
    return topic


def floor_app(arrived: dict[str, float], cond: threading.Condition) -> Flask:
    """A push endpoint that only notes when each message arrived."""
    app = Flask("bench-floor")

    @app.post("/projects/<project>/topics/<topic>")
    def receive(project: str, topic: str) -> tuple[str, int]:
        key = (request.get_json(force=True) or {}).get("message", {}).get("attributes", {})
        with cond:
            arrived[key.get("key", "")] = time.perf_counter()
            cond.notify_all()
        return "", 204

    return app


def measure_floor(publisher: Any, subscriber: Any, runs: int) -> list[float]:
    arrived: dict[str, float] = {}
    cond = threading.Condition()
    samples: list[float] = []
    with serve(floor_app(arrived, cond)) as server:
        topic = wire(publisher, subscriber, server.url, "bench-floor")
        path = f"projects/{PROJECT}/topics/{topic}"
        for i in range(runs + WARMUP):
            key = uuid.uuid4().hex
            time.sleep(random.uniform(0, 0.12))
            t0 = time.perf_counter()
            publisher.publish(path, b"{}", key=key).result(10)
            with cond:
                cond.wait_for(lambda k=key: k in arrived, timeout=10)
            if i >= WARMUP:
                samples.append((arrived[key] - t0) * 1000)
        subscriber.delete_subscription(
            request={"subscription": f"projects/{PROJECT}/subscriptions/{topic}-push"}
        )
        publisher.delete_topic(request={"topic": path})
    return samples


def smoke_failed(service: str, revision: str) -> tuple[bytes, dict[str, str]]:
    now = datetime.now(UTC)
    result = SmokeResult(
        service=service,
        region=REGION,
        revision=revision,
        url=f"https://{service}.example",
        checks=[SmokeCheck(name="GET /api/health/db", ok=False, status_code=503)],
        started_at=now - timedelta(seconds=1),
        finished_at=now,
    )
    return OpsEvent.new(EventType.SMOKE_FAILED, result, source="bench").to_pubsub()


def main() -> None:
    logging.disable(logging.CRITICAL)  # measure the work, not the terminal
    os.environ.setdefault(
        "PUBSUB_EMULATOR_HOST", f"127.0.0.1:{os.environ.get('PUBSUB_PORT', '8681')}"
    )
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    run_id = uuid.uuid4().hex[:6]
    cloudrun = CloudRunState(seed=5)
    ops_topic = f"bench-ops-events-{run_id}"
    ensure_topic(publisher, PROJECT, ops_topic)

    with serve(create_app(cloudrun)) as standin:
        settings = Settings().model_copy(
            update={
                "cloud_run_endpoint": standin.url,
                "gcp_project": PROJECT,
                "gcp_region": REGION,
                "topics": Topics(ops_events=ops_topic),
                "rollback": RollbackConfig(),
            }
        )
        deps = Deps(settings)
        set_process_deps(deps)
        app = functions_framework.create_app("rollback", str(SOURCE), "cloudevent")
        with serve(app) as function:
            topic = wire(publisher, subscriber, function.url, "bench-smoke-tests")
            path = f"projects/{PROJECT}/topics/{topic}"
            samples: list[float] = []
            for i in range(RUNS + WARMUP):
                service = f"bench-{run_id}-{i:03d}"
                good, bad = f"{service}-00001-aaa", f"{service}-00002-bbb"
                cloudrun.create_service(PROJECT, REGION, service, "img:v1", revision=good)
                cloudrun.create_revision(
                    PROJECT, REGION, service, image="img:v2", revision=bad, promote=True
                )
                with deps.engine.begin() as conn:
                    conn.execute(
                        text(
                            "INSERT INTO ops.revisions (service, revision, health, health_reason)"
                            " VALUES (:s, :r, 'good', 'bench')"
                        ),
                        {"s": service, "r": good},
                    )
                data, attributes = smoke_failed(service, bad)
                time.sleep(random.uniform(0, 0.12))
                t0 = time.perf_counter()
                publisher.publish(path, data, **attributes).result(10)
                deadline = t0 + 30
                while time.perf_counter() < deadline:
                    statuses = cloudrun.get_service(PROJECT, REGION, service).get(
                        "trafficStatuses", []
                    )
                    if [(s.get("revision"), s.get("percent")) for s in statuses] == [(good, 100)]:
                        break
                    time.sleep(0.0005)
                else:
                    raise SystemExit(f"run {i}: traffic never moved")
                if i >= WARMUP:
                    samples.append((time.perf_counter() - t0) * 1000)
                elif i == WARMUP - 1:
                    deps.metrics = Metrics()  # in-function timings without the cold start
            subscriber.delete_subscription(
                request={"subscription": f"projects/{PROJECT}/subscriptions/{topic}-push"}
            )
            publisher.delete_topic(request={"topic": path})
        handler = deps.metrics.snapshot()["timings"].get(
            ("handler_ms", (("consumer", "rollback"),))
        )
        update = [
            v
            for (name, _tags), v in deps.metrics.snapshot()["timings"].items()
            if name == "rollback_update_ms"
        ]
        floor = measure_floor(publisher, subscriber, RUNS)
        with deps.engine.begin() as conn:
            conn.execute(
                text("DELETE FROM ops.actions WHERE service LIKE :p"), {"p": f"bench-{run_id}-%"}
            )
            conn.execute(
                text("DELETE FROM ops.revisions WHERE service LIKE :p"), {"p": f"bench-{run_id}-%"}
            )
        publisher.delete_topic(request={"topic": f"projects/{PROJECT}/topics/{ops_topic}"})
        set_process_deps(None)
        deps.close()

    p50, p99 = statistics.median(samples), pct(samples, 0.99)
    f50, f99 = statistics.median(floor), pct(floor, 0.99)
    print(f"rollback reaction latency, {len(samples)} runs (publish smoke.failed -> verified)")
    print(f"  rollback       p50 {p50:7.1f} ms  p99 {p99:7.1f} ms  max {max(samples):7.1f} ms")
    print(f"  emulator floor p50 {f50:7.1f} ms  p99 {f99:7.1f} ms  (publish -> push, no work)")
    print(f"  rollback minus floor (p50): {p50 - f50:.1f} ms; ratio to floor {p50 / f50:.2f}x")
    if handler:
        print(f"  inside the function: mean {handler[1] / handler[0]:.1f} ms per delivery", end="")
        if update:
            count, total = sum(u[0] for u in update), sum(u[1] for u in update)
            print(f", of which Cloud Run update+wait+verify {total / count:.1f} ms", end="")
        print()
    print(
        f"  targets: p50 <= {TARGET_P50_MS:.0f} ms {'met' if p50 <= TARGET_P50_MS else 'MISSED'},"
        f" p99 <= {TARGET_P99_MS:.0f} ms {'met' if p99 <= TARGET_P99_MS else 'MISSED'}"
    )
    for name, interval in ANCHORS_S.items():
        print(
            f"  vs {name} ({interval:.0f} s polling): {interval * 1000 / p50:,.0f}x faster at p50,"
            f" {interval * 1000 / p99:,.0f}x at p99"
        )


if __name__ == "__main__":
    main()
