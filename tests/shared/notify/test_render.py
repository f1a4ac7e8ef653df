"""Golden Block Kit JSON for every message kind, and Slack's limits under abuse.

``REGEN_GOLDEN=1`` rewrites the files under tests/fixtures/golden/slack/; review the diff.
Every rendered message is also posted to the Slack sink in strict mode, which refuses
what Slack refuses (50 blocks, 3000-character sections, 150-character headers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from shared.events import (
    Build,
    IncidentNotification,
    OpsEvent,
    OpsPayload,
    parse_build_message,
    parse_incident_body,
    parse_ops_message,
)
from shared.notify import (
    AlertGroupView,
    SlackMessage,
    alert_entry,
    parse_config,
    render_alert_group,
    render_build,
    render_incident,
    render_ops,
)
from standins.slack import SlackState
from tests.helpers import GOLDEN

REGEN = os.environ.get("REGEN_GOLDEN") == "1"
SLACK = GOLDEN / "slack"
CONFIG = parse_config(
    {
        "escalation": {"mention": "<!here>"},
        "runbook_base_url": "https://runbooks.example/docs/runbooks/",
        "runbooks": [
            {"policy": "latency", "runbook": "alert-p95-latency.md"},
            {"policy": "5xx", "runbook": "alert-5xx-error-rate.md"},
        ],
    }
)
PLAIN = parse_config({})
#: The console the messages link to (docs/console.md).
CONSOLE = "https://console.example"


def build(name: str, **changes: Any) -> Build:
    message = json.loads((GOLDEN / "cloudbuild" / f"{name}.json").read_text())
    data = {**message["data"], **changes}
    return parse_build_message(json.dumps(data).encode(), message["attributes"])


def ops(name: str, **changes: Any) -> OpsEvent[OpsPayload]:
    message = json.loads((GOLDEN / "ops" / f"{name}.json").read_text())
    data = {**message["data"], **changes}
    return parse_ops_message(json.dumps(data).encode(), message["attributes"])


def incident(name: str, **changes: Any) -> IncidentNotification:
    body = json.loads((GOLDEN / "monitoring" / f"{name}.json").read_text())
    body["incident"].update(changes)
    return parse_incident_body(json.dumps(body).encode())


def grouped_view() -> AlertGroupView:
    firing = []
    for n in range(4):
        firing.append(
            alert_entry(
                incident(
                    "incident_1_2_open",
                    incident_id=f"0.storm{n:04d}",
                    observed_value=f"{2000 + n * 100}.5",
                    resource_display_name=f"sight-api-0004{n}-abc",
                    started_at=1748861342 + n,
                ),
                CONFIG,
            )
        )
    resolved = [
        alert_entry(
            incident("incident_1_2_closed", incident_id="0.storm9999", ended_at=1748862961),
            CONFIG,
        )
    ]
    labels = {"policy_name": "sight-api p95 latency", "service": "sight-api"}
    return AlertGroupView(labels, tuple(firing), tuple(resolved), "new alerts in group")


def all_resolved_view() -> AlertGroupView:
    view = grouped_view()
    resolved = tuple(
        alert_entry(
            incident("incident_1_2_closed", incident_id=a.incident_id, ended_at=1748862961),
            CONFIG,
        )
        for a in view.firing
    )
    return AlertGroupView(view.labels, (), resolved, "all alerts resolved")


LONG = "x" * 5000
CASES: dict[str, Callable[[], SlackMessage]] = {
    "build_success_triggered": lambda: render_build(build("success_triggered"), console=CONSOLE),
    "build_success_manual": lambda: render_build(build("success_manual"), console=CONSOLE),
    "build_failure": lambda: render_build(build("failure"), console=CONSOLE),
    "build_internal_error": lambda: render_build(build("internal_error"), console=CONSOLE),
    "build_timeout": lambda: render_build(build("timeout"), console=CONSOLE),
    "build_cancelled": lambda: render_build(build("cancelled"), console=CONSOLE),
    "build_expired": lambda: render_build(build("failure", status="EXPIRED"), console=CONSOLE),
    "build_overlong": lambda: render_build(
        build(
            "failure",
            statusDetail=LONG,
            substitutions={"TRIGGER_NAME": "t" * 400, "BRANCH_NAME": "b" * 3000},
        )
    ),
    "build_minimal": lambda: render_build(
        parse_build_message(b'{"id": "b-1", "status": "FAILURE"}', {"buildId": "b-1"}),
        console=CONSOLE,
    ),
    "smoke_failed": lambda: render_ops(ops("smoke_failed"), CONFIG, CONSOLE),
    "smoke_failed_overlong": lambda: render_ops(
        ops(
            "smoke_failed",
            checks=[
                {"name": f"GET /v1/{n}" + "p" * 200, "ok": False, "error": LONG} for n in range(120)
            ],
        ),
        CONFIG,
    ),
    "migration_succeeded": lambda: render_ops(ops("migration_succeeded"), CONFIG, CONSOLE),
    "migration_failed": lambda: render_ops(ops("migration_failed"), CONFIG, CONSOLE),
    "migration_skipped": lambda: render_ops(ops("migration_skipped"), CONFIG, CONSOLE),
    "rollback_succeeded": lambda: render_ops(ops("rollback_succeeded"), CONFIG, CONSOLE),
    "rollback_skipped": lambda: render_ops(ops("rollback_skipped"), CONFIG, CONSOLE),
    "rollback_failed": lambda: render_ops(ops("rollback_failed"), PLAIN, CONSOLE),
    "rollback_frozen": lambda: render_ops(ops("rollback_frozen"), PLAIN, CONSOLE),
    "escalation": lambda: render_ops(ops("rollback_frozen"), CONFIG, CONSOLE),
    "rollback_overlong": lambda: render_ops(ops("rollback_failed", reason=LONG), CONFIG, CONSOLE),
    "release_promoted": lambda: render_ops(ops("release_promoted"), CONFIG, CONSOLE),
    "release_failed": lambda: render_ops(ops("release_failed"), CONFIG, CONSOLE),
    "release_deployed": lambda: render_ops(ops("release_deployed"), CONFIG, CONSOLE),
    "canary_started": lambda: render_ops(ops("canary_started"), CONFIG, CONSOLE),
    "canary_stepped": lambda: render_ops(ops("canary_stepped"), CONFIG, CONSOLE),
    "canary_promoted": lambda: render_ops(ops("canary_promoted"), CONFIG, CONSOLE),
    "canary_rolled_back": lambda: render_ops(ops("canary_rolled_back"), CONFIG, CONSOLE),
    "canary_held": lambda: render_ops(ops("canary_held"), CONFIG, CONSOLE),
    "canary_frozen": lambda: render_ops(
        ops(
            "canary_held",
            action="frozen",
            reason="breaking migration a7f3e9b2c410 applied after the canary started",
        ),
        PLAIN,
    ),
    "canary_stopped": lambda: render_ops(ops("canary_stopped"), CONFIG, CONSOLE),
    "canary_overlong": lambda: render_ops(
        ops(
            "canary_rolled_back",
            reason=LONG,
            steps=[ops("canary_rolled_back").data.model_dump(mode="json")["steps"][0]] * 60,
        ),
        CONFIG,
    ),
    "alert_open": lambda: render_incident(incident("incident_1_2_open"), CONFIG),
    "alert_closed": lambda: render_incident(incident("incident_1_2_closed"), CONFIG),
    "alert_auto_rollback": lambda: render_incident(incident("incident_auto_rollback"), CONFIG),
    "alert_1_1": lambda: render_incident(incident("incident_1_1"), CONFIG),
    "alert_test": lambda: render_incident(incident("test_notification"), CONFIG),
    "alert_grouped": lambda: render_alert_group(grouped_view(), CONFIG),
    "alert_group_resolved": lambda: render_alert_group(all_resolved_view(), CONFIG),
    "alert_overlong": lambda: render_incident(
        incident("incident_1_2_open", summary=LONG, policy_name="p" * 400, observed_value=LONG),
        CONFIG,
    ),
    "alert_minimal": lambda: render_incident(
        parse_incident_body(b'{"version": "1.2", "incident": {"incident_id": "0.min"}}'), CONFIG
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_kind_renders_its_golden_block_kit_json(name: str) -> None:
    rendered = CASES[name]().to_dict()
    path = SLACK / f"{name}.json"
    if REGEN or not path.exists():
        path.write_text(json.dumps(rendered, indent=2, ensure_ascii=False) + "\n")
    assert rendered == json.loads(path.read_text())


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_message_is_accepted_by_a_strict_slack_sink(name: str) -> None:
    payload = CASES[name]().to_dict()
    status, body, _ = SlackState(strict=True).receive(
        "/services/T/B/x", json.dumps(payload).encode(), "application/json"
    )
    assert (status, body) == (200, "ok")
    assert payload["text"].strip(), "every message has a plain-text fallback"


def _limits(payload: dict[str, Any]) -> None:
    assert len(payload["blocks"]) <= 50
    for block in payload["blocks"]:
        if block["type"] == "header":
            assert len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert len(block.get("text", {}).get("text", "")) <= 3000
            assert len(block.get("fields", [])) <= 10
            assert all(len(f["text"]) <= 2000 for f in block.get("fields", []))
        if block["type"] == "actions":
            assert all(len(e["text"]["text"]) <= 75 for e in block["elements"])


@pytest.mark.parametrize("name", [n for n in CASES if "overlong" in n])
def test_over_long_fields_are_truncated_within_slacks_limits_never_refused(name: str) -> None:
    payload = CASES[name]().to_dict()
    _limits(payload)
    assert "…" in json.dumps(payload, ensure_ascii=False)


def test_a_huge_group_is_cut_to_50_blocks_and_counts_what_it_left_out() -> None:
    base = incident("incident_1_2_open")
    firing = tuple(
        alert_entry(
            incident("incident_1_2_open", incident_id=f"0.big{n:05d}", summary=LONG), CONFIG
        )
        for n in range(3000)
    )
    view = AlertGroupView({"policy_name": base.incident.policy_name or ""}, firing, ())
    payload = render_alert_group(view, CONFIG).to_dict()
    _limits(payload)
    assert "more" in json.dumps(payload)
    assert payload["blocks"][0]["text"]["text"] == "[FIRING:3000] sight-api p95 latency"


def test_event_text_cannot_inject_mentions_or_links() -> None:
    message = render_incident(
        incident("incident_1_2_open", summary="<!channel> see <https://evil.example|here>"),
        CONFIG,
    ).to_dict()
    dumped = json.dumps(message["blocks"])
    assert "<!channel>" not in dumped and "&lt;!channel&gt;" in dumped


def test_alerts_link_to_the_runbook_for_their_policy() -> None:
    rendered = json.dumps(render_incident(incident("incident_1_2_open"), CONFIG).to_dict())
    assert "https://runbooks.example/docs/runbooks/alert-p95-latency.md" in rendered
    labelled = incident("incident_1_2_open", policy_user_labels={"runbook": "alert-memory"})
    assert "alert-memory.md" in json.dumps(render_incident(labelled, CONFIG).to_dict())


def test_titles_come_from_the_configured_templates() -> None:
    config = parse_config({"templates": {"build_title": "{trigger} on {branch} -> {status}"}})
    message = render_build(build("failure"), config.templates).to_dict()
    assert message["blocks"][0]["text"]["text"] == "sight-api-ci on main -> FAILURE"


def _context_texts(message: SlackMessage) -> list[str]:
    return [
        e["text"]
        for b in message.to_dict()["blocks"]
        if b["type"] == "context"
        for e in b["elements"]
    ]


@pytest.mark.parametrize(
    "make",
    [
        lambda console: render_build(build("success_triggered"), console=console),
        lambda console: render_ops(ops("smoke_failed"), CONFIG, console),
        lambda console: render_ops(ops("release_failed"), CONFIG, console),
        lambda console: render_ops(ops("canary_held"), CONFIG, console),
    ],
)
def test_every_message_about_a_release_links_to_its_console_page(
    make: Callable[[str | None], SlackMessage],
) -> None:
    """``<console>/releases/<release_id>`` as an mrkdwn link in the context line; without a
    console the release is only named (docs/console.md)."""
    import re

    linked = [t for t in _context_texts(make(CONSOLE)) if t.startswith("release <")]
    assert len(linked) == 1
    match = re.fullmatch(
        r"release <(https://console\.example/releases/([^|<>]+))\|([^<>|]+)>", linked[0]
    )
    assert match is not None and match.group(2) == match.group(3)
    assert not any("console.example" in t for t in _context_texts(make(None)))


def test_a_console_url_that_would_break_the_link_is_not_linked() -> None:
    from shared.notify._render import release_page_url

    assert release_page_url("https://c.example/a|b", "sight-api@4f1c2a9e7b3d") is None
    assert release_page_url("javascript:alert(1)//", "sight-api@4f1c2a9e7b3d") is None
    assert release_page_url("https://c.example/", "sight-api@4f1c2a9e7b3d") == (
        "https://c.example/releases/sight-api@4f1c2a9e7b3d"
    )
    texts = _context_texts(render_ops(ops("smoke_failed"), CONFIG, "https://c.example/>x"))
    assert not any("<https://c.example" in t for t in texts)


def test_rollback_and_canary_messages_get_their_buttons_only_when_asked() -> None:
    """Slack interactivity configured: each button names its verb, carries our value and
    asks for confirmation (docs/console.md, "Acting from Slack")."""

    def buttons(message: SlackMessage) -> list[dict[str, Any]]:
        return [
            e
            for b in message.to_dict()["blocks"]
            if b["type"] == "actions" and b.get("block_id") == "sightops_actions"
            for e in b["elements"]
        ]

    undo = buttons(render_ops(ops("rollback_succeeded"), CONFIG, actions=True))
    assert [b["action_id"] for b in undo] == ["sightops:undo_rollback"]
    assert json.loads(undo[0]["value"])["verb"] == "undo_rollback"
    assert undo[0]["confirm"]["confirm"]["text"] == "Do it"
    held = buttons(render_ops(ops("canary_held"), CONFIG, actions=True))
    assert [b["text"]["text"] for b in held] == ["Promote", "Roll back now", "Mark revision bad"]
    assert buttons(render_ops(ops("rollback_succeeded"), CONFIG)) == []
    assert buttons(render_ops(ops("release_promoted"), CONFIG, actions=True)) == []
