"""Fixtures for the reliability proofs (docs/reliability.md, "Fault matrix" and "Pool
hygiene"): one FaultProxy per local service, the stand-ins the function suites use,
a capture of the runtime's delivery lines, and the results table.

Results are printed at the end of the session and written to
``.local/proof/reliability-results.json``; with ``RELIABILITY_WRITE_DOCS=1`` (``make
proof``) the tables in docs/reliability.md are rewritten from this run's numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tests.functions.notify.conftest import sink
from tests.functions.rollback.conftest import cloudrun, cloudrun_clock
from tests.reliability.driver import RuntimeLog
from tests.reliability.faultproxy import FaultProxy
from tests.reliability.report import MATRIX, POOL, matrix_markdown, pool_markdown, save
from tests.reliability.worlds import PORTS, service_port
from tests.shared.migrate.helpers import graph_ns, migration_db

__all__ = ["cloudrun", "cloudrun_clock", "graph_ns", "migration_db", "sink"]


@pytest.fixture(scope="module")
def proxies() -> Iterator[dict[str, FaultProxy]]:
    made = {name: FaultProxy(service_port(name)).start() for name in PORTS}
    yield made
    for proxy in made.values():
        proxy.close()


@pytest.fixture
def runtime_log() -> Iterator[RuntimeLog]:
    handler = RuntimeLog()
    logger = logging.getLogger("sightops.runtime")
    level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(level)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not MATRIX and not POOL:
        return
    terminalreporter.section("reliability")
    if MATRIX:
        terminalreporter.write_line(matrix_markdown())
    if POOL:
        terminalreporter.write_line("")
        terminalreporter.write_line(pool_markdown())
    save()
