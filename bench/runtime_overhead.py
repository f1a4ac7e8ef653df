"""What the handler runtime costs per delivery, against baselines measured in the same run.

Three functions served by functions-framework, each fed the same raw Pub/Sub push bodies
through its test client:
- bare:        a plain CloudEvent function that decodes the message (no runtime);
- bare+effect: the same plus the handler's one audit INSERT in its own transaction;
- runtime:     the sample function under `pubsub_handler` (parse, age check, receipt
               insert in the same transaction, savepoint, one JSON log line, metrics).
Also the duplicate path (a redelivery answered from the receipt).

Needs the local services (make services-up). Prints ratios; never asserts wall time.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import functions_framework
from sqlalchemy import text

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shared.db import create_db_engine, transaction  # noqa: E402
from shared.runtime import Deps, set_process_deps  # noqa: E402
from shared.settings import Settings  # noqa: E402
from tests.helpers import envelope  # noqa: E402

N = 50  # deliveries per variant per round
ROUNDS = 8
SAMPLE = ROOT / "tests" / "shared" / "runtime" / "sample_function" / "main.py"
BARE = Path(__file__).with_name("_bare_function.py")


def timed(client: Any, bodies: list[dict[str, Any]], path: str) -> list[float]:
    out = []
    for body in bodies:
        t0 = time.perf_counter()
        response = client.post(path, json=body)
        out.append((time.perf_counter() - t0) * 1000)
        assert response.status_code == 200, response.status_code
    return out


def summary(name: str, samples: list[float], base: float) -> str:
    p50 = statistics.median(samples)
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
    return f"{name:<22} p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  ratio(p50) {p50 / base:5.2f}x"


def main() -> None:
    logging.disable(logging.CRITICAL)  # measure the work, not the terminal
    settings = Settings()
    deps = Deps(settings)
    set_process_deps(deps)
    path = "/projects/sight-local/topics/bench"

    bare = functions_framework.create_app("bare", str(BARE), "cloudevent").test_client()
    effect = functions_framework.create_app("bare_effect", str(BARE), "cloudevent").test_client()
    ours = functions_framework.create_app("sample", str(SAMPLE), "cloudevent").test_client()

    def bodies() -> list[dict[str, Any]]:
        return [envelope({"key": uuid.uuid4().hex}, {"id": str(uuid.uuid4())}) for _ in range(N)]

    for client in (bare, effect, ours):  # warm up pools and imports
        timed(client, bodies()[:20], path)
    # Interleaved rounds, so load from the rest of the machine hits every variant alike.
    base: list[float] = []
    with_effect: list[float] = []
    runtime: list[float] = []
    duplicates: list[float] = []
    for _ in range(ROUNDS):
        base += timed(bare, bodies(), path)
        with_effect += timed(effect, bodies(), path)
        fresh = bodies()
        runtime += timed(ours, fresh, path)
        duplicates += timed(ours, fresh, path)

    b50 = statistics.median(base)
    print(f"runtime overhead, {N * ROUNDS} deliveries per variant in {ROUNDS} interleaved rounds")
    print(summary("bare", base, b50))
    print(summary("bare+effect", with_effect, b50))
    print(summary("runtime (new event)", runtime, b50))
    print(summary("runtime (duplicate)", duplicates, b50))
    e50 = statistics.median(with_effect)
    print(
        f"runtime vs bare+effect (same DB work minus dedupe/log): "
        f"{statistics.median(runtime) / e50:.2f}x"
    )
    engine = create_db_engine(settings)
    with transaction(engine) as conn:
        conn.execute(text("DELETE FROM ops.actions WHERE kind IN ('sample', 'bench')"))
    engine.dispose()
    deps.close()


if __name__ == "__main__":
    main()
