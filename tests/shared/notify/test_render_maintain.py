"""The maintenance message (shared/notify/_render.py, ``render_maintenance``): its golden
Block Kit JSON, Slack's limits, and escaping of what the databases named.

``REGEN_GOLDEN=1`` rewrites tests/fixtures/golden/slack/maintain_*.json; review the diff.
"""

from __future__ import annotations

import json
import os
from typing import Any

import pytest

from shared.events import OpsEvent, OpsPayload, parse_ops_message
from shared.notify import parse_config, render_ops
from standins.slack import SlackState
from tests.helpers import GOLDEN

REGEN = os.environ.get("REGEN_GOLDEN") == "1"
CONFIG = parse_config({"runbook_base_url": "https://runbooks.example/docs/runbooks/"})
LONG = "x" * 5000


def completed(**changes: Any) -> OpsEvent[OpsPayload]:
    message = json.loads((GOLDEN / "ops" / "maintain_completed.json").read_text())
    message["data"].update(changes)
    return parse_ops_message(json.dumps(message["data"]).encode(), message["attributes"])


def index(action: str, name: str = "ix_personas_embedding_hnsw", **changes: Any) -> dict[str, Any]:
    care = {
        "schema_name": "public",
        "table": "personas",
        "index": name,
        "method": "hnsw",
        "size_bytes": 64 * 1024 * 1024,
        "expected_bytes": 16 * 1024 * 1024,
        "bloat_ratio": 0.75,
        "action": action,
        "reason": "64.0 MB, a fresh build about 16.0 MB: bloat 75 % ≥ 50 %",
    }
    care.update(changes)
    return care


CASES = {
    "maintain_completed": lambda: completed(),
    "maintain_dry_run": lambda: completed(
        dry_run=True, indexes=[index("would_reindex")], graph=[], graph_checked=0
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_maintenance_message_renders_its_golden_block_kit_json(name: str) -> None:
    rendered = render_ops(CASES[name](), CONFIG).to_dict()
    path = GOLDEN / "slack" / f"{name}.json"
    if REGEN or not path.exists():
        path.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n")
    assert rendered == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_maintenance_message_is_accepted_by_a_strict_slack_sink(name: str) -> None:
    payload = render_ops(CASES[name](), CONFIG).to_dict()
    status, body, _ = SlackState(strict=True).receive(
        "/services/T/B/x", json.dumps(payload).encode(), "application/json"
    )
    assert (status, body) == (200, "ok")


def test_it_says_what_was_rebuilt_what_needs_a_human_and_links_the_runbook() -> None:
    payload = render_ops(completed(), CONFIG).to_dict()
    text = json.dumps(payload, ensure_ascii=False)
    assert payload["text"] == ":warning: Database maintenance: rebuilt 1 index, 2 need attention"
    assert "`public.ix_personas_embedding_hnsw` (hnsw): 1.2 GB → 386.0 MB, bloat 68 %" in text
    assert "left by a failed REINDEX CONCURRENTLY" in text
    assert (
        "Neo4j index `topic_name_text` (TEXT): FAILED: java.lang.IllegalArgumentException" in text
    )
    assert "Left for the next run" in text
    assert "https://runbooks.example/docs/runbooks/maintenance.md" in text


def test_names_and_messages_from_the_databases_cannot_inject_mentions_or_links() -> None:
    hostile = "<!channel> see <https://evil.example|here> & more"
    event = completed(
        indexes=[index("attention", name=hostile, reason=hostile)],
        graph=[{"name": hostile, "type": "TEXT", "state": "FAILED", "problem": hostile}],
        problems=[hostile],
    )
    payload = render_ops(event, CONFIG).to_dict()
    dumped = json.dumps(payload)
    assert "<!channel>" not in dumped and "<https://evil" not in dumped
    assert "&lt;!channel&gt;" in dumped and "&amp; more" in dumped


def test_hundreds_of_indexes_and_long_reasons_stay_within_slacks_limits() -> None:
    many = [index("failed", name=f"ix_{n}_" + "n" * 60, reason=LONG) for n in range(40)]
    payload = render_ops(completed(indexes=many, problems=[LONG] * 10), CONFIG).to_dict()
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        assert len(block.get("text", {}).get("text", "")) <= 3000
    assert "more" in json.dumps(payload)
