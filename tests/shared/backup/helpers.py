"""Fixtures of the backup tests (imported by the conftests that need them).

- ``scratch_neo4j``: the second Neo4j (scripts/services/neo4j-scratch.sh), started once per
  session through ``up.sh --record`` and stopped at the end only if this session started
  it (a running `make dev` keeps its own);
- ``source_db``: a database at the project's head holding small seeded Sight data
  (bench/seed.py) and rows chosen to be hard to round-trip: pgvector extremes, JSON with
  big numbers and every escape, timestamps at odd offsets and the infinities, bytea;
- ``gcs``: the Cloud Storage stand-in (standins/storage.py) with a bucket, through the
  official client (:class:`GcsBlobStore`).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from bench.seed import SeedSpec, seed_postgres
from shared.backup import GcsBlobStore, storage_client
from shared.settings import Settings
from tests.conftest import create_scratch_database, drop_database, upgrade_to_head
from tests.helpers import ROOT

SCRATCH_PORT = int(os.environ.get("NEO4J_SCRATCH_BOLT_PORT", "7689"))
SCRATCH_URI = f"bolt://127.0.0.1:{SCRATCH_PORT}"
NEO4J_AUTH = ("neo4j", os.environ.get("NEO4J_PASSWORD", "sight-local-neo4j"))
SMALL = SeedSpec(projects=3, personas=300, focus_groups=4, responses=5, graph_personas=0)

#: The rows that must come back exactly (one persona, one rejected event, one action).
VECTOR = [0.1, -0.0, 1e-7, 3.4028235e38, -1.17549435e-38, 0.3333333432674408, 1.0] + [0.5] * 377
HARD_NAME = "tab\there\nnew\\line 'single' \"double\" ü漢字🙂 \u2028"
HARD_JSON = (
    '{"big": 123456789012345678901234567890, "float": 1.0000000000000002, "tiny": 1e-300,'
    ' "nested": {"list": [1, 2.5, "x\\ty", "back\\\\slash \\\\u0000", null, true,'
    ' {"": "empty key"}]}, "unicode": "ü漢字🙂"}'
)


def sync_engine(url: str) -> Engine:
    return create_engine(
        Settings(database_url=SecretStr(url)).database_url_sync,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )


def seed_hard_rows(engine: Engine) -> None:
    """Rows whose every value has to survive COPY text exactly."""
    project = uuid.uuid4()
    vector = "[" + ",".join(repr(v) for v in VECTOR) + "]"
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO projects (id, name, created_at, archived_at) VALUES"
                " (:p, :name, '1970-01-01 00:00:00+14', 'infinity')"
            ),
            {"p": project, "name": HARD_NAME},
        )
        conn.execute(
            text(
                "INSERT INTO personas (project_id, name, attributes, spending_habits,"
                " embedding, created_at) VALUES"
                " (:p, 'hard', CAST(:j AS jsonb), '', CAST(:v AS vector),"
                "  '2024-03-31 02:30:00.000001 Europe/Berlin'),"
                " (:p, 'nulls', '{}', NULL, NULL, '0044-03-15 12:00:00+00 BC')"
            ),
            {"p": project, "j": HARD_JSON, "v": vector},
        )
        conn.execute(
            text(
                "INSERT INTO ops.rejected_events (consumer, event_id, reason, payload,"
                " attributes, received_at) VALUES ('test', NULL, :r, :payload,"
                " CAST(:a AS jsonb), '2262-04-11 23:47:16.854775+05:45')"
            ),
            {
                "r": "reason with \\N and \\. on its own",
                "payload": b"\x00\xff\\N\n\r\t\\.",
                "a": '{"k": "v\\nw"}',
            },
        )
        for i in range(3):
            conn.execute(
                text(
                    "INSERT INTO ops.actions (kind, status, detail, started_at)"
                    " VALUES ('backup-test', 'done', CAST(:d AS jsonb),"
                    " now() - :i * interval '1 h')"
                ),
                {"d": f'{{"i": {i}}}', "i": i},
            )


@pytest.fixture(scope="session")
def source_db() -> Iterator[str]:
    """A database with seeded and hard rows (its async-form URL); dropped at the end."""
    url = create_scratch_database("sightops_bk_src")
    upgrade_to_head(Settings(database_url=SecretStr(url)))
    engine = create_engine(Settings(database_url=SecretStr(url)).database_url_sync)
    try:
        seed_postgres(engine, SMALL)
        seed_hard_rows(engine)
    finally:
        engine.dispose()
    yield url
    drop_database(url)


@pytest.fixture
def empty_db() -> Iterator[str]:
    """An empty database (no schema), dropped after the test."""
    url = create_scratch_database("sightops_bk_dst")
    yield url
    drop_database(url)


def table_rows(url: str, table: str) -> list[tuple[Any, ...]]:
    """Every row of ``table`` as Python values, in a stable order."""
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")).all()]
    finally:
        engine.dispose()
    return sorted(rows, key=repr)


TABLES = (
    "public.projects",
    "public.personas",
    "public.focus_groups",
    "public.focus_group_responses",
    "ops.rejected_events",
    "ops.actions",
)


# --- the scratch Neo4j ------------------------------------------------------------------


@pytest.fixture(scope="session")
def scratch_neo4j(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The second Neo4j's Bolt URI; started if it is not running, stopped afterwards only
    if this session started it (``up.sh --record``)."""
    record = tmp_path_factory.mktemp("neo4j-scratch") / "started"
    services = ROOT / "scripts" / "services"
    subprocess.run(
        [str(services / "up.sh"), "--record", str(record), "neo4j-scratch"],
        check=True,
        timeout=300,
        stdout=subprocess.DEVNULL,
    )
    yield SCRATCH_URI
    subprocess.run(
        [str(services / "down.sh"), "--record", str(record)],
        check=False,
        timeout=120,
        stdout=subprocess.DEVNULL,
    )


# --- the Cloud Storage stand-in -----------------------------------------------------------


@dataclass
class Gcs:
    """The stand-in, its state (to corrupt objects behind the client's back) and a store."""

    url: str
    state: Any
    bucket: str
    store: GcsBlobStore

    def replace(self, name: str, data: bytes) -> None:
        """Overwrite an object as a broken writer would (the stand-in bucket has no
        retention policy)."""
        client = storage_client("sight-local", self.url)
        client.bucket(self.bucket).blob(name).upload_from_string(data)

    def read(self, name: str) -> bytes:
        client = storage_client("sight-local", self.url)
        return bytes(client.bucket(self.bucket).blob(name).download_as_bytes())


@pytest.fixture
def gcs() -> Iterator[Gcs]:
    from standins import serve
    from standins import storage as storage_standin

    state = storage_standin.StorageState()
    bucket = f"sightops-backups-{uuid.uuid4().hex[:8]}"
    state.create_bucket(bucket)
    with serve(storage_standin.create_app(state)) as server:
        store = GcsBlobStore(
            bucket,
            client=storage_client("sight-local", server.url),
            chunk_bytes=256 * 1024,  # several chunks even for small objects
        )
        yield Gcs(server.url, state, bucket, store)
    state.close()
