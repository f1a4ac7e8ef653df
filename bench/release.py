"""A release end to end, by phase: the `green` and `bad-release` scenarios of
`sightops simulate` (docs/simulate.md) run N times on one isolated local stack (stand-ins,
every function under functions-framework, push subscriptions on the emulator, the deploy
trigger running `sightops deploy` as a subprocess), after one warm-up run of each.

green, build SUCCESS → Slack "promoted", cut at what each step publishes:
  migrate       build SUCCESS published → migration.succeeded published
  trigger       migration.succeeded → the deploy trigger starts `sightops deploy`
  deploy …      the deploy's own phases (release.promoted ``phases``): deploy (tagged
                revision without traffic), smoke_tag, promote, smoke_service
  deploy start  the rest of the deploy's wall time (process start, imports, clients)
  slack         release.promoted published → Slack stand-in received the message
bad-release, smoke.failed published → traffic back on the last good revision → Slack:
  delivery      smoke.failed published → the rollback delivery starts (its log line's
                time less its duration)
  decision      → the decision's intent recorded (ops.rollback_decisions.created_at)
  UpdateService → Cloud Run's updateTime of the traffic move back
  event         → rollback.succeeded published
  slack         → Slack stand-in received "Rollback succeeded"

Baselines are the scenario's own totals; a phase's share of its total is what to read.
Needs the local services (make bench starts them). Never asserts wall time.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sightops.simulate import Facts, Simulation  # noqa: E402

RUNS = int(os.environ.get("BENCH_RUNS", "5"))


def green_phases(f: Facts) -> dict[str, float]:
    m, p = f.milestones, f.phases_ms
    inside = sum(p.values()) / 1000
    return {
        "migrate": m["migrated"] - m["build"],
        "trigger": m["deploy_started"] - m["migrated"],
        "deploy start": (m["promoted"] - m["deploy_started"]) - inside,
        **{k: v / 1000 for k, v in p.items()},
        "slack": m["slack_promoted"] - m["promoted"],
        "TOTAL build → Slack": m["slack_promoted"] - m["build"],
    }


def bad_phases(f: Facts) -> dict[str, float]:
    m = f.milestones
    return {
        "delivery": m["rollback_received"] - m["smoke_failed"],
        "decision": m["decided"] - m["rollback_received"],
        "UpdateService": m["restored"] - m["decided"],
        "event": m["rolled_back"] - m["restored"],
        "slack": m["slack_rolled_back"] - m["rolled_back"],
        "TOTAL smoke.failed → traffic restored": m["restored"] - m["smoke_failed"],
        "TOTAL smoke.failed → Slack": m["slack_rolled_back"] - m["smoke_failed"],
    }


def table(title: str, samples: list[dict[str, float]]) -> None:
    print(f"\n{title} ({len(samples)} runs, median / min / max, ms)")
    for phase in samples[0]:
        values = [s[phase] * 1000 for s in samples]
        print(
            f"  {phase:<40} {statistics.median(values):9.1f} {min(values):9.1f} {max(values):9.1f}"
        )


def main() -> None:
    started = time.monotonic()
    with Simulation() as sim:
        print(f"stack up in {time.monotonic() - started:.1f} s; warm-up runs")
        for name in ("green", "bad-release"):  # cold functions: imports, first connections
            sim.run(name)
        green: list[dict[str, float]] = []
        bad: list[dict[str, float]] = []
        for i in range(RUNS):
            for name, phases, into in (
                ("green", green_phases, green),
                ("bad-release", bad_phases, bad),
            ):
                verdict = sim.run(name)
                failed = [c.name for c in verdict.checks if not c.ok]
                # The trace check is about the release's identity, not its timing.
                if [c for c in failed if not c.startswith("one trace")]:
                    print(f"  run {i} {name}: {failed}; not counted")
                    continue
                into.append(phases(verdict.facts))
    table("green: build SUCCESS → promoted → Slack", green)
    table("bad-release: smoke failure → traffic restored → Slack", bad)


if __name__ == "__main__":
    main()
