"""Shared by the maintain tests (the function's and the CLI's): a scratch database at the
project's head for a module, and a pgvector table bloated on purpose in a schema."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from pydantic import SecretStr
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from shared.settings import Settings
from tests.conftest import create_scratch_database, drop_database, upgrade_to_head
from tests.helpers import ROOT

SOURCE = ROOT / "functions" / "maintain" / "main.py"
#: What Cloud Scheduler publishes (terraform/maintain.tf): no id, no time.
SCHEDULED = {"type": "sight.ops.maintain.requested", "source": "cloud-scheduler"}
TABLE = "embeddings"
INDEX = "embeddings_v_hnsw"
#: Rows, and how many of them are deleted: the HNSW index keeps its pages, a fresh build
#: needs a quarter of them.
ROWS, DELETED = 4000, 3000


def sync_engine(url: str) -> Engine:
    return create_engine(
        Settings(database_url=SecretStr(url)).database_url_sync,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
    )


@pytest.fixture(scope="module")
def maintain_db() -> Iterator[str]:
    """One database at the project's head for the module; each test has its own schema."""
    url = create_scratch_database("sightops_maint")
    upgrade_to_head(Settings(database_url=SecretStr(url)))
    yield url
    drop_database(url)


def bloat_vectors(url: str, schema: str) -> None:
    """``<schema>.embeddings``: 8-dimension vectors under an HNSW index, 3/4 deleted."""
    engine = sync_engine(url)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE TABLE {schema}.{TABLE} (id bigserial PRIMARY KEY, v vector(8))"
            )
            conn.exec_driver_sql(
                f"INSERT INTO {schema}.{TABLE} (v) SELECT ARRAY[random(), random(), random(),"
                f" random(), random(), random(), random(), g]::vector"
                f" FROM generate_series(1, {ROWS}) g"
            )
            conn.exec_driver_sql(
                f"CREATE INDEX {INDEX} ON {schema}.{TABLE} USING hnsw (v vector_l2_ops)"
                " WITH (m = 8)"
            )
            conn.exec_driver_sql(f"DELETE FROM {schema}.{TABLE} WHERE id <= {DELETED}")
    finally:
        engine.dispose()
