"""kpi_refresh and poison text: NUL or a lone surrogate where a project id is expected.

Such a request can never name a project: it is answered 2xx on its first delivery and
kept in ``ops.rejected_events`` with the reason (docs/architecture.md), in both forms a
request arrives in (our own event, Cloud Scheduler's fixed attributes).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from shared.events import EventType
from shared.runtime import Deps
from tests.functions.kpi.test_kpi_refresh import SCHEDULER_ATTRIBUTES, client
from tests.helpers import envelope, push, rejected_events

__all__ = ["client"]

POISON = pytest.mark.parametrize("bad", ["\x00", "\ud800"], ids=["nul", "lone-surrogate"])


def project_id_with(bad: str) -> bytes:
    # ensure_ascii: a lone surrogate travels as \ud800
    return json.dumps({"project_id": str(uuid.uuid4()) + bad}).encode()


@POISON
def test_a_scheduler_request_with_poison_text_in_its_project_id_is_kept(
    client: Any, deps: Deps, bad: str
) -> None:
    data = project_id_with(bad)
    body = envelope(data, SCHEDULER_ATTRIBUTES)
    assert push(client, "kpi-refresh", body).status_code == 200
    [kept] = rejected_events(deps.engine, "kpi_refresh", body["message"]["messageId"])
    assert "project_id" in kept.reason
    assert bytes(kept.payload) == data


@POISON
def test_our_own_refresh_event_with_poison_text_in_its_project_id_is_kept(
    client: Any, deps: Deps, bad: str
) -> None:
    event_id = str(uuid.uuid4())
    attributes = {
        "type": EventType.KPI_REFRESH_REQUESTED.value,
        "id": event_id,
        "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "source": "sightops-cli",
    }
    data = project_id_with(bad)
    assert push(client, "kpi-refresh", envelope(data, attributes)).status_code == 200
    [kept] = rejected_events(deps.engine, "kpi_refresh", event_id)
    assert "project_id" in kept.reason
