"""Backup benchmark: the streaming COPY export (shared/backup) against ``pg_dump`` on the
same seeded data in the same run, its memory, and the restore drill (docs/benchmarks.md,
"Backups").

    .venv/bin/python bench/backup.py                               # 200k personas, 20k in the graph
    .venv/bin/python bench/backup.py --personas 1000000 --embedded 0.2 --graph-personas 50000

PostgreSQL: a scratch database on the local server (``DATABASE_URL``'s), migrated to head,
seeded by bench/seed.py with ``--embedded`` of the personas carrying a 384-dimension
embedding (the column that dominates Sight's data). Then, on the same data:

- **ours**: ``export_postgres`` into a local directory (gzip level ``--level``), timed; its
  peak RSS above the starting point (Linux ``VmHWM`` reset through ``/proc/self/clear_refs``)
  and, in a second run, the peak of Python allocations (``tracemalloc``);
- **pg_dump -Fc** (custom format, zlib at the same level) and **pg_dump -Fp -Z** (plain SQL,
  gzip), the ``pg_dump`` next to the running server's ``postgres`` binary;
- **drill**: restore into a new database (Alembic, COPY FROM, setval) and verify every table.

Neo4j (``--graph-personas`` > 0): the graph is seeded into the scratch Neo4j
(``scripts/services/neo4j-scratch.sh``, started here if needed and stopped after), exported
and drilled back into it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pydantic import SecretStr  # noqa: E402
from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.seed import SeedSpec, seed_graph, seed_postgres  # noqa: E402
from shared.backup import LocalBlobStore, export_graph, export_postgres  # noqa: E402
from shared.backup._neo4j import restore_graph, wipe_graph  # noqa: E402
from shared.backup._postgres import PgTarget, connect, quote_ident, restore_postgres  # noqa: E402
from shared.backup._service import source_target  # noqa: E402
from shared.db import allow_autocommit_blocks  # noqa: E402
from shared.migrate._alembic import AlembicRunner  # noqa: E402
from shared.settings import Settings  # noqa: E402

MiB = 1024 * 1024


def now() -> datetime:
    return datetime.now(UTC)


def rss_mib() -> float:
    """Current resident set size."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux >= 4.0); False when the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def peak_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measured(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    """(result, seconds, peak RSS above the start in MiB)."""
    reset = reset_peak_rss()
    start = rss_mib()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    peak = (peak_rss_mib() - start) if reset else float("nan")
    return result, seconds, peak


def python_peak(fn: Callable[[], Any]) -> float:
    """Peak of Python allocations while ``fn`` runs, MiB."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / MiB
    finally:
        tracemalloc.stop()


def admin(target: PgTarget, sql: str) -> None:
    with connect(target, autocommit=True) as conn:
        conn.cursor().execute(sql)


def pg_bin(target: PgTarget) -> Path:
    """The directory of the running server's binaries (pg_dump next to postgres)."""
    with connect(target) as conn:
        cursor = conn.cursor()
        try:
            cursor.execute("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            data_dir = Path(cursor.fetchone()[0])
        finally:
            conn.rollback()
    pidfile = data_dir / "postmaster.pid"
    pid = pidfile.read_text().split()[0]
    return Path(os.readlink(f"/proc/{pid}/exe")).parent


def table_bytes(target: PgTarget) -> int:
    with connect(target) as conn:
        cursor = conn.cursor()
        cursor.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE c.relkind = 'r' AND n.nspname IN ('public', 'ops')"
        )
        value = cursor.fetchone()[0]
        conn.rollback()
    return int(value or 0)


def pg_dump(bin_dir: Path, target: PgTarget, out: Path, fmt: str, level: int) -> float:
    url = make_url(target.url)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    args = [
        str(bin_dir / "pg_dump"),
        "-h", url.host or "127.0.0.1",
        "-p", str(url.port or 5432),
        "-U", url.username or "postgres",
        "-d", url.database or "",
        "-n", "public", "-n", "ops", "-T", "public.alembic_version",
        "--data-only", f"-F{fmt}", "-Z", str(level), "-f", str(out),
    ]  # fmt: skip
    t0 = time.perf_counter()
    subprocess.run(args, check=True, env=env)
    return time.perf_counter() - t0


def seed_database(settings: Settings, spec: SeedSpec, embedded: float) -> None:
    from alembic import command

    engine = create_engine(settings.database_url_sync)
    allow_autocommit_blocks(engine)
    runner = AlembicRunner()
    with engine.connect() as conn:
        command.upgrade(runner.config(conn), "head")
    seed_postgres(engine, spec)
    with engine.begin() as conn:  # server-side random embeddings, as Sight stores them
        conn.execute(
            text(
                "UPDATE personas SET embedding = CAST(ARRAY(SELECT random()::real"
                " FROM generate_series(1, 384) WHERE personas.id IS NOT NULL) AS vector(384))"
                " WHERE random() < CAST(:share AS float8)"
            ),
            {"share": embedded},
        )
    engine.dispose()


def bench_postgres(
    args: argparse.Namespace, admin_target: PgTarget, settings: Settings, work: Path
) -> dict[str, Any]:
    source = source_target(settings)
    restored_name = f"{make_url(source.url).database}_restore"
    try:
        spec = SeedSpec(
            projects=args.projects, personas=args.personas, graph_personas=0, namespace="backup"
        )
        t0 = time.perf_counter()
        seed_database(settings, spec, args.embedded)
        seed_s = time.perf_counter() - t0
        on_disk = table_bytes(source)

        # Interleaved, --repeat times each; the fastest run of each counts (the machine's
        # other load only ever slows a run down).
        bin_dir = pg_bin(source)
        ours_runs: list[tuple[Any, float, float]] = []
        custom_runs: list[float] = []
        plain_runs: list[float] = []
        for i in range(args.repeat):
            store = LocalBlobStore(work / f"ours-{i}")
            ours_runs.append(
                measured(lambda: export_postgres(source, store, now=now, compresslevel=args.level))
            )
            custom_runs.append(pg_dump(bin_dir, source, work / "dump.custom", "c", args.level))
            plain_runs.append(pg_dump(bin_dir, source, work / "dump.sql.gz", "p", args.level))
        _fastest, ours_s, _ = min(ours_runs, key=lambda run: run[1])
        ours_rss = max(run[2] for run in ours_runs)
        custom_s, plain_s = min(custom_runs), min(plain_runs)
        store = LocalBlobStore(work / "ours-0")
        manifest = ours_runs[0][0]
        rows = sum(t.rows for t in manifest.tables)
        tracemalloc_peak = python_peak(
            lambda: export_postgres(
                source, LocalBlobStore(work / "traced"), now=now, compresslevel=args.level
            )
        )
        custom_bytes = (work / "dump.custom").stat().st_size
        plain_bytes = (work / "dump.sql.gz").stat().st_size

        admin(admin_target, f"CREATE DATABASE {quote_ident(restored_name)}")
        report, drill_s, drill_rss = measured(
            lambda: restore_postgres(
                manifest, store, admin_target.with_database(restored_name), alembic=AlembicRunner()
            )
        )
        if not report.ok:
            raise SystemExit(f"drill failed: {report.summary()}")
        return {
            "rows": rows,
            "table_bytes_on_disk": on_disk,
            "seed_s": round(seed_s, 1),
            "ours": {
                "seconds": round(ours_s, 2),
                "bytes": manifest.total_bytes,
                "rows_per_s": round(rows / ours_s),
                "disk_mib_per_s": round(on_disk / MiB / ours_s, 1),
                "peak_rss_over_start_mib": round(ours_rss, 1),
                "python_peak_mib": round(tracemalloc_peak, 1),
            },
            "pg_dump_custom": {"seconds": round(custom_s, 2), "bytes": custom_bytes},
            "pg_dump_plain_gzip": {"seconds": round(plain_s, 2), "bytes": plain_bytes},
            "ratios": {
                "time_ours_over_pg_dump_custom": round(ours_s / custom_s, 2),
                "time_ours_over_pg_dump_plain_gzip": round(ours_s / plain_s, 2),
                "size_ours_over_pg_dump_custom": round(manifest.total_bytes / custom_bytes, 2),
            },
            "drill": {
                "seconds": round(drill_s, 2),
                "rows_per_s": round(rows / drill_s),
                "peak_rss_over_start_mib": round(drill_rss, 1),
            },
        }
    finally:
        admin(admin_target, f"DROP DATABASE IF EXISTS {quote_ident(restored_name)} WITH (FORCE)")


def bench_graph(args: argparse.Namespace, base: Settings, work: Path) -> dict[str, Any]:
    from neo4j import GraphDatabase

    record = work / "neo4j-scratch.started"
    services = ROOT / "scripts" / "services"
    subprocess.run(
        [str(services / "up.sh"), "--record", str(record), "neo4j-scratch"],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    driver = GraphDatabase.driver(
        base.backup.scratch_neo4j_uri,
        auth=(
            base.backup.scratch_neo4j_user,
            base.backup.scratch_neo4j_password.get_secret_value(),
        ),
    )
    engine = create_engine(base.database_url_sync)
    try:
        wipe_graph(driver)
        spec = SeedSpec(
            projects=args.projects,
            personas=max(args.graph_personas, args.projects),
            graph_personas=args.graph_personas,
            namespace="backup-graph",
        )
        seed_postgres(engine, spec)  # the graph mirrors seeded personas
        seed_graph(engine, driver, spec)
        store = LocalBlobStore(work / "graph")
        manifest, export_s, export_rss = measured(
            lambda: export_graph(driver, store, now=now, source="scratch", compresslevel=args.level)
        )
        assert manifest.graph is not None
        items = manifest.graph.nodes.count + manifest.graph.relationships.count
        report, drill_s, drill_rss = measured(
            lambda: restore_graph(manifest, store, driver, target="scratch", force=True)
        )
        if not report.ok:
            raise SystemExit(f"graph drill failed: {report.summary()}")
        return {
            "nodes": manifest.graph.nodes.count,
            "relationships": manifest.graph.relationships.count,
            "bytes": manifest.total_bytes,
            "export_s": round(export_s, 2),
            "export_items_per_s": round(items / export_s),
            "export_peak_rss_over_start_mib": round(export_rss, 1),
            "drill_s": round(drill_s, 2),
            "drill_items_per_s": round(items / drill_s),
            "drill_peak_rss_over_start_mib": round(drill_rss, 1),
        }
    finally:
        engine.dispose()
        wipe_graph(driver)
        driver.close()
        subprocess.run([str(services / "down.sh"), "--record", str(record)], check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--projects", type=int, default=50)
    parser.add_argument("--personas", type=int, default=200_000)
    parser.add_argument("--embedded", type=float, default=0.25, help="share with an embedding")
    parser.add_argument("--graph-personas", type=int, default=20_000, help="0: no graph part")
    parser.add_argument("--level", type=int, default=6, help="gzip / zlib level for all")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each export (fastest)")
    args = parser.parse_args(argv)
    admin_target = source_target(Settings())
    name = f"sightops_bench_backup_{os.getpid()}"
    url = make_url(admin_target.url).set(drivername="postgresql+asyncpg", database=name)
    base = Settings(database_url=SecretStr(url.render_as_string(hide_password=False)))
    result: dict[str, Any] = {
        "when": now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "personas": args.personas,
        "embedded": args.embedded,
        "level": args.level,
        "repeat": args.repeat,
        "load_average_at_start": os.getloadavg()[0],
    }
    admin(admin_target, f"CREATE DATABASE {quote_ident(name)}")
    try:
        with tempfile.TemporaryDirectory(prefix="sightops-bench-backup-") as tmp:
            work = Path(tmp)
            result["postgres"] = bench_postgres(args, admin_target, base, work)
            if args.graph_personas > 0:  # mirrors personas seeded into the same database
                result["neo4j"] = bench_graph(args, base, work)
    finally:
        admin(admin_target, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    print(json.dumps(result, indent=2))
    pg = result["postgres"]
    print(
        f"export {pg['rows']:,} rows ({pg['table_bytes_on_disk'] / MiB:.0f} MiB on disk):"
        f" ours {pg['ours']['seconds']} s, pg_dump -Fc {pg['pg_dump_custom']['seconds']} s"
        f" (ratio {pg['ratios']['time_ours_over_pg_dump_custom']}), pg_dump -Fp -Z"
        f" {pg['pg_dump_plain_gzip']['seconds']} s (ratio"
        f" {pg['ratios']['time_ours_over_pg_dump_plain_gzip']}); peak RSS +"
        f"{pg['ours']['peak_rss_over_start_mib']} MiB, Python peak"
        f" {pg['ours']['python_peak_mib']} MiB"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
