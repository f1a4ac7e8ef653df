"""What migrate's lock, lint and recording cost on top of a plain `alembic upgrade head`.

On a scratch database, in interleaved rounds (so machine noise hits both alike; which
side goes first alternates):
- baseline: `alembic upgrade head` through Alembic's command API on a warm pooled
  connection (what `alembic upgrade head` does, minus process start and connecting);
- migrate:  the function's PostgreSQL path, `run_migrations` with the graph disabled:
  migration session (autocommit), advisory lock, offline render + pglast lint, the
  rendered SQL applied with fresh timeouts per migration, the ops.actions row committed
  with each migration and finished at the end.
Two cases: from base (the whole project schema pending) and at head (nothing pending,
which is what most builds see). At head a warm instance reuses the revision files it
parsed on its previous run; the "reloaded" row drops that cache first (a cold instance).
The database is downgraded to base, untimed, before each "from base" measurement. Both
sides reuse a warm connection (a warm function instance keeps one); the "fresh
connection" rows open a new one for each run on both sides, as a one-off
`alembic upgrade head` does (pg8000 builds an SSL context per connect: ~45 ms here).

Needs the local services (make services-up). Prints ratios; never asserts wall time.
"""

from __future__ import annotations

import logging
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from alembic import command  # noqa: E402
from alembic.config import Config  # noqa: E402

from shared.migrate import RunRequest, migration_engine, run_migrations  # noqa: E402
from shared.migrate._alembic import _SCRIPTS  # noqa: E402
from shared.runtime import Deps  # noqa: E402
from shared.settings import MigrateConfig, Settings  # noqa: E402

ROUNDS = 30


def alembic_config() -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["configure_logger"] = False
    return config


def main() -> None:
    logging.disable(logging.CRITICAL)  # measure the work, not the terminal
    server = make_url(Settings().database_url_sync)
    name = f"sightops_bench_migrate_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.set(database=name).render_as_string(hide_password=False)
    settings = Settings(database_url=SecretStr(url), migrate=MigrateConfig(graph_enabled=False))
    deps = Deps(settings)
    engine = create_engine(url)  # pooled, like migrate's own session engine

    def to_base() -> None:
        with engine.connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.downgrade(config, "base")

    fresh_engine = create_engine(url, poolclass=NullPool)

    def baseline(fresh: bool = False) -> None:
        with (fresh_engine if fresh else engine).connect() as conn:
            config = alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "head")

    def migrate(fresh: bool = False, reload: bool = False) -> None:
        if fresh:
            migration_engine(settings).dispose()  # drop the warm session: connect anew
        if reload:
            _SCRIPTS.clear()  # parse the revision files again, as a cold instance does
        outcome = run_migrations(deps, RunRequest(build_id=str(uuid.uuid4())))
        assert outcome.status == "succeeded", outcome.result.error

    def timed(fn: Callable[[], None]) -> float:
        started = time.perf_counter()
        fn()
        return (time.perf_counter() - started) * 1000

    keys = ("base", "base+m", "head", "head+m", "head+m-reload", "fresh", "fresh+m")
    results: dict[str, list[float]] = {k: [] for k in keys}
    try:
        for warm in (baseline, migrate):  # imports, dialect initialisation
            to_base()
            warm()
        for round_ in range(ROUNDS):
            # Alternate which side goes first, so neither always runs on a cache the
            # other just warmed (or a core the other just lost).
            order = ("", "+m") if round_ % 2 == 0 else ("+m", "")
            for side in order:
                run = migrate if side else baseline
                to_base()
                results["base" + side].append(timed(run))
                results["head" + side].append(timed(run))
                if side:
                    results["head+m-reload"].append(timed(lambda: migrate(reload=True)))
            for side in order:
                to_base()
                fresh_run = migrate if side else baseline
                results["fresh" + side].append(timed(lambda: fresh_run(fresh=True)))
    finally:
        deps.close()
        engine.dispose()
        fresh_engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    def line(label: str, key: str, base_key: str) -> str:
        p50 = statistics.median(results[key])
        base = statistics.median(results[base_key])
        return f"{label:<38} p50 {p50:8.1f} ms   ratio {p50 / base:5.2f}x"

    print(f"{ROUNDS} interleaved rounds")
    print(line("from base: alembic upgrade head", "base", "base"))
    print(line("from base: migrate (lock+lint+rec)", "base+m", "base"))
    print(line("at head:   alembic upgrade head", "head", "head"))
    print(line("at head:   migrate (lock+lint+rec)", "head+m", "head"))
    print(line("at head:   migrate, revisions reloaded", "head+m-reload", "head"))
    print(line("from base, fresh connection: alembic", "fresh", "fresh"))
    print(line("from base, fresh connection: migrate", "fresh+m", "fresh"))


if __name__ == "__main__":
    main()
