"""Slack messages of a release (docs/release.md, docs/notify.md): ``promoted`` is green
and says what serves, ``failed`` is red and says why, ``deployed`` is quiet; every message
about a release names it; untrusted text stays escaped and secrets masked."""

from __future__ import annotations

import json
from typing import Any

import pytest

from shared.events import EventType, OpsEvent, OpsPayload, parse_ops_message
from shared.log import REDACTOR
from shared.notify import load_config, parse_config, render, render_build, render_ops, to_notice
from shared.notify._route import Router
from shared.settings import NotifyConfig
from standins.slack import SlackState
from tests.helpers import GOLDEN, ROOT
from tests.shared.notify.test_render import build, ops

CONFIG = parse_config({})
RELEASE = "sight-api@4f1c2a9e7b3d"


def release_event(name: str, attributes: dict[str, str] | None = None, **data: Any) -> Any:
    message = json.loads((GOLDEN / "ops" / f"{name}.json").read_text())
    payload = {**message["data"], **data}
    return parse_ops_message(
        json.dumps(payload).encode(), {**message["attributes"], **(attributes or {})}
    )


def context_of(message: dict[str, Any]) -> list[str]:
    [context] = [b for b in message["blocks"] if b["type"] == "context"]
    return [e["text"] for e in context["elements"]]


def test_a_promoted_release_says_what_serves_everything_and_each_phases_time() -> None:
    message = render_ops(release_event("release_promoted"), CONFIG).to_dict()
    assert message["text"] == (
        f":large_green_circle: Release {RELEASE} promoted: sight-api-00044-xaz serves 100 %"
    )
    assert message["blocks"][0]["text"]["text"] == f"Release {RELEASE} promoted"
    phases = next(
        b["text"]["text"]
        for b in message["blocks"]
        if "Phases" in b.get("text", {}).get("text", "")
    )
    assert phases.index("deploy") < phases.index("smoke_tag") < phases.index("promote")
    assert "total 1m 15s" in phases
    assert f"release `{RELEASE}`" in context_of(message)


def test_a_failed_release_is_red_says_why_and_that_nothing_was_promoted() -> None:
    message = render_ops(release_event("release_failed"), CONFIG).to_dict()
    assert message["text"].startswith(f":red_circle: Release {RELEASE} failed: ")
    sections = [
        b["text"]["text"] for b in message["blocks"] if b["type"] == "section" and "text" in b
    ]
    assert any(s.startswith("*Why*") for s in sections)
    assert any("Nothing was promoted" in s and "sight-api-00043-vub" in s for s in sections)


def test_release_text_cannot_mention_or_link_and_secrets_are_masked() -> None:
    REDACTOR.add("s3cr3t-release-token")
    event = release_event(
        "release_failed",
        reason="<!channel> see <https://evil.example|here> & s3cr3t-release-token",
        release_id="<!here>@4f1c2a9e7b3d",
    )
    message = render_ops(event, CONFIG).to_dict()
    dumped = json.dumps(message, ensure_ascii=False)
    assert "<!channel>" not in dumped and "<!here>" not in dumped
    assert "&lt;!channel&gt;" in dumped and "&lt;!here&gt;@4f1c2a9e7b3d" in dumped
    assert "s3cr3t-release-token" not in dumped and "[REDACTED]" in dumped
    status, body, _ = SlackState(strict=True).receive(
        "/services/T/B/x", json.dumps(message).encode(), "application/json"
    )
    assert (status, body) == (200, "ok")


def test_every_message_about_a_release_names_it() -> None:
    commit_release = "sight-api@b17d4e2a9c6f"
    smoke = render_ops(ops("smoke_failed"), CONFIG).to_dict()
    assert f"release `{commit_release}`" in context_of(smoke)
    triggered = build("success_triggered")
    assert "release `sight-api@3f2a9c1e8b7d`" in context_of(render_build(triggered).to_dict())
    attributed: OpsEvent[OpsPayload] = release_event(
        "rollback_succeeded", attributes={"release_id": RELEASE}
    )
    assert f"release `{RELEASE}`" in context_of(render_ops(attributed, CONFIG).to_dict())


def test_a_message_about_no_release_has_no_release_line() -> None:
    manual = build("success_manual")
    assert not any(t.startswith("release") for t in context_of(render_build(manual).to_dict()))


def test_deployed_is_quiet_promoted_and_failed_go_to_the_releases_route() -> None:
    config = load_config(ROOT / "config" / "notify.yaml")
    router = Router(config, NotifyConfig())
    verdicts = {}
    for name, event_type in (
        ("release_deployed", EventType.RELEASE_DEPLOYED),
        ("release_promoted", EventType.RELEASE_PROMOTED),
        ("release_failed", EventType.RELEASE_FAILED),
    ):
        event = release_event(name)
        assert event.type is event_type
        notice = to_notice(event, event.id)
        assert notice is not None and notice.kind == "release"
        skip = router.skip_reason(notice)
        verdicts[name] = skip or [r.name for r in router.route(notice)]
        assert render(notice, config).text  # every release event can be rendered
    assert verdicts == {
        "release_deployed": "sight.ops.release.deployed is not notified",
        "release_promoted": ["releases"],
        "release_failed": ["releases"],
    }


def test_canary_outcomes_go_to_the_releases_route_held_escalates_and_steps_stay_quiet() -> None:
    config = load_config(ROOT / "config" / "notify.yaml")
    router = Router(config, NotifyConfig())
    verdicts: dict[str, Any] = {}
    for name in (
        "canary_started",
        "canary_stepped",
        "canary_promoted",
        "canary_rolled_back",
        "canary_held",
        "canary_stopped",
    ):
        notice = to_notice(release_event(name), name)
        assert notice is not None and notice.kind == "canary"
        verdicts[name] = router.skip_reason(notice) or [r.name for r in router.route(notice)]
    assert verdicts == {
        "canary_started": ["releases"],
        "canary_stepped": "canary steps are recorded, not posted (filters.canary_stepped)",
        "canary_promoted": ["releases"],
        "canary_rolled_back": ["releases"],
        "canary_held": ["escalations"],
        "canary_stopped": ["releases"],
    }
    for name in ("canary_requested", "canary_tick"):
        assert to_notice(release_event(name), name) is None


@pytest.mark.parametrize("name", ["release_promoted", "release_failed"])
def test_a_release_the_canary_ended_is_left_to_the_canarys_message(name: str) -> None:
    router = Router(load_config(ROOT / "config" / "notify.yaml"), NotifyConfig())
    by_deploy = to_notice(release_event(name), "a")
    by_canary = to_notice(release_event(name, via="canary"), "b")
    assert by_deploy is not None and by_canary is not None
    assert router.skip_reason(by_deploy) is None
    assert router.skip_reason(by_canary) == "the canary's own message tells how this release ended"
