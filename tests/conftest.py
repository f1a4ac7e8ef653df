"""Session fixtures: every test talks to the real local services.

`make test` starts them (scripts/services/up.sh) and stops them afterwards. Here we only
check they answer, create a fresh database migrated to head for this session, and
point the process settings at it.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from shared.db import allow_autocommit_blocks
from shared.metrics import Metrics
from shared.runtime import Deps, set_process_deps
from shared.settings import Settings
from tests.helpers import ROOT

_SERVICES = {
    "PostgreSQL": ("PG_PORT", 54329),
    "Redis": ("REDIS_PORT", 63799),
    "Neo4j": ("NEO4J_BOLT_PORT", 7688),
    "Pub/Sub emulator": ("PUBSUB_PORT", 8681),
}


def _port(name: str) -> int:
    env, default = _SERVICES[name]
    return int(os.environ.get(env, default))


def _reachable(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


# In-process CLI tests must never pick up a running `make dev`'s endpoints
# (sightops/endpoints.py): the tests say where everything is.
os.environ["SIGHTOPS_LOCAL"] = "0"
# Spans of processes built with the default (local) settings go to a file of this run,
# never into `make dev`'s .local/spans.jsonl (docs/release.md).
_SPANS_DIR = tempfile.mkdtemp(prefix="sightops-test-spans-")
os.environ.setdefault("TRACE__LOCAL_FILE", os.path.join(_SPANS_DIR, "spans.jsonl"))


def pytest_sessionfinish(session: pytest.Session) -> None:
    shutil.rmtree(_SPANS_DIR, ignore_errors=True)


def pytest_sessionstart(session: pytest.Session) -> None:
    missing = [name for name in _SERVICES if not _reachable(_port(name))]
    if missing:
        raise pytest.UsageError(
            f"local services not running: {', '.join(missing)}. "
            "Run `make test` (starts and stops them) or `scripts/services/up.sh`."
        )


def _admin_url() -> str:
    return f"postgresql+pg8000://sight:sight-local@127.0.0.1:{_port('PostgreSQL')}/sight"


def create_scratch_database(prefix: str) -> str:
    """A new empty database; returns its async-form URL (as DATABASE_URL is given)."""
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return str(
        make_url(_admin_url())
        .set(drivername="postgresql+asyncpg", database=name)
        .render_as_string(hide_password=False)
    )


def drop_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def upgrade_to_head(settings: Settings) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config(str(ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(ROOT / "alembic"))
    engine = create_engine(settings.database_url_sync)
    allow_autocommit_blocks(engine)
    with engine.connect() as conn:  # not begin(): Alembic commits migration by migration
        config.attributes["connection"] = conn
        command.upgrade(config, "head")
    engine.dispose()


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = create_scratch_database("sightops_test")
    os.environ["DATABASE_URL"] = url
    upgrade_to_head(Settings(database_url=url))  # type: ignore[arg-type]
    yield url
    drop_database(url)


@pytest.fixture(scope="session")
def settings(database_url: str) -> Settings:
    return Settings(database_url=database_url, environment="test")  # type: ignore[arg-type]


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def deps(settings: Settings, metrics: Metrics) -> Iterator[Deps]:
    """Real clients for this test; also installed as the process deps so functions
    served by functions-framework in this process use them."""
    d = Deps(settings, metrics=metrics)
    set_process_deps(d)
    yield d
    set_process_deps(None)
    d.close()


# --- every log line and error message of the session, for tests/test_no_secrets_in_logs.py


class SessionLogCapture(logging.Handler):
    """Keeps every record any logger emits during the session (raw message, exception
    text included), before any redacting formatter could hide a leak."""

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.texts: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = f"{record.name} {record.levelname} {record.getMessage()}"
        except Exception:  # a broken log call is not ours to judge here
            text = f"{record.name} {record.levelname} {record.msg!r} {record.args!r}"
        if record.exc_info:
            text += "\n" + logging.Formatter().formatException(record.exc_info)
        self.texts.append(text)


SESSION_LOGS = SessionLogCapture()
NO_SECRETS_TEST = "test_no_secrets_in_logs.py"


def pytest_configure(config: pytest.Config) -> None:
    logging.getLogger().addHandler(SESSION_LOGS)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    """Error messages, and captured stdout/stderr/log sections, of every test phase."""
    if report.longrepr is not None:
        SESSION_LOGS.texts.append(report.longreprtext)
    SESSION_LOGS.texts.extend(content for _name, content in report.sections)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The scan runs last, so it sees what every other test logged."""
    items.sort(key=lambda item: item.path.name == NO_SECRETS_TEST)
