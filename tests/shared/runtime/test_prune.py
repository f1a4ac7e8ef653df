"""Pruning ops.event_receipts and ops.rejected_events (docs/schema.md, "Pruning"), against
the real PostgreSQL: through kpi_refresh exactly as Cloud Scheduler triggers it in production,
and through the library for the floor and the batch bounds."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import functions_framework
import pytest
from sqlalchemy import text

from shared.housekeeping import (
    PRUNE_REQUESTED,
    max_event_age_s,
    prune,
    receipts_floor,
    receipts_retention,
    rejected_retention,
)
from shared.metrics import Metrics
from shared.runtime import (
    FROM_SETTINGS,
    Deps,
    EventHandler,
    pubsub_handler,
    set_process_deps,
)
from shared.settings import HousekeepingConfig, Settings
from tests.helpers import ROOT, envelope, push

KPI_SOURCE = ROOT / "functions" / "kpi" / "main.py"
SAMPLE_SOURCE = Path(__file__).parent / "sample_function" / "main.py"
# What terraform/scheduler.tf's prune job publishes: same data and attributes every run.
SCHEDULER_ATTRIBUTES = {"type": PRUNE_REQUESTED, "source": "cloud-scheduler"}
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)


@pytest.fixture(autouse=True)
def no_old_rows(deps: Deps) -> Iterator[None]:
    """Rows older than an hour are only ever this file's: each test starts without them."""
    yield
    with deps.engine.begin() as conn:
        for table in ("ops.event_receipts", "ops.rejected_events"):
            conn.execute(text(f"DELETE FROM {table} WHERE received_at < now() - interval '1 hour'"))


def with_housekeeping(settings: Settings, **config: Any) -> Settings:
    return settings.model_copy(
        update={
            "housekeeping": HousekeepingConfig(**{**settings.housekeeping.model_dump(), **config})
        }
    )


def add_receipts(deps: Deps, consumer: str, *ages: timedelta) -> list[str]:
    """One receipt per age, received that long ago; returns their event ids."""
    now = deps.clock()
    ids = [f"{consumer}-{i}" for i in range(len(ages))]
    with deps.engine.begin() as conn:
        for event_id, age in zip(ids, ages, strict=True):
            conn.execute(
                text(
                    "INSERT INTO ops.event_receipts (consumer, event_id, outcome, received_at)"
                    " VALUES (:c, :e, 'handled', :at)"
                ),
                {"c": consumer, "e": event_id, "at": now - age},
            )
    return ids


def add_rejected(deps: Deps, consumer: str, *ages: timedelta) -> None:
    now = deps.clock()
    with deps.engine.begin() as conn:
        for i, age in enumerate(ages):
            conn.execute(
                text(
                    "INSERT INTO ops.rejected_events (consumer, event_id, reason, payload,"
                    " received_at) VALUES (:c, :e, 'bad', '\\x00'::bytea, :at)"
                ),
                {"c": consumer, "e": f"{consumer}-{i}", "at": now - age},
            )


def receipts_left(deps: Deps, consumer: str) -> list[str]:
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id FROM ops.event_receipts WHERE consumer = :c ORDER BY event_id"),
            {"c": consumer},
        )
        return [r.event_id for r in rows]


def rejected_left(deps: Deps, consumer: str) -> list[str]:
    with deps.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT event_id FROM ops.rejected_events WHERE consumer = :c ORDER BY event_id"),
            {"c": consumer},
        )
        return [r.event_id for r in rows]


@pytest.fixture
def kpi_refresh(deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="kpi_refresh", source=str(KPI_SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


# --- the scheduled run, through the deployed function -------------------------------------


def test_scheduled_prune_deletes_receipts_and_rejected_events_past_retention_only(
    kpi_refresh: Any, deps: Deps, metrics: Metrics
) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    # Defaults: receipts 7 days (above the 25 h floor), rejected events 30 days.
    old_receipt, young_receipt = add_receipts(deps, consumer, 8 * DAY, 6 * DAY)
    add_rejected(deps, consumer, 31 * DAY, 29 * DAY)

    body = envelope(b"{}", SCHEDULER_ATTRIBUTES)
    assert push(kpi_refresh, "kpi-refresh", body).status_code == 200

    assert receipts_left(deps, consumer) == [young_receipt]
    assert rejected_left(deps, consumer) == [f"{consumer}-1"]
    assert metrics.counter("events", consumer="kpi_refresh", outcome="handled") == 1
    assert metrics.counter("pruned_rows", table="event_receipts") == 1
    assert metrics.counter("pruned_rows", table="rejected_events") == 1
    # The request is deduplicated on its Pub/Sub message id, like a KPI refresh.
    message_id = body["message"]["messageId"]
    assert receipts_left(deps, "kpi_refresh").count(f"prune:{message_id}") == 1
    assert old_receipt not in receipts_left(deps, consumer)


def test_a_dry_run_request_counts_and_deletes_nothing(kpi_refresh: Any, deps: Deps) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    add_receipts(deps, consumer, 8 * DAY)
    add_rejected(deps, consumer, 31 * DAY)
    body = envelope(b'{"dry_run": true}', SCHEDULER_ATTRIBUTES)
    assert push(kpi_refresh, "kpi-refresh", body).status_code == 200
    assert receipts_left(deps, consumer) == [f"{consumer}-0"]
    assert rejected_left(deps, consumer) == [f"{consumer}-0"]


def test_a_malformed_prune_request_is_rejected_not_retried(
    kpi_refresh: Any, deps: Deps, metrics: Metrics
) -> None:
    body = envelope(b'{"dry_run": "sometimes"}', SCHEDULER_ATTRIBUTES)
    assert push(kpi_refresh, "kpi-refresh", body).status_code == 200
    assert metrics.counter("events", consumer="kpi_refresh", outcome="rejected") == 1


# --- retention and its floor ----------------------------------------------------------------


def test_default_retentions_are_seven_days_for_receipts_and_thirty_for_rejected_events(
    settings: Settings,
) -> None:
    assert receipts_retention(settings) == 7 * DAY
    assert rejected_retention(settings) == 30 * DAY
    # migrate's 24 h is the largest maximum event age; the margin is an hour.
    assert receipts_floor(settings) == 25 * HOUR


def test_a_receipt_within_max_event_age_plus_margin_is_kept_even_if_retention_is_smaller(
    deps: Deps, settings: Settings
) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    # Misconfigured: one minute. The floor (24 h migrate + 1 h margin) must win.
    tight = with_housekeeping(settings, receipts_retention_s=60)
    within_floor, past_floor = add_receipts(deps, consumer, 24 * HOUR + HOUR / 2, 26 * HOUR)

    report = prune(deps.engine, tight, deps.clock())

    assert receipts_left(deps, consumer) == [within_floor]
    assert past_floor not in receipts_left(deps, consumer)
    assert report.receipts.retention_s == (25 * HOUR).total_seconds()


def test_the_floor_follows_the_largest_maximum_event_age_of_any_consumer(
    deps: Deps, settings: Settings
) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    slow_rollback = settings.model_copy(
        update={
            "rollback": settings.rollback.model_copy(update={"max_event_age_s": 48 * 3600.0}),
            "housekeeping": HousekeepingConfig(receipts_retention_s=60),
        }
    )
    assert max_event_age_s(slow_rollback) == 48 * 3600
    kept, pruned = add_receipts(deps, consumer, 30 * HOUR, 50 * HOUR)
    prune(deps.engine, slow_rollback, deps.clock())
    assert receipts_left(deps, consumer) == [kept]
    assert pruned not in receipts_left(deps, consumer)


def test_the_floor_covers_every_deployed_handlers_maximum_age(settings: Settings) -> None:
    """A handler with a longer max_age than the floor assumes could see a redelivery of an
    event whose receipt was pruned: it would run twice."""
    default = inspect.signature(pubsub_handler).parameters["max_age"].default
    assert default is FROM_SETTINGS  # the maximum age of a handler that names none: Settings'
    handlers = []
    for main in sorted((ROOT / "functions").glob("*/main.py")):
        spec = importlib.util.spec_from_file_location(f"prune_check_{main.parent.name}", main)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        handlers += [
            value.handler
            for value in vars(module).values()
            if isinstance(getattr(value, "handler", None), EventHandler)
        ]
    assert {h.consumer for h in handlers} >= {"migrate", "rollback", "notify", "kpi_refresh"}
    for handler in handlers:
        max_age = handler.max_age_for(settings)
        assert max_age is not None, f"{handler.consumer} has no maximum age"
        assert max_age.total_seconds() <= max_event_age_s(settings), handler.consumer


# --- bounded batches --------------------------------------------------------------------------


def test_deletion_runs_in_batches_of_at_most_batch_size_and_stops_at_max_batches(
    deps: Deps, settings: Settings
) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    small = with_housekeeping(settings, batch_size=2, max_batches=2)
    add_receipts(deps, consumer, *[(10 + i) * DAY for i in range(5)])

    first = prune(deps.engine, small, deps.clock())
    assert (first.receipts.rows, first.receipts.batches, first.receipts.complete) == (4, 2, False)
    # The oldest go first; the youngest of the five is left for the next run.
    assert receipts_left(deps, consumer) == [f"{consumer}-0"]

    second = prune(deps.engine, small, deps.clock())
    assert (second.receipts.rows, second.receipts.batches, second.receipts.complete) == (
        1,
        1,
        True,
    )
    assert receipts_left(deps, consumer) == []


def test_a_receipt_locked_by_a_live_transaction_is_skipped_not_waited_on(
    deps: Deps, settings: Settings
) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    locked, free = add_receipts(deps, consumer, 10 * DAY, 11 * DAY)
    # Without SKIP LOCKED this prune would wait on the row lock until lock_timeout (set
    # to 1 s here) and fail.
    strict = settings.model_copy(update={"db_lock_timeout_ms": 1000})
    other = Deps(strict)
    try:
        with deps.engine.begin() as holder:
            holder.execute(
                text(
                    "SELECT 1 FROM ops.event_receipts WHERE consumer = :c AND event_id = :e"
                    " FOR UPDATE"
                ),
                {"c": consumer, "e": locked},
            )
            report = prune(other.engine, strict, other.clock())
        assert report.receipts.rows == 1
        assert receipts_left(deps, consumer) == [locked]
        assert free not in receipts_left(deps, consumer)
    finally:
        other.close()


def test_dry_run_reports_what_would_go_and_deletes_nothing(deps: Deps, settings: Settings) -> None:
    consumer = "c-" + uuid.uuid4().hex[:8]
    add_receipts(deps, consumer, 8 * DAY, 9 * DAY, DAY)
    add_rejected(deps, consumer, 40 * DAY)
    report = prune(deps.engine, settings, deps.clock(), dry_run=True)
    assert (report.receipts.rows, report.rejected.rows) == (2, 1)
    assert report.summary().startswith("would delete 2 receipts")
    assert len(receipts_left(deps, consumer)) == 3
    assert len(rejected_left(deps, consumer)) == 1


# --- rejected payloads are capped -------------------------------------------------------------


@pytest.fixture
def sample(deps: Deps) -> Any:
    app = functions_framework.create_app(
        target="sample", source=str(SAMPLE_SOURCE), signature_type="cloudevent"
    )
    return app.test_client()


def stored_rejection(deps: Deps, message_id: str) -> Any:
    with deps.engine.connect() as conn:
        return conn.execute(
            text("SELECT reason, payload FROM ops.rejected_events WHERE event_id = :id"),
            {"id": message_id},
        ).one()


def test_a_huge_rejected_payload_is_stored_capped_with_its_size_and_hash(
    sample: Any, deps: Deps
) -> None:
    cap = deps.settings.housekeeping.rejected_payload_max_bytes
    assert cap == 256 * 1024
    payload = b"{not json " + b"0123456789abcdef" * (128 * 1024)  # 2 MiB + 10 bytes
    message_id = "huge-" + uuid.uuid4().hex
    assert (
        push(sample, "t", envelope(payload, {"type": "x"}, message_id=message_id)).status_code
        == 200
    )

    row = stored_rejection(deps, message_id)
    assert bytes(row.payload) == payload[:cap]
    assert row.reason.startswith("data is not JSON")
    assert f"first {cap} of {len(payload)} bytes kept" in row.reason
    assert hashlib.sha256(payload).hexdigest() in row.reason


def test_a_rejected_payload_within_the_cap_is_kept_whole_with_its_reason_unchanged(
    sample: Any, deps: Deps
) -> None:
    message_id = "small-" + uuid.uuid4().hex
    push(sample, "t", envelope(b"{not json", {"type": "x"}, message_id=message_id))
    row = stored_rejection(deps, message_id)
    assert bytes(row.payload) == b"{not json"
    assert "capped" not in row.reason


def test_the_cap_is_configurable(sample: Any, deps: Deps, settings: Settings) -> None:
    small = Deps(with_housekeeping(settings, rejected_payload_max_bytes=1024), metrics=Metrics())
    set_process_deps(small)
    try:
        message_id = "cap-" + uuid.uuid4().hex
        push(sample, "t", envelope(b"x" * 5000, {"type": "x"}, message_id=message_id))
        row = stored_rejection(deps, message_id)
        assert bytes(row.payload) == b"x" * 1024
        assert "first 1024 of 5000 bytes kept" in row.reason
    finally:
        set_process_deps(deps)
        small.close()
