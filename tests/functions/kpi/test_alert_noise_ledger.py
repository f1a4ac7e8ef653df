"""Alert noise on a seeded ledger with hand-computed answers (docs/metrics.md, "Alert
noise"), through every place it is shown: the report, `sightops report` (table and JSON),
and the weekly digest notify posts to the Slack stand-in.

The rows are written by the writers production uses: rollback's ledger
(``record_incident`` from a parsed Cloud Monitoring notification, ``record_release``), the
rollback store's recorder for decisions and an operator's mark, and the one writer of
``ops.actions`` for a canary decision. October-November 2019 (no other test writes
there); the window is Oct 20 - Nov 18, so October counts whole (from Oct 1) and
November so far.

sight-api 5xx error rate (service sight-api), October:
  a1 Oct 2  10:00-10:05   likely false (before the window, in its month)
  a2 Oct 8  10:00-10:05   likely false
  a3 Oct 21 10:00-10:15   likely false (exactly 15 min)
  a4 Oct 22 10:00-10:15:01 too long
  a5 Oct 23 10:00-10:10   rollback moved traffic 10:04: acted
  a6 Oct 24 10:00-10:10   only a dry-run rollback 10:04: likely false
  a7 Oct 25 10:00-10:10   a rollback on sight-web 10:04, not on sight-api: likely false
  a8 Oct 26 10:00-10:10   an operator marked a revision bad 10:06: acted
  a9 Oct 27 10:00-10:10   the canary stepped 10:03: acted
  a10 Oct 28 10:00-10:10  a release was promoted 10:02: acted
  a11 Oct 29 10:00-10:10  rollback skipped 10:01 (nothing to do): likely false
  a12 Oct 30 10:00        still open
  -> 12 incidents, 6 likely false: over the target of 5
  outside: Sep 30 23:58-Oct 1 00:03 (started before October), Nov 18 00:00 (the window's end)
sight-api 5xx error rate, November: a13 Nov 3 10:00-10:05 likely false -> 1 of 1
sight-web <p95> & latency (service sight-web; a name with mrkdwn in it):
  w1 Oct 20 09:00-09:05 likely false -> October 1 of 1
  w2 Nov 10 10:00-10:30 too long     -> November 0 of 1
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from shared.db import create_db_engine
from shared.events import (
    EventType,
    IncidentNotification,
    OpsEvent,
    ReleaseReport,
    ReleaseResult,
    WeeklyReleaseReport,
    parse_incident_body,
)
from shared.kpi.release_report import compute_release_report
from shared.metrics import Metrics
from shared.release import release_id
from shared.rollback._ledger import record_incident, record_release
from shared.rollback._store import action_recorder
from shared.runtime import Context, Deps, PubsubMessage, set_process_deps, write_action
from shared.settings import Settings
from sightops.cli import app
from tests.functions.notify.conftest import WEBHOOK_PATH, NotifyFactory, make_notify, sink
from tests.helpers import GOLDEN, envelope, push

__all__ = ["make_notify", "sink"]

SINCE = datetime(2019, 10, 20, tzinfo=UTC)
UNTIL = datetime(2019, 11, 18, tzinfo=UTC)
API, WEB = "sight-api", "sight-web"
API_POLICY = "sight-api 5xx error rate"
WEB_POLICY = "sight-web <p95> & latency"
SENTINEL = "incident:0.noise-a1:open"


def t(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2019, month, day, hour, minute, second, tzinfo=UTC)


def notification(
    incident_id: str, policy: str, service: str, start: datetime, end: datetime | None
) -> IncidentNotification:
    """Cloud Monitoring's 1.2 body for one state of an incident, parsed as rollback does."""
    body = json.loads((GOLDEN / "monitoring" / "incident_1_2_closed.json").read_text())
    incident = body["incident"]
    incident.update(
        incident_id=incident_id,
        policy_name=policy,
        started_at=int(start.timestamp()),
        ended_at=int(end.timestamp()) if end else None,
        state="closed" if end else "open",
        policy_user_labels={"service": service},
    )
    incident["resource"]["labels"]["service_name"] = service
    return parse_incident_body(json.dumps(body).encode())


class Ledger:
    """Writes one seeded fact at a time, each in a transaction of its own."""

    def __init__(self, engine: Engine, deps: Deps) -> None:
        self.engine, self.deps = engine, deps

    def _context(self, conn: Any, when: datetime) -> Context:
        message = PubsubMessage(b"{}", {}, str(uuid.uuid4().int)[:16], when)
        return Context("rollback", self.deps, message, conn)

    def incident(
        self, incident_id: str, policy: str, service: str, start: datetime, end: datetime | None
    ) -> None:
        states = [(start, None)] + ([(end, end)] if end else [])
        for when, ended in states:
            with self.engine.begin() as conn:
                written = record_incident(
                    self._context(conn, when),
                    notification(f"0.noise-{incident_id}", policy, service, start, ended),
                )
                assert written

    def decision(self, kind: str, status: str, service: str, when: datetime, **more: Any) -> None:
        """A rollback decision or an operator's mark, as the rollback store records them."""
        actor = more.pop("actor", "automation")
        detail = {"from": f"{service}-00002-bbb", "to": f"{service}-00001-aaa", **more}
        with self.engine.begin() as conn:
            record = action_recorder(conn, str(uuid.uuid4()), lambda: when)
            assert record(kind, status, service=service, actor=actor, detail=detail)

    def canary(self, service: str, when: datetime) -> None:
        with self.engine.begin() as conn:
            write_action(
                conn,
                kind="canary",
                status="step",
                now=when,
                service=service,
                detail={"percent_before": 5, "percent_after": 25, "reason": "healthy"},
            )

    def promoted(self, service: str, when: datetime) -> None:
        commit = f"{7:040x}"
        result = ReleaseResult(
            service=service,
            region="europe-west1",
            commit_sha=commit,
            release_id=release_id(service, commit),
            build_id="b-noise-7",
            revision=f"{service}-00007-ggg",
            started_at=when - timedelta(minutes=10),
            finished_at=when,
        )
        event = OpsEvent.new(EventType.RELEASE_PROMOTED, result, source="sightops-cli")
        with self.engine.begin() as conn:
            assert record_release(self._context(conn, when), event) == "promoted"


@pytest.fixture(scope="module")
def engine(settings: Settings) -> Iterator[Engine]:
    made = create_db_engine(settings, pool_size=2, max_overflow=0)
    yield made
    made.dispose()


@pytest.fixture(scope="module")
def history(engine: Engine, settings: Settings) -> None:
    """Written once per session database (the incidents' dedupe keys would refuse a copy)."""
    with engine.connect() as conn:
        if conn.execute(
            text("SELECT count(*) FROM ops.actions WHERE dedupe_key = :k"), {"k": SENTINEL}
        ).scalar_one():
            return
    ledger = Ledger(engine, Deps(settings, engine=engine, metrics=Metrics()))
    five = timedelta(minutes=5)
    ten = timedelta(minutes=10)
    for n, day in ((1, 2), (2, 8)):
        ledger.incident(f"a{n}", API_POLICY, API, t(10, day, 10), t(10, day, 10) + five)
    ledger.incident("a3", API_POLICY, API, t(10, 21, 10), t(10, 21, 10, 15))
    ledger.incident("a4", API_POLICY, API, t(10, 22, 10), t(10, 22, 10, 15, 1))
    for n, day in enumerate(range(23, 30), start=5):
        ledger.incident(f"a{n}", API_POLICY, API, t(10, day, 10), t(10, day, 10) + ten)
    ledger.decision("rollback", "succeeded", API, t(10, 23, 10, 4), dry_run=False)
    ledger.decision("rollback", "succeeded", API, t(10, 24, 10, 4), dry_run=True)
    ledger.decision("rollback", "succeeded", WEB, t(10, 25, 10, 4), dry_run=False)
    ledger.decision("health", "bad", API, t(10, 26, 10, 6), actor="manual:alice")
    ledger.canary(API, t(10, 27, 10, 3))
    ledger.promoted(API, t(10, 28, 10, 2))
    ledger.decision("rollback", "skipped", API, t(10, 29, 10, 1), dry_run=False)
    ledger.incident("a12", API_POLICY, API, t(10, 30, 10), None)
    ledger.incident("a0", API_POLICY, API, t(9, 30, 23, 58), t(10, 1, 0, 3))
    ledger.incident("a14", API_POLICY, API, UNTIL, UNTIL + five)
    ledger.incident("a13", API_POLICY, API, t(11, 3, 10), t(11, 3, 10) + five)
    ledger.incident("w1", WEB_POLICY, WEB, t(10, 20, 9), t(10, 20, 9) + five)
    ledger.incident("w2", WEB_POLICY, WEB, t(11, 10, 10), t(11, 10, 10, 30))
    # The sentinel is the first incident's open row: written last, so a failed seeding
    # is redone rather than taken for done.
    ledger.incident("a1", API_POLICY, API, t(10, 2, 10), t(10, 2, 10) + five)


def report(engine: Engine, service: str | None = None) -> ReleaseReport:
    return compute_release_report(engine, since=SINCE, until=UNTIL, now=UNTIL, service=service)


EXPECTED = [
    # (month, policy, incidents, likely false, month complete, over target)
    ("2019-10", API_POLICY, 12, 6, True, True),
    ("2019-10", WEB_POLICY, 1, 1, True, False),
    ("2019-11", API_POLICY, 1, 1, False, False),
    ("2019-11", WEB_POLICY, 1, 0, False, False),
]


def test_seeded_ledger_gives_the_hand_computed_noise(engine: Engine, history: None) -> None:
    noise = report(engine).alert_noise
    assert noise is not None
    assert noise.counted_from == datetime(2019, 10, 1, tzinfo=UTC)
    assert (noise.close_within_s, noise.max_per_month) == (900.0, 5)
    assert [
        (
            p.month,
            p.policy,
            p.incidents,
            p.likely_false_positives,
            p.month_complete,
            p.over_target,
        )
        for p in noise.policies
    ] == EXPECTED
    assert [(p.policy, p.month) for p in noise.flagged] == [(API_POLICY, "2019-10")]

    # One service's report counts its own incidents (and actions) only.
    web = report(engine, WEB).alert_noise
    assert web is not None
    assert [(p.month, p.likely_false_positives) for p in web.policies] == [
        ("2019-10", 1),
        ("2019-11", 0),
    ]


@pytest.fixture
def cli_deps(settings: Settings) -> Iterator[None]:
    set_process_deps(Deps(settings, metrics=Metrics()))
    yield
    set_process_deps(None)


def test_cli_table_flags_the_policy_over_the_target(history: None, cli_deps: None) -> None:
    window = ["--since", "2019-10-20", "--until", "2019-11-18"]
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["report", *window])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.stdout.splitlines() if API_POLICY in line]
    assert len(rows) == 2
    assert "2019-10" in rows[0] and " 12 " in rows[0] and " 6 " in rows[0]
    assert "over target" in rows[0]
    assert "2019-11 (so far)" in rows[1] and "ok" in rows[1]
    assert WEB_POLICY in result.stdout  # rich markup escaped: shown as written

    as_json = CliRunner().invoke(app, ["report", *window, "--json"])
    noise = json.loads(as_json.stdout)["alert_noise"]
    assert [p["likely_false_positives"] for p in noise["policies"]] == [6, 1, 1, 0]


def test_weekly_digest_shows_the_noise_and_flags_the_policy(
    engine: Engine, history: None, make_notify: NotifyFactory, sink: Any
) -> None:
    """Through notify's entry point into the Slack stand-in; policy names are escaped."""
    event = OpsEvent.new(
        EventType.REPORT_WEEKLY,
        WeeklyReleaseReport(week="2019-W47", report=report(engine)),
        source="kpi_refresh",
    )
    data, attributes = event.to_pubsub()
    state, _ = sink
    notify, _ = make_notify()
    assert push(notify, "ops-events", envelope(data, attributes)).status_code == 200
    [posted] = state.messages(WEBHOOK_PATH)
    assert "1 alert policy(ies) over the noise target" in posted.body["text"]
    shown = json.dumps(posted.body["blocks"])
    assert f":x: *{API_POLICY}* 2019-10: 6 likely false of 12 incident(s)" in shown
    assert f":white_check_mark: *{API_POLICY}* 2019-11 (so far): 1 likely false of 1" in shown
    assert "sight-web &lt;p95&gt; &amp; latency* 2019-10" in shown
    assert "<p95>" not in shown
