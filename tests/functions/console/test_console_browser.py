"""The console in a real headless Chromium (Debian's ``chromium``, driven by Playwright
through its executable path), on a release the real stack rolled back: `sightops
simulate`'s bad-release scenario, on an isolated stack whose console serves the pages and
whose notify links every Slack message to them (docs/console.md, "Browser tests").

One browser for the session, one simulation for the module. Every page is checked for
console errors, failed requests and page errors. ``CONSOLE_SCREENSHOT=docs/console.png``
writes the release page's screenshot (the one in the README)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from sightops.simulate import Simulation, Verdict
from tests.helpers import ROOT

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
#: Headless, no sandbox (root in a container), and nothing that calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Debian's chromium (installed by scripts/browser.sh when missing), one per session."""
    subprocess.run([str(ROOT / "scripts" / "browser.sh")], check=True, timeout=900)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@dataclass
class Released:
    """A release the stack promoted and then rolled back, and where its console is."""

    simulation: Simulation
    verdict: Verdict

    @property
    def console(self) -> str:
        assert self.simulation.stack is not None
        return self.simulation.stack.ports.function_url("console")

    @property
    def service(self) -> str:
        return self.verdict.facts.service

    @property
    def release_id(self) -> str:
        assert self.verdict.facts.release_id is not None
        return self.verdict.facts.release_id

    def slack(self) -> list[dict[str, Any]]:
        assert self.simulation.harness is not None
        return self.simulation.harness.slack_messages()


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Released]:
    with Simulation(state_dir=tmp_path_factory.mktemp("console-sim")) as simulation:
        verdict = simulation.run("bad-release", timeout_s=60)
        assert verdict.passed, [c for c in verdict.checks if not c.ok]
        yield Released(simulation, verdict)


@dataclass
class Page:
    """A browser tab that records everything that went wrong while it was used."""

    page: Any
    problems: list[str] = field(default_factory=list)

    def open(self, url: str) -> Any:
        response = self.page.goto(url, wait_until="load")
        assert response is not None and response.status == 200, url
        return self.page


@pytest.fixture
def tab(chromium: Any) -> Iterator[Page]:
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = Page(context.new_page())
    page.page.on(
        "console",
        lambda m: (
            page.problems.append(f"console {m.type}: {m.text}")
            if m.type in {"error", "warning"}
            else None
        ),
    )
    page.page.on("pageerror", lambda e: page.problems.append(f"page error: {e}"))
    page.page.on("requestfailed", lambda r: page.problems.append(f"failed: {r.url}"))
    page.page.on(
        "response",
        lambda r: page.problems.append(f"{r.status}: {r.url}") if r.status >= 400 else None,
    )
    yield page
    context.close()
    assert page.problems == []


def release_link(messages: list[dict[str, Any]], console: str, release_id: str) -> str:
    """The release page link of a Slack message, as Slack would show it (mrkdwn)."""
    pattern = re.compile(r"<(http://[^|>]+/releases/[^|>]+)\|([^|>]+)>")
    for message in messages:
        for block in message["body"].get("blocks", []):
            for element in block.get("elements", []) if block["type"] == "context" else []:
                match = pattern.search(element.get("text", ""))
                if match and match.group(2) == release_id:
                    assert match.group(1).startswith(console)
                    return match.group(1)
    raise AssertionError(f"no Slack message links to {release_id}")


def test_the_release_page_linked_from_slack_shows_the_timeline_and_the_undo(
    released: Released, tab: Page
) -> None:
    rollback = [
        m for m in released.slack() if "Rollback succeeded" in str(m["body"].get("text", ""))
    ]
    assert rollback, "notify posted the rollback"
    page = tab.open(release_link(rollback, released.console, released.release_id))
    facts = released.verdict.facts
    assert page.inner_text("#release-id") == released.release_id
    kinds = page.locator("#timeline li.action .kind").all_inner_texts()
    for kind in ("migration", "release", "rollback", "notification"):
        assert kind in kinds, kinds
    assert kinds.index("release") < kinds.index("rollback")
    assert page.locator("#timeline li.span").count() > 0  # the release's trace, locally
    assert page.inner_text("#undo-command") == (
        f"sightops rollback {released.service} --to {facts.new_revision} --force"
    )
    decision = page.inner_text("#decisions")
    assert f"{facts.new_revision} 100 %" in decision and f"{facts.last_good} 100 %" in decision
    shot = os.environ.get("CONSOLE_SCREENSHOT")
    if shot:
        page.screenshot(path=str(ROOT / shot), full_page=False)
    page.locator("#timeline li.action details summary").first.click()
    assert page.locator("#timeline li.action details pre").first.is_visible()


def test_the_services_page_shows_the_split_after_the_rollback(
    released: Released, tab: Page
) -> None:
    page = tab.open(released.console + "/")
    card = page.locator(f"#service-{released.service}")
    facts = released.verdict.facts
    assert card.locator(".split").inner_text().strip() == f"{facts.last_good} 100 %"
    rows = card.locator("table.revisions tbody tr").all_inner_texts()
    assert any(facts.new_revision in r and "bad" in r for r in rows), rows


def test_the_releases_list_filters_by_service_and_time(released: Released, tab: Page) -> None:
    page = tab.open(released.console + "/releases")
    page.select_option("#filter-service", released.service)
    page.click("#filter-apply")
    page.wait_for_url(re.compile(r".*service=.*"))
    services = page.locator("tr.release-row").evaluate_all(
        "rows => rows.map(r => r.dataset.service)"
    )
    assert services and set(services) == {released.service}
    assert released.release_id in page.inner_text("#releases")
    page.fill("#filter-since", "2099-01-01")
    page.fill("#filter-until", "2099-01-02")
    page.click("#filter-apply")
    page.wait_for_url(re.compile(r".*since=2099-01-01.*"))
    assert page.locator("#no-releases").is_visible()
    page.click("text=28 d")
    assert released.release_id in page.inner_text("#releases")


def test_the_metrics_page_draws_its_charts(released: Released, tab: Page) -> None:
    page = tab.open(f"{released.console}/metrics?service={released.service}")
    assert page.locator("figure.chart svg").count() == 7
    promoted = page.locator("#chart-promoted svg")
    assert promoted.bounding_box()["width"] > 100  # type: ignore[index]
    assert "1" in promoted.locator("text.value").all_text_contents()  # SVG: text, not inner
    rollbacks = page.locator("#chart-services-rollback g.bar.missed")
    assert rollbacks.count() == 1  # one rollback of one promotion: over the 1 % target
