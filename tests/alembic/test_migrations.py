"""The Alembic migrations against a real PostgreSQL 16 + pgvector, and the graph schema files.

The database server comes from ``DATABASE_URL`` / ``DATABASE_URL_SYNC`` (default: the local stack
of ``scripts/services``, see shared/settings.py). The module creates its own scratch database
with a unique name on that server and drops it afterwards, so it never touches the ``sight``
database itself. Its role needs CREATEDB (the dev role is a superuser) and ``vector`` must be
installable (it is in PyPI's pgserver build and the pgvector images; Debian's PostgreSQL has
no pgvector).
"""

from __future__ import annotations

import argparse
import io
import os
import re
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import alembic.command
import pglast
import pytest
import sqlalchemy as sa
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import IntegrityError

from shared.settings import Settings

REPO = Path(__file__).resolve().parents[2]
ALEMBIC_INI = REPO / "alembic.ini"
GRAPH_MIGRATIONS = REPO / "graph" / "migrations"

SIGHT_TABLES = {"projects", "personas", "focus_groups", "focus_group_responses"}
OPS_TABLES = {
    "event_receipts",
    "rejected_events",
    "revisions",
    "actions",
    "rollback_decisions",
    "canaries",
}
EMBEDDING_DIM = 384


# --- fixtures ---------------------------------------------------------------------------------


def _server_url() -> URL:
    # A fresh Settings (not the cached get_settings()) so the current environment counts.
    return make_url(Settings().database_url_sync)


def _reachable(url: URL) -> bool:
    try:
        with socket.create_connection((url.host or "127.0.0.1", url.port or 5432), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def scratch_url() -> Iterator[URL]:
    """A throw-away database on the configured server, dropped when the module is done."""
    server = _server_url()
    if not _reachable(server):
        # The session refuses to start without services; reaching here means it went away.
        pytest.fail(
            f"PostgreSQL not reachable at {server.render_as_string(hide_password=True)}; "
            "start it (scripts/services/postgres.sh start) or set DATABASE_URL"
        )
    admin = sa.create_engine(server, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT")
    name = f"sightops_alembic_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    try:
        yield server.set(database=name)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def engine(scratch_url: URL) -> Iterator[Engine]:
    eng = sa.create_engine(scratch_url, poolclass=sa.NullPool)
    yield eng
    eng.dispose()


def alembic_config(url: URL | str | None = None) -> Config:
    """The repo's alembic.ini, pointed at ``url`` the way the command line does: ``-x url=``."""
    x = [f"url={url.render_as_string(hide_password=False) if isinstance(url, URL) else url}"]
    cfg = Config(str(ALEMBIC_INI), cmd_opts=argparse.Namespace(x=x if url else None))
    # Keep pytest's logging setup; alembic.ini's logging is for the command line.
    cfg.attributes["configure_logger"] = False
    return cfg


@pytest.fixture
def at_head(scratch_url: URL, engine: Engine) -> Engine:
    """The scratch database upgraded to head (a no-op when it already is)."""
    alembic.command.upgrade(alembic_config(scratch_url), "head")
    return engine


def _tables(engine: Engine, schema: str) -> set[str]:
    with engine.connect() as conn:
        return set(sa.inspect(conn).get_table_names(schema=schema))


def _schema_exists(engine: Engine, schema: str) -> bool:
    with engine.connect() as conn:
        return schema in sa.inspect(conn).get_schema_names()


def _has_vector_extension(engine: Engine) -> bool:
    with engine.connect() as conn:
        found = conn.scalar(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'"))
    return bool(found == 1)


def _head() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def _current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        version: str | None = conn.scalar(sa.text("SELECT version_num FROM public.alembic_version"))
    return version


def _vector_literal(values: list[float]) -> str:
    return "[" + ",".join(repr(v) for v in values) + "]"


def _one_hot(index: int, scale: float = 1.0) -> list[float]:
    vec = [0.0] * EMBEDDING_DIM
    vec[index] = scale
    return vec


# --- upgrade ----------------------------------------------------------------------------------


def test_upgrade_head_creates_every_sight_table_and_the_ops_schema(at_head: Engine) -> None:
    assert _tables(at_head, "public") >= SIGHT_TABLES
    assert _schema_exists(at_head, "ops")
    assert _tables(at_head, "ops") == OPS_TABLES


def test_upgrade_head_records_the_head_revision_in_public_alembic_version(
    at_head: Engine,
) -> None:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert _current_revision(at_head) == head
    assert "alembic_version" not in _tables(at_head, "ops")


def test_upgrade_head_installs_pgvector_and_embedding_is_vector_384(at_head: Engine) -> None:
    assert _has_vector_extension(at_head)
    with at_head.connect() as conn:
        column_type = conn.scalar(
            sa.text(
                "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
                "WHERE attrelid = 'public.personas'::regclass AND attname = 'embedding'"
            )
        )
    assert column_type == f"vector({EMBEDDING_DIM})"


def test_persona_is_found_by_nearest_neighbour_on_its_embedding(at_head: Engine) -> None:
    with at_head.begin() as conn:
        project_id = conn.scalar(sa.text("INSERT INTO projects (name) VALUES ('nn') RETURNING id"))
        for index, name in enumerate(["saver", "spender", "browser"]):
            conn.execute(
                sa.text(
                    "INSERT INTO personas (project_id, name, embedding) "
                    "VALUES (:project_id, :name, CAST(:embedding AS vector))"
                ),
                {
                    "project_id": project_id,
                    "name": name,
                    "embedding": _vector_literal(_one_hot(index)),
                },
            )
        query = _one_hot(1, scale=0.9)
        query[0] = 0.1
        nearest = conn.scalar(
            sa.text(
                "SELECT name FROM personas WHERE project_id = :project_id "
                "ORDER BY embedding <-> CAST(:query AS vector) LIMIT 1"
            ),
            {"project_id": project_id, "query": _vector_literal(query)},
        )
        defaults = conn.execute(
            sa.text("SELECT attributes, created_at FROM personas WHERE name = 'spender'")
        ).one()
    assert nearest == "spender"
    assert defaults.attributes == {}
    assert defaults.created_at is not None


def test_embedding_of_the_wrong_dimension_is_rejected(at_head: Engine) -> None:
    with at_head.begin() as conn:
        project_id = conn.scalar(sa.text("INSERT INTO projects (name) VALUES ('dim') RETURNING id"))
    insert = sa.text(
        "INSERT INTO personas (project_id, name, embedding) "
        "VALUES (:project_id, 'short', CAST(:embedding AS vector))"
    )
    with pytest.raises(sa.exc.DBAPIError, match="expected 384 dimensions"), at_head.begin() as conn:
        conn.execute(insert, {"project_id": project_id, "embedding": "[1,2,3]"})


def test_event_receipts_primary_key_rejects_a_duplicate_consumer_and_event_id(
    at_head: Engine,
) -> None:
    insert = sa.text(
        "INSERT INTO ops.event_receipts (consumer, event_id, event_type) "
        "VALUES (:consumer, :event_id, 'build')"
    )
    with at_head.begin() as conn:
        conn.execute(insert, {"consumer": "migrate", "event_id": "evt-1"})
        # The same event for another consumer is a different receipt.
        conn.execute(insert, {"consumer": "notify", "event_id": "evt-1"})
    with pytest.raises(IntegrityError, match="pk_event_receipts"), at_head.begin() as conn:
        conn.execute(insert, {"consumer": "migrate", "event_id": "evt-1"})


def test_actions_dedupe_key_makes_an_action_idempotent(at_head: Engine) -> None:
    insert = sa.text(
        "INSERT INTO ops.actions (kind, service, status, dedupe_key) "
        "VALUES ('migration', 'sight-api', 'succeeded', :key) "
        "ON CONFLICT (dedupe_key) DO NOTHING RETURNING id"
    )
    with at_head.begin() as conn:
        first = conn.scalar(insert, {"key": "migrate:build-42"})
        again = conn.scalar(insert, {"key": "migrate:build-42"})
        # Actions without a dedupe key never conflict with each other.
        conn.scalar(insert, {"key": None})
        conn.scalar(insert, {"key": None})
        row = conn.execute(
            sa.text("SELECT actor, detail, started_at FROM ops.actions WHERE id = :id"),
            {"id": first},
        ).one()
    assert first is not None
    assert again is None
    assert row.actor == "automation"
    assert row.detail == {}
    assert row.started_at is not None


def test_rejected_events_keep_the_raw_payload(at_head: Engine) -> None:
    payload = b"\x00not json\xff"
    with at_head.begin() as conn:
        row = conn.execute(
            sa.text(
                "INSERT INTO ops.rejected_events (consumer, reason, payload) "
                "VALUES ('notify', 'invalid JSON', :payload) "
                "RETURNING id, payload, attributes, received_at"
            ),
            {"payload": payload},
        ).one()
    assert row.id is not None
    assert bytes(row.payload) == payload
    assert row.attributes == {}
    assert row.received_at is not None


@pytest.mark.parametrize(
    ("statement", "constraint"),
    [
        (
            "INSERT INTO focus_groups (project_id, title, status) "
            "VALUES ((SELECT id FROM projects LIMIT 1), 't', 'cancelled')",
            "ck_focus_groups_status",
        ),
        (
            "INSERT INTO ops.revisions (service, revision, health) VALUES ('s', 'r-1', 'meh')",
            "ck_revisions_health",
        ),
        (
            "INSERT INTO focus_group_responses (focus_group_id, persona_id, answer, latency_ms) "
            "VALUES (gen_random_uuid(), gen_random_uuid(), 'a', -1)",
            "ck_focus_group_responses_latency_ms",
        ),
    ],
    ids=["focus_group_status", "revision_health", "negative_latency"],
)
def test_check_constraints_reject_values_outside_the_allowed_set(
    at_head: Engine, statement: str, constraint: str
) -> None:
    with at_head.begin() as conn:
        conn.execute(sa.text("INSERT INTO projects (name) VALUES ('checks')"))
    # pg8000 reports check violations (23514) as ProgrammingError, not IntegrityError.
    with (
        pytest.raises(sa.exc.DBAPIError, match=f"violates check constraint .{constraint}"),
        at_head.begin() as conn,
    ):
        conn.execute(sa.text(statement))


def test_deleting_a_project_deletes_its_personas_focus_groups_and_responses(
    at_head: Engine,
) -> None:
    with at_head.begin() as conn:
        project_id = conn.scalar(
            sa.text("INSERT INTO projects (name) VALUES ('cascade') RETURNING id")
        )
        persona_id = conn.scalar(
            sa.text("INSERT INTO personas (project_id, name) VALUES (:p, 'x') RETURNING id"),
            {"p": project_id},
        )
        group_id = conn.scalar(
            sa.text("INSERT INTO focus_groups (project_id, title) VALUES (:p, 'g') RETURNING id"),
            {"p": project_id},
        )
        conn.execute(
            sa.text(
                "INSERT INTO focus_group_responses "
                "(focus_group_id, persona_id, answer, latency_ms) VALUES (:g, :p, 'yes', 120)"
            ),
            {"g": group_id, "p": persona_id},
        )
        conn.execute(sa.text("DELETE FROM projects WHERE id = :p"), {"p": project_id})
        left = conn.scalar(
            sa.text(
                "SELECT (SELECT count(*) FROM personas WHERE id = :persona) "
                "+ (SELECT count(*) FROM focus_groups WHERE id = :group) "
                "+ (SELECT count(*) FROM focus_group_responses WHERE focus_group_id = :group)"
            ),
            {"persona": persona_id, "group": group_id},
        )
    assert left == 0


def test_rollback_decisions_hold_one_decision_per_trigger_and_a_verdict_only_when_done(
    at_head: Engine,
) -> None:
    """rollback's journal (0002): a redelivery finds its trigger's decision, never adds one."""
    insert = sa.text(
        "INSERT INTO ops.rollback_decisions (decision_id, trigger_key, service, trigger_kind,"
        " to_revision, status, verdict, reason, event_id)"
        " VALUES (gen_random_uuid(), :key, 's', 'alert', 'r-1', :status, :verdict, 'why', 'e')"
    )
    with at_head.begin() as conn:
        conn.execute(
            insert, {"key": "rollback:incident:1:open", "status": "intent", "verdict": None}
        )
    with (
        pytest.raises(IntegrityError, match="uq_rollback_decisions_trigger_key"),
        at_head.begin() as conn,
    ):
        conn.execute(
            insert, {"key": "rollback:incident:1:open", "status": "intent", "verdict": None}
        )
    for status, verdict in (("intent", "succeeded"), ("done", None), ("done", "maybe")):
        with (
            pytest.raises(sa.exc.DBAPIError, match="ck_rollback_decisions_verdict"),
            at_head.begin() as conn,
        ):
            conn.execute(
                insert, {"key": f"k-{status}-{verdict}", "status": status, "verdict": verdict}
            )


def test_upgrade_to_0002_carries_the_succeeded_rollbacks_over_for_the_anti_flap_count(
    scratch_url: URL, at_head: Engine
) -> None:
    cfg = alembic_config(scratch_url)
    alembic.command.downgrade(cfg, "0001")
    assert "rollback_decisions" not in _tables(at_head, "ops")
    action = sa.text(
        "INSERT INTO ops.actions (kind, service, status, actor, detail, started_at, finished_at)"
        " VALUES ('rollback', 'sight-api', :status, 'automation', CAST(:detail AS jsonb),"
        " now() - interval '10 minutes', now() - interval '9 minutes')"
    )
    with at_head.begin() as conn:
        detail = '{"from": "r-3", "to": "r-2", "trigger": "smoke", "event_id": "e-1"}'
        conn.execute(action, {"status": "succeeded", "detail": detail})
        conn.execute(action, {"status": "failed", "detail": detail})
        conn.execute(action, {"status": "skipped", "detail": '{"to": "r-1", "dry_run": true}'})
    alembic.command.upgrade(cfg, "head")
    with at_head.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT service, trigger_kind, from_revision, to_revision, status, verdict,"
                " event_id, event_published, finished_at > created_at AS ordered"
                " FROM ops.rollback_decisions"
            )
        ).all()
        conn.execute(sa.text("DELETE FROM ops.rollback_decisions"))
        conn.execute(sa.text("DELETE FROM ops.actions"))
        conn.commit()
    assert [tuple(r) for r in rows] == [
        ("sight-api", "smoke", "r-3", "r-2", "done", "succeeded", "e-1", True, True)
    ]


def test_upgrade_to_0003_carries_evidence_times_and_breaking_runs_over_to_their_columns(
    scratch_url: URL, at_head: Engine
) -> None:
    """Rollback reads the declared columns of 0003; what was recorded before it, in the
    detail of ops.actions, must count the same after the upgrade."""
    cfg = alembic_config(scratch_url)
    alembic.command.downgrade(cfg, "0002")
    with at_head.connect() as conn:
        assert "health_evidence_at" not in {
            c["name"] for c in sa.inspect(conn).get_columns("revisions", schema="ops")
        }
    health = sa.text(
        "INSERT INTO ops.actions (kind, service, status, detail)"
        " VALUES ('health', 'sight-api', :h, CAST(:d AS jsonb))"
    )
    migration = sa.text(
        "INSERT INTO ops.actions (kind, service, status, dedupe_key, detail)"
        " VALUES ('migration', 'sight-api', :st, :k, CAST(:d AS jsonb))"
    )
    with at_head.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.revisions (service, revision, health) VALUES"
                " ('sight-api', 'r-1', 'good'), ('sight-api', 'r-2', 'bad'),"
                " ('sight-api', 'r-3', 'good')"
            )
        )
        for h, revision, at in (
            ("good", "r-1", "2026-12-01T10:00:00+00:00"),
            ("bad", "r-1", "2026-12-01T11:00:00+00:00"),
            ("good", "r-1", "2026-12-01T12:30:00+01:00"),  # 11:30 UTC: the latest
            ("bad", "r-2", "2026-12-02T09:00:00+00:00"),
        ):
            conn.execute(
                health, {"h": h, "d": f'{{"revision": "{revision}", "evidence_time": "{at}"}}'}
            )
        conn.execute(migration, {"st": "failed", "k": "migrate:b-1", "d": '{"breaking": true}'})
        conn.execute(migration, {"st": "succeeded", "k": "migrate:b-2", "d": '{"breaking": false}'})
        conn.execute(migration, {"st": "succeeded", "k": "migrate:b-3", "d": "{}"})
    alembic.command.upgrade(cfg, "head")
    with at_head.connect() as conn:
        evidence = dict(
            conn.execute(
                sa.text(
                    "SELECT revision, to_char(health_evidence_at AT TIME ZONE 'UTC',"
                    " 'YYYY-MM-DD HH24:MI') FROM ops.revisions ORDER BY 1"
                )
            ).all()
        )
        breaking = dict(
            conn.execute(
                sa.text("SELECT dedupe_key, breaking FROM ops.actions WHERE kind = 'migration'")
            ).all()
        )
        health_rows = conn.scalar(sa.text("SELECT count(*) FROM ops.actions WHERE kind = 'health'"))
        conn.execute(sa.text("DELETE FROM ops.actions"))
        conn.execute(sa.text("DELETE FROM ops.revisions"))
        conn.commit()
    assert evidence == {"r-1": "2026-12-01 11:30", "r-2": "2026-12-02 09:00", "r-3": None}
    assert breaking == {"migrate:b-1": True, "migrate:b-2": False, "migrate:b-3": False}
    assert health_rows == 4, "the audit trail stays"


def test_downgrade_of_0003_drops_its_columns_and_keeps_the_audit_detail(
    scratch_url: URL, at_head: Engine
) -> None:
    cfg = alembic_config(scratch_url)
    with at_head.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO ops.actions (kind, status, breaking, detail)"
                " VALUES ('migration', 'succeeded', true, CAST(:d AS jsonb))"
            ),
            {"d": '{"breaking": true}'},
        )
    alembic.command.downgrade(cfg, "0002")
    with at_head.connect() as conn:
        columns = {
            c["name"]
            for table in ("actions", "revisions")
            for c in sa.inspect(conn).get_columns(table, schema="ops")
        }
        kept = conn.scalar(
            sa.text("SELECT count(*) FROM ops.actions WHERE detail->>'breaking' = 'true'")
        )
        conn.execute(sa.text("DELETE FROM ops.actions"))
        conn.commit()
    alembic.command.upgrade(cfg, "head")
    assert not {"breaking", "health_evidence_at"} & columns
    assert kept == 1


# --- downgrade and round trip -----------------------------------------------------------------


def test_downgrade_to_base_leaves_no_sight_table_and_no_ops_schema(
    scratch_url: URL, at_head: Engine
) -> None:
    alembic.command.downgrade(alembic_config(scratch_url), "base")

    assert _tables(at_head, "public") <= {"alembic_version"}
    assert not _schema_exists(at_head, "ops")
    assert _current_revision(at_head) is None
    # Deliberately kept: other objects in the database may use the extension (see 0001).
    assert _has_vector_extension(at_head)


def test_upgrade_after_downgrade_to_base_round_trips(scratch_url: URL, at_head: Engine) -> None:
    cfg = alembic_config(scratch_url)
    for _ in range(2):
        alembic.command.downgrade(cfg, "base")
        alembic.command.upgrade(cfg, "head")
        assert _tables(at_head, "public") >= SIGHT_TABLES
        assert _tables(at_head, "ops") == OPS_TABLES
    alembic.command.upgrade(cfg, "head")  # already at head: nothing to do, no error


def test_upgrade_through_a_shared_connection_in_a_transaction_is_committed_by_the_caller(
    scratch_url: URL, at_head: Engine
) -> None:
    alembic.command.downgrade(alembic_config(scratch_url), "base")
    cfg = alembic_config()  # no URL anywhere: the connection is all env.py gets

    with at_head.connect() as conn:
        conn.exec_driver_sql("SELECT 1")  # autobegin: the caller owns the transaction
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "head")
        assert "projects" in sa.inspect(conn).get_table_names()
        conn.rollback()
    assert "projects" not in _tables(at_head, "public")

    with at_head.connect() as conn:
        conn.exec_driver_sql("SELECT 1")
        cfg.attributes["connection"] = conn
        alembic.command.upgrade(cfg, "head")
        conn.commit()
    assert _tables(at_head, "public") >= SIGHT_TABLES
    assert _current_revision(at_head) == _head()


def test_upgrade_with_a_shared_engine_commits_each_migration(
    scratch_url: URL, at_head: Engine
) -> None:
    alembic.command.downgrade(alembic_config(scratch_url), "base")
    cfg = alembic_config()
    cfg.attributes["connection"] = at_head
    alembic.command.upgrade(cfg, "head")
    assert _tables(at_head, "ops") == OPS_TABLES


def test_command_line_upgrade_takes_its_url_from_DATABASE_URL(
    scratch_url: URL, at_head: Engine
) -> None:
    alembic.command.downgrade(alembic_config(scratch_url), "base")
    # The app's async URL, as deployed; env.py derives the pg8000 one through shared.settings.
    async_url = scratch_url.set(drivername="postgresql+asyncpg")
    env = {k: v for k, v in os.environ.items() if k.upper() != "DATABASE_URL_SYNC"}
    env["DATABASE_URL"] = async_url.render_as_string(hide_password=False)

    result = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ALEMBIC_INI), "upgrade", "head"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert "Running upgrade  -> 0001" in result.stderr
    assert _current_revision(at_head) == _head()


# --- offline (--sql) rendering ----------------------------------------------------------------


def _render_offline(revision_range: str, *, downgrade: bool = False) -> str:
    # Port 1 on localhost: nothing listens there, so any attempt to connect would fail.
    cfg = alembic_config("postgresql+pg8000://nobody:nothing@127.0.0.1:1/nowhere")
    buffer = io.StringIO()
    cfg.output_buffer = buffer
    if downgrade:
        alembic.command.downgrade(cfg, revision_range, sql=True)
    else:
        alembic.command.upgrade(cfg, revision_range, sql=True)
    return buffer.getvalue()


def test_offline_upgrade_renders_parseable_sql_without_connecting() -> None:
    sql = _render_offline("head")

    assert "CREATE EXTENSION IF NOT EXISTS vector;" in sql
    assert re.search(r"^SET lock_timeout = '\d+m?s';$", sql, re.MULTILINE)
    assert "CREATE SCHEMA ops;" in sql
    assert "CREATE TABLE ops.actions" in sql
    assert "VECTOR(384)" in sql
    pglast.parse_sql(sql)  # a real PostgreSQL parser accepts all of it


def test_offline_downgrade_renders_parseable_sql_without_connecting() -> None:
    sql = _render_offline("head:base", downgrade=True)

    assert "DROP SCHEMA ops;" in sql
    assert "DROP TABLE projects;" in sql
    assert "DROP EXTENSION" not in sql
    pglast.parse_sql(sql)


def test_every_migration_sets_lock_timeout_before_its_first_other_statement() -> None:
    sql = _render_offline("base:head")
    sections = re.split(r"^-- Running upgrade .*$", sql, flags=re.MULTILINE)[1:]
    assert sections, "no migration rendered"
    for section in sections:
        first = next(s for s in (st.strip() for st in section.split(";")) if s)
        assert re.fullmatch(r"SET lock_timeout = '\d+m?s'", first), first


def test_revision_ids_are_four_digit_sequence_numbers_in_one_linear_history() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions("base", "heads"))
    ids = sorted(r.revision for r in revisions)
    assert ids == [f"{n:04d}" for n in range(1, len(ids) + 1)]


# --- graph schema files -----------------------------------------------------------------------

GRAPH_FILE_NAME = re.compile(r"V(?P<version>\d{4})__(?P<slug>[a-z0-9]+(?:_[a-z0-9]+)*)\.cypher")


def _graph_files() -> list[Path]:
    return sorted(p for p in GRAPH_MIGRATIONS.iterdir() if not p.name.startswith("."))


def test_every_graph_migration_is_named_V_four_digits_double_underscore_slug_cypher() -> None:
    files = _graph_files()
    assert files, "graph/migrations is empty"
    for path in files:
        assert path.is_file()
        assert GRAPH_FILE_NAME.fullmatch(path.name), path.name


def test_graph_migration_versions_start_at_one_and_are_contiguous() -> None:
    versions = [
        int(m["version"]) for p in _graph_files() if (m := GRAPH_FILE_NAME.fullmatch(p.name))
    ]
    assert versions == list(range(1, len(versions) + 1))


def _cypher_statements(path: Path) -> list[str]:
    lines = [
        line
        for line in path.read_text(encoding="utf-8").splitlines()
        if not line.strip().startswith("//")
    ]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]


@pytest.mark.parametrize("path", _graph_files(), ids=lambda p: p.name)
def test_graph_migration_statements_are_idempotent_and_semicolon_terminated(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    code = "\n".join(ln for ln in text.splitlines() if not ln.strip().startswith("//")).strip()
    assert code.endswith(";"), "last statement must end with ';'"
    comments = [ln for ln in text.splitlines() if ln.strip().startswith("//")]
    assert not any(";" in c for c in comments), "no ';' inside comments (the runner splits on it)"
    statements = _cypher_statements(path)
    assert statements
    for statement in statements:
        assert re.search(r"\bIF (NOT )?EXISTS\b", statement), statement


def test_graph_schema_has_the_design_constraints_and_index() -> None:
    cypher = " ".join(" ".join(_cypher_statements(p)) for p in _graph_files())
    normalized = re.sub(r"\s+", " ", cypher)
    assert "FOR (p:Project) REQUIRE p.id IS UNIQUE" in normalized
    assert "FOR (p:Persona) REQUIRE p.id IS UNIQUE" in normalized
    assert "FOR (p:Persona) ON (p.project_id)" in normalized
    assert "FOR (t:Topic) REQUIRE t.name IS UNIQUE" in normalized
