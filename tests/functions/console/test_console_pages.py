"""The console's pages through functions-framework: what each shows, from the real ledger
and the Cloud Run stand-in, escaped, without secrets (docs/console.md)."""

from __future__ import annotations

import json
import re
import uuid
from datetime import UTC, datetime, timedelta

from markupsafe import escape
from pydantic import SecretStr
from sqlalchemy import text

from shared.db import transaction
from shared.release import release_trace_id
from shared.runtime import Deps
from standins import RunningServer
from standins import cloudrun as cloudrun_standin
from tests.functions.console.conftest import CONSOLE_SECRETS, REGION, Ledger, Pages
from tests.helpers import PROJECT


def test_a_rolled_back_release_shows_its_timeline_its_traffic_move_and_the_exact_undo(
    pages: Pages, ledger: Ledger
) -> None:
    release, bad, good = ledger.rolled_back_release()
    body = pages.get(f"/releases/{release}")
    assert f'<h1 id="release-id">{release}</h1>' in body
    assert release_trace_id(release) in body
    # the command that undoes it, exactly, and the mark to clear after it
    assert f"sightops rollback {ledger.service} --to {bad} --force" in body
    assert (
        f"sightops revisions {ledger.service} --mark-good {bad} --reason &#39;false alarm&#39;"
        in body
    )
    # the traffic move with what served before and after
    decision = body[body.index('id="decisions"') :]
    assert decision.index(f"<code>{bad}</code> 100 %") < decision.index(
        f"<code>{good}</code> 100 %"
    )
    # the timeline, oldest first: migration, deployed, promoted, rollback
    kinds = re.findall(r'<span class="kind">([^<]+)</span>', body)
    assert kinds == ["migration", "release", "release", "rollback"]
    assert "smoke.failed for" in body and "serving 100% of traffic" in body


def test_the_undo_of_a_promoted_release_moves_traffic_back_to_the_revision_before_it(
    pages: Pages, ledger: Ledger
) -> None:
    release = ledger.release()
    ledger.action(
        release,
        "release",
        "promoted",
        detail={"revision": "r2", "previous_revision": "r1", "region": REGION},
    )
    body = pages.get(f"/releases/{release}")
    assert f"sightops rollback {ledger.service} --to r1 --region {REGION}" in body


def test_a_frozen_release_says_nothing_moved_and_names_the_forced_rollback_a_human_may_run(
    pages: Pages, ledger: Ledger
) -> None:
    release = ledger.release()
    ledger.action(
        release,
        "freeze",
        "frozen",
        detail={"from": "r2", "to": "r1", "reason": "breaking migration m1 applied"},
    )
    body = pages.get(f"/releases/{release}")
    assert "there is nothing to undo" in body
    assert f"sightops rollback {ledger.service} --to r1 --force" in body
    services = pages.get("/")
    card = services[services.index(f'id="service-{ledger.service}"') :]
    assert '<span class="badge bad">frozen</span>' in card[:2000]
    assert "breaking migration m1 applied" in card[:3000]


def test_an_unknown_or_malformed_release_is_a_404_page(pages: Pages, ledger: Ledger) -> None:
    assert "nothing about" in pages.get(f"/releases/{ledger.release()}", 404)
    assert "nothing about" not in pages.get("/releases/not-a-release", 404)
    assert "no such page" in pages.get("/no/such/page", 404)


def test_releases_are_newest_first_and_filtered_by_service_and_time(
    pages: Pages, ledger: Ledger, make_ledger: object
) -> None:
    other = Ledger(ledger.deps)
    now = datetime.now(UTC)
    old = ledger.release()
    new = ledger.release()
    theirs = other.release()
    ledger.action(old, "release", "promoted", at=now - timedelta(days=10), detail={"revision": "a"})
    ledger.action(new, "release", "deployed", at=now - timedelta(hours=1), detail={"revision": "b"})
    other.action(theirs, "release", "failed", at=now - timedelta(hours=2), detail={})

    def listed(body: str) -> list[str]:
        return [r for r in re.findall(r'<a href="/releases/([^"]+)">', body) if "@" in r]

    both = listed(pages.get(f"/releases?days=28&service={ledger.service}"))
    assert both == [new, old]  # newest first, the other service's left out
    assert listed(pages.get(f"/releases?days=7&service={ledger.service}")) == [new]
    day = (now - timedelta(days=10)).date().isoformat()
    assert listed(pages.get(f"/releases?service={ledger.service}&since={day}&until={day}")) == [old]
    everyone = listed(pages.get("/releases?days=1"))
    assert everyone.index(new) < everyone.index(theirs) and old not in everyone
    assert "service must be a Cloud Run service name" in pages.get(
        "/releases?service=Bad_Name", 400
    )
    assert "days must be a whole number" in pages.get("/releases?days=0", 400)
    assert "until must be after since" in pages.get(
        "/releases?since=2026-02-02&until=2026-01-01", 400
    )


def test_the_services_page_shows_cloud_runs_split_and_the_ledgers_health(
    pages: Pages,
    ledger: Ledger,
    cloudrun: tuple[cloudrun_standin.CloudRunState, RunningServer],
) -> None:
    state, _ = cloudrun
    state.create_service(PROJECT, REGION, ledger.service, "img:1", revision=f"{ledger.service}-1")
    state.create_revision(
        PROJECT, REGION, ledger.service, image="img:2", revision=f"{ledger.service}-2"
    )
    state.set_traffic(
        PROJECT,
        REGION,
        ledger.service,
        [
            {
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": f"{ledger.service}-1",
                "percent": 90,
            },
            {
                "type": "TRAFFIC_TARGET_ALLOCATION_TYPE_REVISION",
                "revision": f"{ledger.service}-2",
                "percent": 10,
            },
        ],
    )
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    ledger.revision(f"{ledger.service}-1", "good", "smoke.passed e0", t0)
    ledger.revision(f"{ledger.service}-2", "bad", "smoke.failed e9: GET /health", t0)
    unknown = Ledger(ledger.deps)  # known to the ledger, absent from Cloud Run
    unknown.revision(f"{unknown.service}-1", "unknown", "first seen", t0)
    body = pages.get("/")
    card = body[body.index(f'id="service-{ledger.service}"') :]
    card = card[: card.index("</section>")]
    assert f"{ledger.service}-1 90 %" in card and f"{ledger.service}-2 10 %" in card
    assert '<span class="badge bad">bad</span>' in card and "smoke.failed e9" in card
    assert "frozen" not in card
    missing = body[body.index(f'id="service-{unknown.service}"') :]
    assert "Cloud Run could not be read (ServiceNotFound)" in missing[: missing.index("</section>")]


def test_the_canary_of_a_release_shows_its_steps_and_its_service_is_flagged(
    pages: Pages, ledger: Ledger
) -> None:
    release = ledger.release()
    now = datetime.now(UTC)
    step = {
        "percent": 5,
        "action": "step",
        "reason": "5 % looked healthy",
        "started_at": (now - timedelta(minutes=4)).isoformat(),
        "decided_at": (now - timedelta(minutes=2)).isoformat(),
        "evidence": {
            "verdict": "not_worse",
            "intervals": 3,
            "errors": {
                "outcome": "not_worse",
                "canary_events": 0,
                "canary_requests": 120,
                "stable_events": 2,
                "stable_requests": 2300,
            },
        },
    }
    with transaction(ledger.deps.engine) as conn:
        conn.execute(
            text(
                "INSERT INTO ops.canaries (release_id, project, region, service, revision,"
                " stable_revision, commit_sha, status, percent, steps, max_step_s, started_at,"
                " step_started_at, history, reason) VALUES (:r, :p, :g, :s, 'rev-2', 'rev-1',"
                " :c, 'running', 25, ARRAY[5, 25, 50, 100], 1800, :t, :t,"
                " CAST(:h AS jsonb), 'stepped to 25 %')"
            ),
            {
                "r": release,
                "p": PROJECT,
                "g": REGION,
                "s": ledger.service,
                "c": release.split("@")[1],
                "t": now - timedelta(minutes=4),
                "h": json.dumps([step]),
            },
        )
    ledger.action(
        release,
        "canary",
        "stepped",
        detail={
            "percent_before": 5,
            "percent_after": 25,
            "reason": "5 % looked healthy",
            "evidence": step["evidence"],
        },
    )
    body = pages.get(f"/releases/{release}")
    canary = body[body.index('id="canary"') :]
    assert "plan 5 → 25 → 50 → 100 %" in canary
    assert "not_worse: canary 0/120 vs stable 2/2300" in canary
    assert f"sightops canary rollback {ledger.service}" in body
    assert "5 % → 25 %: 5 % looked healthy" in body
    services = pages.get("/")
    card = services[services.index(f'id="service-{ledger.service}"') :]
    assert "canary running at 25 %" in card[:1500]


def test_a_database_without_the_canary_table_still_serves_every_release(
    console_deps: Deps, ledger: Ledger
) -> None:
    """ops.canaries comes with alembic 0005: the console reads it only where it exists."""
    from shared.console import _queries as q

    release = ledger.release()
    ledger.action(release, "release", "deployed", detail={"revision": "r1"})
    with console_deps.engine.connect() as conn, conn.begin() as tx:
        conn.execute(text("SET LOCAL lock_timeout = '5s'"))
        conn.execute(text("DROP TABLE ops.canaries"))
        assert q.has_table(conn, "ops.canaries") is False
        assert q.canary_of(conn, release) is None and q.active_canaries(conn) == {}
        assert [a.kind for a in q.release_story(conn, release).actions] == ["release"]
        tx.rollback()


def test_every_ledger_value_is_escaped_and_no_secret_is_rendered(
    pages: Pages, ledger: Ledger, console_deps: Deps
) -> None:
    webhook = f"https://hooks.slack.com/services/T0CON/B0CON/{uuid.uuid4().hex}"
    signing = f"signing-{uuid.uuid4().hex}"
    console_deps.settings = console_deps.settings.model_copy(
        update={
            "slack_webhook_url": SecretStr(webhook),
            "console": console_deps.settings.console.model_copy(
                update={"slack_signing_secret": SecretStr(signing)}
            ),
        }
    )
    CONSOLE_SECRETS.extend([webhook, signing, "hunter2hunter2"])
    hostile = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    release = ledger.release()
    ledger.action(
        release,
        "rollback",
        "failed",
        detail={
            "from": hostile,
            "to": "r1",
            "reason": f"{hostile} posting to {webhook} with {signing} and password=hunter2hunter2",
        },
    )
    for path in (f"/releases/{release}", f"/releases?service={ledger.service}", "/"):
        body = pages.get(path)
        assert "<script>" not in body and "<img src=x" not in body, path
        assert webhook not in body and signing not in body and "hunter2hunter2" not in body, path
    body = pages.get(f"/releases/{release}")
    assert str(escape(hostile))[:40] in body  # shown as text
    assert "[REDACTED]" in body


def test_every_page_forbids_scripts_and_framing(pages: Pages) -> None:
    response = pages.client.get("/releases")
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Cache-Control"] == "no-store"
    css = pages.client.get("/assets/console.css")
    assert css.status_code == 200 and css.headers["Content-Type"].startswith("text/css")
    assert pages.client.get("/assets/..%2Fconsole.css").status_code == 404
    assert pages.client.post("/releases").status_code == 405


def test_rejected_and_dead_lettered_messages_are_listed_and_stay_replayable(
    pages: Pages, console_deps: Deps
) -> None:
    """A rejection kept by the runtime, and a dead letter waiting on a hold subscription of
    the emulator: both shown; reading the hold leaves the message there for `sightops dlq`."""
    import os

    import functions_framework
    from google.cloud import pubsub_v1

    from sightops.pubsub_admin import ensure_subscription, ensure_topic
    from tests.helpers import ROOT, envelope, push

    rollback = functions_framework.create_app(
        target="rollback",
        source=str(ROOT / "functions" / "rollback" / "main.py"),
        signature_type="cloudevent",
    ).test_client()
    marker = f"not-json-{uuid.uuid4().hex[:8]}"
    assert push(rollback, "smoke-tests", envelope("{" + marker)).status_code == 200

    os.environ["PUBSUB_EMULATOR_HOST"] = console_deps.settings.pubsub_emulator_host or ""
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    hold = f"console{uuid.uuid4().hex[:8]}--ops-events--dead-letter"
    ensure_topic(publisher, PROJECT, hold)
    path = ensure_subscription(subscriber, PROJECT, hold, hold, retry_policy=False)
    event_id = str(uuid.uuid4())
    publisher.publish(
        f"projects/{PROJECT}/topics/{hold}",
        b'{"service": "dead-svc"}',
        type="sight.ops.release.promoted",
        id=event_id,
        CloudPubSubDeadLetterSourceDeliveryCount="5",
    ).result(timeout=10)
    console_deps.settings = console_deps.settings.model_copy(
        update={
            "console": console_deps.settings.console.model_copy(
                update={"dead_letter_holds": [hold], "api_timeout_s": 2.0}
            )
        }
    )
    try:
        for _ in range(2):  # a page view leases and gives back: the letter stays
            body = pages.get("/messages?consumer=rollback")
            rejected = body[body.index('id="rejected"') : body.index('id="dead-letters"')]
            assert marker in rejected
            body = pages.get(f"/messages?consumer={hold.split('--')[0]}")
            dead = body[body.index('id="dead-letters"') :]
            assert "sight.ops.release.promoted" in dead
            assert "dead-lettered after 5 delivery attempts" in dead
            assert "dead-svc" in dead
    finally:
        subscriber.delete_subscription(subscription=path)
        publisher.delete_topic(topic=f"projects/{PROJECT}/topics/{hold}")


def test_the_metrics_page_draws_the_release_metrics_as_svg_charts(
    pages: Pages, ledger: Ledger
) -> None:
    now = datetime.now(UTC)
    for n, revision in enumerate(("m-1", "m-2")):
        ledger.action(
            ledger.release(),
            "release",
            "promoted",
            at=now - timedelta(hours=5 - n),
            detail={"revision": revision},
        )
    ledger.action(
        None,
        "rollback",
        "succeeded",
        at=now - timedelta(hours=1),
        detail={"from": "m-2", "to": "m-1", "trigger": "manual", "dry_run": False, "manual": True},
    )
    body = pages.get(f"/metrics?service={ledger.service}&days=28")
    assert body.count("<svg") == 7
    promoted = body[body.index('id="chart-promoted"') :]
    promoted = promoted[: promoted.index("</figure>")]
    assert promoted.count("<rect") == 4  # four weeks; the last holds both promotions
    assert re.search(r'<text class="value"[^>]*>2</text>\s*<text class="label"', promoted)
    rollbacks = body[body.index('id="chart-services-rollback"') :]
    rollbacks = rollbacks[: rollbacks.index("</figure>")]
    assert '<g class="bar missed">' in rollbacks and "50 %" in rollbacks
    assert '<line class="target"' in rollbacks
    assert "rollback rate &lt; 1 %" in body and "mttr s &lt; 15 min" in body
