"""The fuzz proof: every entry point, thousands of payloads grown from the golden fixtures,
against the real services (docs/reliability.md, "Fuzz").

Per delivery:

- never 500, and no ERROR log carrying a traceback (an exception nobody expected: Flask's
  "Exception on /", the runtime's "parser crashed" / "envelope crashed" / unknown retry);
- permanent input (the envelope does not parse, or the function's own parser refuses the
  message) is never answered 5xx; other input only with the runtime's WARNING ``retry``
  (a known transient failure);
- every Pub/Sub delivery answered 2xx with outcome ``rejected`` added exactly one row to
  ``ops.rejected_events`` (its payload and event id when the envelope was readable), and
  no other outcome added one; exactly one runtime log line per delivery;
- a real delivery (what Pub/Sub or Eventarc send: a well-formed envelope with a
  messageId, JSON) reaches the runtime: never refused 4xx by the framework.

Violations are collected over the whole run (no shrinking: the services are real), one
reproduction per distinct kind, and the test fails listing them all.

``FUZZ_EXAMPLES`` examples per entry point: 60 in ``make test``, 2000 in ``make proof``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from shared.events import parse_build_message
from shared.kpi.refresh import parse_refresh_request
from shared.notify import parse_notify_message
from shared.rollback import parse as parse_rollback_message
from shared.runtime import storable_text
from tests.proof.conftest import (
    INTAKE_PASSWORD,
    INTAKE_USER,
    TALLIES,
    Records,
    Tally,
    World,
    examples,
    excerpt,
    outcome_of,
    tracebacks,
    write_reproduction,
)
from tests.proof.strategies import (
    Delivery,
    basic,
    flush_requests,
    intake_requests,
    kpi_requests,
    pubsub_deliveries,
)

N = examples()
pytestmark = [pytest.mark.proof, pytest.mark.timeout(max(300, N * 3))]

PARSERS: dict[str, Callable[[bytes, Any], Any]] = {
    "migrate": parse_build_message,
    "rollback": parse_rollback_message,
    "notify": parse_notify_message,
    "kpi_refresh": parse_refresh_request,
}


def fuzz_settings() -> settings:
    return settings(
        max_examples=N,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: violations are collected
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )


class Violations:
    """Distinct violations (by kind), each with its smallest reproduction."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: dict[str, tuple[int, str]] = {}
        self.count = 0

    def add(self, kind: str, delivery: Delivery, detail: str) -> None:
        self.count += 1
        size = len(delivery.body) + len(delivery.path)
        if kind not in self.seen or size < self.seen[kind][0]:
            self.seen[kind] = (size, f"{kind}\n  request: {delivery.describe()}\n  {detail}")

    def check(self) -> None:
        if not self.seen:
            write_reproduction(self.name, "")  # no stale reproductions of an earlier run
            return
        report = "\n\n".join(text for _, text in self.seen.values())
        path = write_reproduction(self.name, report)
        pytest.fail(
            f"{self.name}: {self.count} violating deliveries, {len(self.seen)} distinct"
            f" (all in {path}):\n\n{report}",
            pytrace=False,
        )


def send(client: Any, d: Delivery) -> Any:
    return client.open(d.path, method=d.method, data=d.body, headers=d.headers)


def _where(r: logging.LogRecord) -> str:
    """The innermost frame of a record's exception: ``file.py:function``."""
    if r.exc_info and r.exc_info[2] is not None:
        frame = traceback.extract_tb(r.exc_info[2])[-1]
        return f"{Path(frame.filename).name}:{frame.name}"
    frames = re.findall(r'File "([^"]+)", line \d+, in (\S+)', str(r.__dict__.get("traceback")))
    return f"{Path(frames[-1][0]).name}:{frames[-1][1]}" if frames else "?"


def _log_kind(r: logging.LogRecord) -> str:
    """A violation kind from a traceback record: logger, exception type and where."""
    error = r.__dict__.get("error") or (r.exc_info[0].__name__ if r.exc_info else "?")
    message = r.getMessage()
    what = "crashed" if "crashed" in message else "exception"
    return f"ERROR traceback from {r.name} ({what}: {error} at {_where(r)})"


def _cause(logs: list[logging.LogRecord]) -> str:
    """What a 5xx came from: the exception of the worst traceback record, if any."""
    bad = tracebacks(logs)
    if not bad:
        return ""
    r = bad[-1]
    error = r.__dict__.get("error") or (r.exc_info[0].__name__ if r.exc_info else "?")
    return f" ({error} at {_where(r)})"


def judge_http(
    name: str, world: World, records: Records, violations: Violations, tally: Tally, d: Delivery
) -> int:
    records.take()
    response = send(world.client, d)
    status = response.status_code
    logs = records.take()
    tally.examples += 1
    tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
    tally.status_5xx += status >= 500
    tally.status_500 += status == 500
    tally.error_logs += sum(r.levelno >= logging.ERROR for r in logs)
    bad = tracebacks(logs)
    tally.tracebacks += len(bad)
    detail = f"status {status}; body {response.data[:200]!r}"
    for r in bad:
        violations.add(_log_kind(r), d, f"{detail}\n  log: {excerpt(r)}")
    if status >= 500:
        violations.add(f"answered {status}{_cause(logs)}", d, detail + _first_log(logs))
    if bad or status >= 500:
        tally.failures += 1
    return status


def _first_log(logs: list[logging.LogRecord]) -> str:
    worst = max(logs, key=lambda r: r.levelno, default=None)
    return f"\n  log: {excerpt(worst)}" if worst is not None else ""


def capped(world: World, stored: bytes, sent: bytes, reason: str) -> bool:
    """A payload over the configured cap is kept as its head, the reason naming the
    sha256 of the whole (docs/architecture.md)."""
    housekeeping = getattr(world.deps.settings, "housekeeping", None)
    cap = getattr(housekeeping, "rejected_payload_max_bytes", None)
    return (
        cap is not None
        and len(sent) > cap
        and stored == sent[:cap]
        and hashlib.sha256(sent).hexdigest() in reason
    )


def run_pubsub(consumer: str, form: str, world: World, records: Records) -> None:
    name = f"{consumer} ({form})"
    tally = TALLIES.setdefault(name, Tally())
    violations = Violations(f"{consumer}-{form}")
    parse = PARSERS[consumer]

    @fuzz_settings()
    @given(pubsub_deliveries(consumer, form))
    def one(d: Delivery) -> None:
        permanent = not d.envelope_ok
        if d.envelope_ok:
            try:
                parse(d.data or b"", d.attributes or {})
            except Exception:
                permanent = True
        before = world.rejected_rows(consumer)
        records.take()
        response = send(world.client, d)
        status = response.status_code
        logs = records.take()
        after = world.rejected_rows(consumer)
        outcomes = outcome_of(logs)

        tally.examples += 1
        tally.statuses[str(status)] = tally.statuses.get(str(status), 0) + 1
        tally.status_5xx += status >= 500
        tally.status_500 += status == 500
        tally.error_logs += sum(r.levelno >= logging.ERROR for r in logs)
        bad = tracebacks(logs)
        tally.tracebacks += len(bad)
        failed_before = violations.count

        detail = f"status {status}; outcomes {outcomes}; permanent {permanent}"
        if status == 503:
            for r in logs:
                if r.name == "sightops.runtime":
                    why = str(r.__dict__.get("reason"))
                    why = re.sub(r"[0-9a-f-]{16,}|\d+(\.\d+)?s\b", "…", why)[:80]
                    tally.retries[why] = tally.retries.get(why, 0) + 1
        for r in bad:
            violations.add(_log_kind(r), d, f"{detail}\n  log: {excerpt(r)}")
        if status == 500:
            violations.add(f"answered 500{_cause(logs)}", d, detail + _first_log(logs))
        elif status >= 500 and permanent:
            violations.add(f"permanent input answered {status}", d, detail + _first_log(logs))
        elif status >= 500 and outcomes != ["retry"]:
            violations.add(f"answered {status} without a retry log", d, detail + _first_log(logs))
        elif status >= 500 and any(
            r.levelno >= logging.ERROR for r in logs if r.name == "sightops.runtime"
        ):
            violations.add(f"answered {status}: unknown error", d, detail + _first_log(logs))
        if 400 <= status < 500 and d.carries_message:
            violations.add(
                f"a real delivery refused {status} by the framework (message not kept)",
                d,
                detail + f"; body {response.data[:300]!r}",
            )
        if 200 <= status < 300 and len(outcomes) != 1:
            violations.add("not exactly one runtime log line", d, detail + _first_log(logs))
        rejected = 200 <= status < 300 and "rejected" in outcomes
        if rejected:
            tally.rejected += 1
            if after - before == 1:
                tally.rejected_kept += 1
            else:
                violations.add("rejected but not kept", d, f"{detail}; rows +{after - before}")
            if after - before == 1 and d.envelope_ok:
                row = world.last_rejected(consumer)
                assert row is not None
                stored, sent = bytes(row["payload"]), d.data or b""
                if stored != sent and not capped(world, stored, sent, row["reason"]):
                    at = next(
                        (i for i, (a, b) in enumerate(zip(stored, d.data or b"")) if a != b),
                        min(len(stored), len(d.data or b"")),
                    )
                    violations.add(
                        "rejected payload differs from the message data",
                        d,
                        f"{detail}; stored {len(stored)} bytes, sent {len(d.data or b'')},"
                        f" first difference at {at}: stored {stored[at : at + 40]!r},"
                        f" sent {(d.data or b'')[at : at + 40]!r}",
                    )
                expected_id = storable_text((d.attributes or {}).get("id") or d.message_id or "")
                if row["event_id"] != expected_id:
                    violations.add(
                        "rejected event id differs",
                        d,
                        f"{detail}; stored {row['event_id']!r}, expected {expected_id!r}",
                    )
        elif after != before:
            violations.add(
                "rows added to ops.rejected_events without a rejected outcome",
                d,
                f"{detail}; rows +{after - before}",
            )
        if violations.count > failed_before:
            tally.failures += 1

    one()
    violations.check()


FORMS = ["push", "cloudevent"]


@pytest.mark.parametrize("form", FORMS)
def test_migrate(form: str, migrate_world: World, records: Records) -> None:
    run_pubsub("migrate", form, migrate_world, records)


@pytest.mark.parametrize("form", FORMS)
def test_rollback(form: str, rollback_world: World, records: Records) -> None:
    run_pubsub("rollback", form, rollback_world, records)


@pytest.mark.parametrize("form", FORMS)
def test_notify(form: str, notify_world: World, records: Records) -> None:
    run_pubsub("notify", form, notify_world, records)


@pytest.mark.parametrize("form", FORMS)
def test_kpi_refresh(form: str, kpi_refresh_world: World, records: Records) -> None:
    run_pubsub("kpi_refresh", form, kpi_refresh_world, records)


def run_http(
    name: str, world: World, records: Records, strategy: st.SearchStrategy[Delivery]
) -> None:
    tally = TALLIES.setdefault(name, Tally())
    violations = Violations(name)

    @fuzz_settings()
    @given(strategy)
    def one(d: Delivery) -> None:
        judge_http(name, world, records, violations, tally, d)

    one()
    violations.check()


def test_alert_intake(intake_world: World, records: Records) -> None:
    run_http(
        "alert_intake", intake_world, records, intake_requests(basic(INTAKE_USER, INTAKE_PASSWORD))
    )


def test_kpi(kpi_world: World, records: Records) -> None:
    run_http("kpi", kpi_world, records, kpi_requests(kpi_world.extra["known"]))


def test_notify_flush(notify_flush_world: World, records: Records) -> None:
    run_http("notify_flush", notify_flush_world, records, flush_requests())
