"""notify and a release (docs/release.md): the promoted release posted to Slack names the
release, and notify's span and its record are in the trace the event carried."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sqlalchemy import text

from shared.settings import TraceConfig
from shared.trace import read_spans
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory
from tests.functions.notify.test_notify_events import golden
from tests.helpers import envelope, push

TRACE_ID = "5a1d0c3b2e4f46a7b8c9d0e1f2a3b4c5"
PARENT_SPAN = "1a2b3c4d5e6f7a8b"


def test_a_promoted_release_reaches_slack_in_its_trace(
    make_notify: NotifyFactory, sink: Any, tmp_path: Path
) -> None:
    state, _ = sink
    spans = tmp_path / "spans.jsonl"
    client, deps = make_notify(
        settings_update={"trace": TraceConfig(exporter="local", local_file=spans)}
    )
    data, attributes = golden("ops", "release_promoted")
    attributes["traceparent"] = f"00-{TRACE_ID}-{PARENT_SPAN}-01"
    try:
        assert push(client, "ops-events", envelope(data, attributes)).status_code == 200
    finally:
        deps.tracing.shutdown()

    release = attributes["release_id"]
    [message] = state.messages(WEBHOOK_PATH)
    assert message.body["text"].startswith(f":large_green_circle: Release {release} promoted")
    assert f"release `{release}`" in json.dumps(message.body["blocks"])
    [span] = read_spans(spans, TRACE_ID)
    assert (span.name, span.parent_span_id) == ("notify sight.ops.release.promoted", PARENT_SPAN)
    assert span.attributes["release_id"] == release
    with deps.engine.connect() as conn:
        [row] = conn.execute(
            text(
                "SELECT status, release_id, trace_id FROM ops.actions"
                " WHERE kind = 'notification' AND trigger_event_id = :id"
            ),
            {"id": attributes["id"]},
        ).all()
    assert (row.status, row.release_id, row.trace_id) == ("sent", release, TRACE_ID)
