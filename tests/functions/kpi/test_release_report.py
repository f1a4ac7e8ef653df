"""Release metrics on a seeded ledger with known answers (docs/metrics.md), through every
entry point: the computation, `sightops report`, ``GET /v1/ops/metrics`` on the kpi
function, and the weekly digest (kpi_refresh -> ops-events on the emulator -> notify ->
Slack stand-in).

The history is February 2021 (no other test writes there), four ISO weeks, two services:

sight-api  R1 Feb 1 10:00  build created 09:00 (lead 1 h)
           R2 Feb 3 10:00  build created 08:00 (lead 2 h); smoke rollback 10:05, decided 10:04
           R3 Feb 9 10:00  build record without createTime, migrate started 09:30 (lead 30 min)
           F1 Feb 10 11:00 failed deploy
           R4 Feb 16 12:00 build created 09:00 (lead 3 h); auto_rollback incident open 20:00,
                           alert rollback 20:06 (decided 20:05:30), incident closed 20:30
           R5 Feb 23 09:40 build created 09:00 (lead 40 min), its event recorded twice; a
                           dry-run rollback away from it
           outside: a promotion at Jan 31 23:59:59 and one exactly at Mar 1 00:00
sight-web  W1 Feb 2 11:00  build created 10:00 (lead 1 h)
           W2 Feb 24 10:30 build created 10:00 (lead 30 min); frozen 11:00
           incident (no auto_rollback) Feb 25 08:00-08:10; auto_rollback incident Feb 27
           12:00-12:20, 73.5 h after W2: beyond the 24 h failure window
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from shared.db import create_db_engine
from shared.events import EventType, ReleaseReport, ReleaseResult, parse_ops_message
from shared.kpi.release_report import (
    ReportQuery,
    compute_release_report,
    release_metrics_service,
)
from shared.metrics import Metrics
from shared.release import release_id
from shared.rollback._store import DecisionRecord, record_intent
from shared.runtime import Deps, set_process_deps, write_action
from shared.settings import Settings
from sightops.cli import app
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory, make_notify, sink
from tests.helpers import ROOT, envelope, push
from tests.shared.migrate.helpers import OpsTopic, ops_topic

__all__ = ["make_notify", "ops_topic", "sink"]

SOURCE = ROOT / "functions" / "kpi" / "main.py"
SINCE = datetime(2021, 2, 1, tzinfo=UTC)
UNTIL = datetime(2021, 3, 1, tzinfo=UTC)
SCHEDULER = {"type": EventType.REPORT_REQUESTED.value, "source": "cloud-scheduler"}
INCIDENT_API = "0.api-latency-4k2"
SMOKE_EVENT = "5b0f3c2e-1a4d-4e6f-8a9b-0c1d2e3f4a5b"


def t(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2021, 2, day, hour, minute, second, tzinfo=UTC)


def commit(n: int) -> str:
    return f"{n:040x}"


# ---- the seeded ledger, written as the functions write it (rules in docs/metrics.md) ----


def release(
    conn: Any, service: str, status: str, when: datetime, n: int, revision: str | None
) -> None:
    payload = ReleaseResult(
        service=service,
        region="europe-west1",
        commit_sha=commit(n),
        release_id=release_id(service, commit(n)),
        build_id=f"b-{service}-{n}",
        revision=revision,
        reason="smoke failed on the tagged revision" if status == "failed" else None,
        started_at=when - timedelta(minutes=10),
        finished_at=when,
    )
    event_id = str(uuid.uuid4())
    write_action(
        conn,
        kind="release",
        status=status,
        now=when,
        service=service,
        trigger_event_id=event_id,
        detail=payload.model_dump(mode="json"),
        dedupe_key=f"release:{event_id}",
        release_id=payload.release_id,
    )


def migration(conn: Any, service: str, n: int, started: datetime, created: datetime | None) -> None:
    detail: dict[str, Any] = {"build_id": f"b-{service}-{n}", "service": service}
    if created is not None:
        detail["build_created_at"] = created.isoformat()
    write_action(
        conn,
        kind="migration",
        status="succeeded",
        now=started,
        service=service,
        dedupe_key=f"migrate:b-{service}-{n}",
        detail=detail,
    )


def rollback(
    conn: Any,
    service: str,
    when: datetime,
    from_revision: str,
    to_revision: str,
    trigger: str,
    trigger_event_id: str,
    *,
    decided_at: datetime | None = None,
    kind: str = "rollback",
    status: str = "succeeded",
    dry_run: bool = False,
) -> None:
    detail: dict[str, Any] = {
        "from": from_revision,
        "to": to_revision,
        "reason": "test history",
        "trigger": trigger,
        "trigger_event_id": trigger_event_id,
        "dry_run": dry_run,
        "manual": False,
    }
    if decided_at is not None:  # a traffic move: its decision is journaled
        decision = DecisionRecord(
            decision_id=uuid.uuid4(),
            trigger_key=f"test:{uuid.uuid4()}",
            service=service,
            trigger_kind="smoke" if trigger == "smoke" else "alert",
            trigger_event_id=trigger_event_id,
            actor="automation",
            from_revision=from_revision,
            to_revision=to_revision,
            reason="test history",
            event_id=str(uuid.uuid4()),
            created_at=decided_at,
        )
        record_intent(conn, decision)
        detail["decision_id"] = str(decision.decision_id)
    write_action(
        conn,
        kind=kind,
        status=status,
        now=when,
        service=service,
        trigger_event_id=trigger_event_id,
        detail=detail,
    )


def incident(
    conn: Any,
    service: str,
    incident_id: str,
    started: datetime,
    ended: datetime,
    *,
    auto_rollback: bool,
    revision: str | None = None,
) -> None:
    for state, when in (("open", started), ("closed", ended)):
        write_action(
            conn,
            kind="incident",
            status=state,
            now=when,
            service=service,
            trigger_event_id=incident_id,
            detail={
                "incident_id": incident_id,
                "policy_name": "p95 latency",
                "revision": revision,
                "auto_rollback": auto_rollback,
                "started_at": started.isoformat(),
                "ended_at": ended.isoformat() if state == "closed" else None,
            },
            dedupe_key=f"incident:{incident_id}:{state}",
        )


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Engine]:
    made = create_db_engine(settings, pool_size=2, max_overflow=0)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def history(engine: Engine) -> None:
    """Written once per session database (the dedupe keys would refuse a second copy)."""
    api, web = "sight-api", "sight-web"
    with engine.begin() as conn:
        if conn.execute(
            text("SELECT count(*) FROM ops.actions WHERE dedupe_key = 'migrate:b-sight-api-1'")
        ).scalar_one():
            return
        migration(conn, api, 1, t(1, 9, 5), created=t(1, 9))
        release(conn, api, "promoted", t(1, 10), 1, "sight-api-00001-aaa")
        migration(conn, api, 2, t(3, 8, 5), created=t(3, 8))
        release(conn, api, "deployed", t(3, 9, 55), 2, "sight-api-00002-bbb")
        release(conn, api, "promoted", t(3, 10), 2, "sight-api-00002-bbb")
        rollback(
            conn, api, t(3, 10, 5), "sight-api-00002-bbb", "sight-api-00001-aaa", "smoke",
            SMOKE_EVENT, decided_at=t(3, 10, 4),
        )  # fmt: skip
        migration(conn, api, 3, t(9, 9, 30), created=None)
        release(conn, api, "promoted", t(9, 10), 3, "sight-api-00003-ccc")
        release(conn, api, "failed", t(10, 11), 4, None)
        migration(conn, api, 5, t(16, 9, 5), created=t(16, 9))
        release(conn, api, "promoted", t(16, 12), 5, "sight-api-00005-eee")
        incident(
            conn, api, INCIDENT_API, t(16, 20), t(16, 20, 30),
            auto_rollback=True, revision="sight-api-00005-eee",
        )  # fmt: skip
        rollback(
            conn, api, t(16, 20, 6), "sight-api-00005-eee", "sight-api-00003-ccc", "alert",
            INCIDENT_API, decided_at=t(16, 20, 5, 30),
        )  # fmt: skip
        migration(conn, api, 6, t(23, 9, 5), created=t(23, 9))
        release(conn, api, "promoted", t(23, 9, 40), 6, "sight-api-00006-fff")
        release(conn, api, "promoted", t(23, 9, 41), 6, "sight-api-00006-fff")  # re-published
        rollback(
            conn, api, t(23, 10), "sight-api-00006-fff", "sight-api-00005-eee", "smoke",
            str(uuid.uuid4()), kind="rollback", status="skipped", dry_run=True,
        )  # fmt: skip
        release(conn, api, "promoted", SINCE - timedelta(seconds=1), 0, "sight-api-00000-zzz")
        release(conn, api, "promoted", UNTIL, 7, "sight-api-00007-ggg")
        migration(conn, web, 1, t(2, 10, 5), created=t(2, 10))
        release(conn, web, "promoted", t(2, 11), 1, "sight-web-00001-aaa")
        migration(conn, web, 2, t(24, 10, 5), created=t(24, 10))
        release(conn, web, "promoted", t(24, 10, 30), 2, "sight-web-00002-bbb")
        rollback(
            conn, web, t(24, 11), "sight-web-00002-bbb", "sight-web-00001-aaa", "smoke",
            str(uuid.uuid4()), kind="freeze", status="frozen",
        )  # fmt: skip
        incident(conn, web, "0.web-5xx-1", t(25, 8), t(25, 8, 10), auto_rollback=False)
        incident(conn, web, "0.web-5xx-2", t(27, 12), t(27, 12, 20), auto_rollback=True)


def report(engine: Engine, service: str | None = None) -> ReleaseReport:
    return compute_release_report(engine, since=SINCE, until=UNTIL, now=UNTIL, service=service)


# ---- the known answers ----------------------------------------------------------------


def test_seeded_history_gives_the_hand_computed_metrics(engine: Engine, history: None) -> None:
    result = report(engine)
    assert [m.service for m in result.services] == ["sight-api", "sight-web"]
    api, web, overall = result.services[0], result.services[1], result.overall

    # sight-api: R1..R5 promoted (R5 once), F1 failed; Jan 31 and Mar 1 are outside.
    assert (api.promoted, api.failed, api.rollbacks) == (5, 1, 2)
    assert api.deployment_success_rate.value == 0.8333  # 5 / (5 + 1)
    assert api.rollback_rate.value == 0.4  # 2 moves / 5 promotions (the dry run is none)
    assert api.change_failure_rate.value == 0.4  # R2 rolled back, R4 incident: 2 / 5
    assert [(f.revision, f.cause, f.evidence) for f in api.failures] == [
        ("sight-api-00002-bbb", "rolled_back", SMOKE_EVENT),
        # the incident (20:00) came before the rollback (20:06): it is the cause
        ("sight-api-00005-eee", "incident", INCIDENT_API),
    ]
    # lead times 3600, 7200, 1800 (migrate's start), 10800, 2400 -> sorted, the middle one
    assert api.lead_time.model_dump() == {"median_s": 3600.0, "mean_s": 5160.0, "samples": 5}
    # restore: smoke 10:04 -> 10:05 = 60 s; alert 20:00 -> 20:06 = 360 s
    assert api.time_to_restore.model_dump() == {"median_s": 210.0, "mean_s": 210.0, "samples": 2}
    assert api.mttr_s == 210.0
    assert api.incident_duration.median_s == 1800.0  # 20:00 -> 20:30
    # deploy days per ISO week: W05 2 (Feb 1, 3), W06 1, W07 1, W08 1: most weeks -> weekly
    assert api.deployment_frequency.model_dump() == {
        "per_week": 1.25,  # 5 promotions / 4 weeks
        "deploy_days": 5,
        "bucket": "weekly",
    }
    assert {c.name: c.ok for c in api.targets} == {
        "deployment_success_rate": False,  # 0.8333 < 0.99
        "rollback_rate": False,  # 0.4 >= 0.01
        "mttr_s": True,  # 210 s < 900 s
    }

    # sight-web: W1, W2 promoted, none failed; W2 frozen; the Feb 27 incident is too late.
    assert (web.promoted, web.failed, web.rollbacks) == (2, 0, 0)
    assert web.deployment_success_rate.value == 1.0
    assert web.rollback_rate.value == 0.0
    assert web.change_failure_rate.value == 0.5  # 1 frozen / 2
    assert [f.cause for f in web.failures] == ["frozen"]
    assert web.lead_time.median_s == 2700.0  # median(3600, 1800)
    assert web.time_to_restore.samples == 0 and web.mttr_s is None
    assert web.incident_duration.model_dump() == {  # 600 s and 1200 s
        "median_s": 900.0,
        "mean_s": 900.0,
        "samples": 2,
    }
    # deploys in W05 and W08 only: median week has none; February had some -> monthly
    assert web.deployment_frequency.bucket == "monthly"
    assert web.deployment_frequency.per_week == 0.5
    assert {c.name: c.ok for c in web.targets} == {
        "deployment_success_rate": True,
        "rollback_rate": True,
        "mttr_s": None,  # nothing restored: no data, not a pass
    }

    # overall: 7 promoted, 1 failed, 2 rollbacks, 3 failed changes
    assert overall.deployment_success_rate.value == 0.875  # 7 / 8
    assert overall.rollback_rate.value == 0.2857  # 2 / 7
    assert overall.change_failure_rate.value == 0.4286  # 3 / 7
    # 1800, 1800, 2400, 3600, 3600, 7200, 10800: median 3600, mean 31200 / 7
    assert overall.lead_time.model_dump() == {
        "median_s": 3600.0,
        "mean_s": 4457.143,
        "samples": 7,
    }
    assert overall.incident_duration.median_s == 1200.0  # median(1800, 600, 1200)
    # W05 has Feb 1, 2, 3 (3 days), W06 1, W07 1, W08 2: median 1.5 < 3 -> weekly
    assert overall.deployment_frequency.model_dump() == {
        "per_week": 1.75,
        "deploy_days": 7,
        "bucket": "weekly",
    }

    # alert noise: of the three "p95 latency" incidents only web-5xx-1 closed within 15 min
    # (10 min), nothing done on sight-web meanwhile (its freeze was the day before).
    assert result.alert_noise is not None
    assert [p.model_dump() for p in result.alert_noise.policies] == [
        {
            "policy": "p95 latency",
            "month": "2021-02",
            "incidents": 3,
            "likely_false_positives": 1,
            "month_complete": True,
            "over_target": False,
        }
    ]


def test_a_longer_failure_window_blames_the_late_incident_on_nothing_new(
    engine: Engine, history: None
) -> None:
    """96 h reaches the Feb 27 incident, but W2 already failed (frozen, earlier)."""
    result = compute_release_report(
        engine,
        since=SINCE,
        until=UNTIL,
        now=UNTIL,
        service="sight-web",
        failure_window=timedelta(hours=96),
    )
    assert [f.cause for f in result.overall.failures] == ["frozen"]
    assert [m.service for m in result.services] == ["sight-web"]


# ---- sightops report ---------------------------------------------------------------------


@pytest.fixture
def cli_deps(settings: Settings) -> Iterator[None]:
    """The command builds on the process deps and closes them when done."""
    set_process_deps(Deps(settings, metrics=Metrics()))
    yield
    set_process_deps(None)


def test_cli_json_is_the_report_with_its_documented_keys(
    engine: Engine, history: None, cli_deps: None
) -> None:
    result = CliRunner().invoke(
        app, ["report", "--since", "2021-02-01", "--until", "2021-03-01T00:00:00Z", "--json"]
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    expected = report(engine).model_dump(mode="json")
    assert {k: v for k, v in document.items() if k != "computed_at"} == {
        k: v for k, v in expected.items() if k != "computed_at"
    }
    assert set(document) == {
        "schema_version",
        "since",
        "until",
        "days",
        "service",
        "failure_window_h",
        "computed_at",
        "services",
        "overall",
        "alert_noise",
    }


def test_cli_table_shows_each_service_and_judges_the_targets(history: None, cli_deps: None) -> None:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(
        app, ["report", "--service", "sight-api", "--since", "2021-02-01", "--until", "2021-03-01"]
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "sight-api" in out and "sight-web" not in out
    assert "1.25 (weekly)" in out
    assert "83.3 %" in out and "fail" in out  # deployment success rate
    assert "3m 30s" in out and "pass" in out  # MTTR 210 s
    assert "failed change sight-api@" in out


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--days", "7", "--since", "2021-02-01"], "not both"),
        (["--since", "yesterday"], "not an ISO date"),
        (["--since", "2021-03-01", "--until", "2021-02-01"], "must end after it starts"),
        (["--service", "Sight_API"], "not a Cloud Run service name"),
    ],
)
def test_cli_refuses_bad_windows_with_one_line(args: list[str], said: str) -> None:
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output


# ---- GET /v1/ops/metrics -------------------------------------------------------------------


@pytest.fixture
def at_until(settings: Settings, deps: Deps) -> Iterator[Deps]:
    """Deps whose clock is Mar 1 00:00 (``days=28`` is the seeded window), with a cache
    prefix of their own (Redis outlives the session database); installed after ``deps``."""
    own = settings.model_copy(
        update={"kpi": settings.kpi.model_copy(update={"key_prefix": f"test:{uuid.uuid4()}"})}
    )
    made = Deps(own, clock=lambda: UNTIL, metrics=Metrics())
    set_process_deps(made)
    yield made
    set_process_deps(None)
    made.close()


@pytest.fixture
def kpi_client(at_until: Deps) -> Any:
    kpi = functions_framework.create_app(target="kpi", source=str(SOURCE), signature_type="http")
    return kpi.test_client()


def test_metrics_are_computed_on_a_miss_then_served_from_the_cache(
    engine: Engine, history: None, kpi_client: Any
) -> None:
    first = kpi_client.get("/v1/ops/metrics?days=28")
    assert first.status_code == 200, first.data
    assert first.headers["X-Cache"] == "miss"
    assert first.headers["Content-Type"] == "application/json"
    assert first.headers["Cache-Control"].startswith("private, max-age=")
    assert json.loads(first.data) == report(engine).model_dump(mode="json")
    second = kpi_client.get("/v1/ops/metrics?days=28")
    assert (second.status_code, second.headers["X-Cache"]) == (200, "hit")
    assert second.data == first.data


def test_metrics_of_one_service_are_cached_apart(
    engine: Engine, history: None, kpi_client: Any
) -> None:
    answer = kpi_client.get("/v1/ops/metrics?service=sight-web&days=28")
    assert answer.status_code == 200
    assert answer.headers["X-Cache"] == "miss"
    assert json.loads(answer.data) == report(engine, "sight-web").model_dump(mode="json")


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("days=0", "invalid_days"),
        ("days=367", "invalid_days"),
        ("days=abc", "invalid_days"),
        ("days=%EF%BC%97", "invalid_days"),  # a full-width digit
        ("service=Sight_API", "invalid_service"),
        ("service=%3C!here%3E", "invalid_service"),
        ("failure_window_h=nan", "invalid_failure_window"),
        ("failure_window_h=0", "invalid_failure_window"),
    ],
)
def test_bad_parameters_are_400_with_the_one_error_body(
    kpi_client: Any, query: str, code: str
) -> None:
    answer = kpi_client.get(f"/v1/ops/metrics?{query}")
    assert answer.status_code == 400
    assert answer.headers["Cache-Control"] == "no-store"
    body = json.loads(answer.data)
    assert body["error"]["code"] == code
    assert set(body["error"]) == {"code", "message"}


# ---- the weekly digest ---------------------------------------------------------------------


@pytest.fixture
def refresh_client(at_until: Deps, ops_topic: OpsTopic) -> Any:
    at_until.settings = at_until.settings.model_copy(
        update={
            "topics": at_until.settings.topics.model_copy(update={"ops_events": ops_topic.name})
        }
    )
    kpi_refresh = functions_framework.create_app(
        target="kpi_refresh", source=str(SOURCE), signature_type="cloudevent"
    )
    return kpi_refresh.test_client()


def scheduled(data: bytes = b'{"days": 28}') -> dict[str, Any]:
    """Cloud Scheduler's message: fixed attributes, no id or time; published 'now' (Mar 1)."""
    return envelope(data, SCHEDULER, publish_time=UNTIL)


def digest_rows(engine: Engine) -> list[Any]:
    with engine.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT status, dedupe_key, detail FROM ops.actions WHERE kind = 'report'"
                    " AND dedupe_key LIKE 'report.weekly:2021-W09:%'"
                )
            ).all()
        )


def test_report_request_publishes_the_weekly_digest_once_and_refreshes_the_cache(
    engine: Engine,
    history: None,
    at_until: Deps,
    refresh_client: Any,
    ops_topic: OpsTopic,
    make_notify: NotifyFactory,
    sink: Any,
) -> None:
    assert push(refresh_client, "kpi-refresh", scheduled()).status_code == 200
    [(data, attributes)] = ops_topic.pull(wait_for=1)
    assert attributes["type"] == "sight.ops.report.weekly"
    assert attributes["source"] == "kpi_refresh"
    assert data["week"] == "2021-W09"
    assert data["report"] == report(engine).model_dump(mode="json")
    entry, _ = release_metrics_service(at_until).cache.peek(ReportQuery(days=28).key())
    assert entry is not None and json.loads(entry.payload) == data["report"]
    [row] = digest_rows(engine)
    assert row.detail["event_id"] == attributes["id"]
    assert row.detail["targets_failing"] == ["deployment_success_rate", "rollback_rate"]
    assert row.detail["noisy_policies"] == []

    # Scheduler's retry in the same week: recorded once, published once.
    assert push(refresh_client, "kpi-refresh", scheduled()).status_code == 200
    assert ops_topic.pull(wait_for=2, timeout_s=1.5) == [(data, attributes)]
    assert len(digest_rows(engine)) == 1

    # notify renders it (a past week's digest: notify told to accept old events).
    state, _ = sink
    notify, _ = make_notify(max_event_age_s=10 * 365 * 86400.0)
    message = envelope(json.dumps(data).encode(), attributes)
    assert push(notify, "ops-events", message).status_code == 200
    [posted] = state.messages(WEBHOOK_PATH)
    body = posted.body
    assert body["text"].startswith(
        ":bar_chart: Release metrics 2021-W09 (all services): 7 promoted"
    )
    assert "2 target(s) missed" in body["text"]
    shown = json.dumps(body["blocks"])
    assert "87.5 %" in shown and "28.6 %" in shown and "3m 30s" in shown
    assert "*sight-api*: 5 promoted (1.25/week, weekly)" in shown


def test_digest_escapes_service_names_from_the_ledger(
    make_notify: NotifyFactory, sink: Any, engine: Engine, history: None
) -> None:
    """Service names are ledger text (an incident's labels): never a mention or a link."""
    from shared.events import OpsEvent, WeeklyReleaseReport

    hostile = "<!channel> & <https://evil.example|click>"
    seeded = report(engine)
    services = [seeded.services[0].model_copy(update={"service": hostile})]
    event = OpsEvent.new(
        EventType.REPORT_WEEKLY,
        WeeklyReleaseReport(
            week="2021-W09", report=seeded.model_copy(update={"services": services})
        ),
        source="kpi_refresh",
    )
    data, attributes = event.to_pubsub()
    assert parse_ops_message(data, attributes) == event
    state, _ = sink
    notify, _ = make_notify()
    assert push(notify, "ops-events", envelope(data, attributes)).status_code == 200
    [posted] = state.messages(WEBHOOK_PATH)
    shown = json.dumps(posted.body)
    assert "&lt;!channel&gt; &amp; &lt;https://evil.example|click&gt;" in shown
    assert "<!channel>" not in shown and "<https://evil" not in shown
