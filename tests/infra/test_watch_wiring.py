"""sight-ops watching itself and Sight's guardrails (issue 17; terraform/watch.tf,
terraform/guardrails.tf, docs/observability.md): every policy's signal is the one the code
emits or the resource it names, every threshold is the seed's, and every policy has a
runbook in docs/observability.md."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import typing
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.events import EventType
from tests.helpers import GOLDEN, envelope
from tests.infra.filters import log_entry, log_filter_matches
from tests.infra.hcl import ROOT, first, load, references

TF = load()
FUNCS: dict[str, dict[str, Any]] = TF.locals["functions"]
POLICIES = TF.of_type("google_monitoring_alert_policy")
METRICS = TF.of_type("google_logging_metric")
OWN = ("dead_letter_backlog", "rejected_messages", "function_errors", "function_execution_time")
OWN += ("push_backlog_age", "decision_overdue")
GUARDRAILS = ("redis_memory", "cloudsql_disk", "db_connections_70")


def _threshold(name: str, index: int = 0) -> dict[str, Any]:
    conditions = POLICIES[name]["conditions"]
    return dict(first(conditions[index]["condition_threshold"]))


def _subscriptions() -> list[str]:
    return sorted(
        f"{fn}--{t}" for fn, f in FUNCS.items() if f["trigger"] == "pubsub" for t in f["topics"]
    )


def _seconds(duration: str) -> int:
    assert duration.endswith("s"), duration
    return int(duration[:-1])


def _local(expression: str) -> Any:
    """The value of ``${local.name}``."""
    m = re.fullmatch(r"\$\{local\.(\w+)\}", expression)
    assert m, expression
    return TF.locals[m.group(1)]


def _log_filter(metric: str) -> str:
    return str(METRICS[metric]["filter"]).replace(
        "${local.function_log_filter}", TF.locals["function_log_filter"]
    )


# --- coverage -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", OWN + GUARDRAILS)
def test_each_watch_and_guardrail_policy_pages_through_notify_and_never_rolls_back(
    name: str,
) -> None:
    body = POLICIES[name]
    assert body["notification_channels"] == "${local.alert_channels}"
    assert "auto_rollback" not in body["user_labels"]
    assert first(body["alert_strategy"])["notification_prompts"] == ["OPENED", "CLOSED"]
    assert (
        "Runbook: ${local.runbook_base_url}/docs/runbooks/"
        in first(body["documentation"])["content"]
    )


def test_observability_doc_lists_every_policy_with_its_runbook() -> None:
    doc = (ROOT / "docs" / "observability.md").read_text()
    for name, body in POLICIES.items():
        assert f"`{name}`" in doc, f"docs/observability.md does not list policy {name}"
        runbook = body["user_labels"]["runbook"]
        assert f"(runbooks/{runbook}.md)" in doc, f"{name}: runbook {runbook} not linked"
    for name in ("monthly", "default"):
        assert f"`{name}`" in doc


# --- Pub/Sub ------------------------------------------------------------------------------


def test_dead_letter_alert_watches_every_hold_subscription_and_no_other() -> None:
    from sightops.topology import dead_letter_hold

    condition = _threshold("dead_letter_backlog")
    assert "pubsub.googleapis.com/subscription/num_undelivered_messages" in condition["filter"]
    assert "${local.dead_letter_holds_filter}" in condition["filter"]
    holds = TF.locals["dead_letter_holds_filter"]
    assert "for s in sort(keys(local.subscriptions))" in holds
    assert "${s}--dead-letter" in holds
    hold = TF.resource("google_pubsub_subscription", "dead_letter_hold")
    assert hold["name"] == "${each.key}--dead-letter"
    assert hold["for_each"] == "${local.subscriptions}"
    for key in _subscriptions():
        fn, topic = key.split("--")
        assert dead_letter_hold(fn, topic) == f"{key}--dead-letter"
    assert condition["threshold_value"] == 0 and condition["comparison"] == "COMPARISON_GT"
    assert first(condition["aggregations"])["group_by_fields"] == ["resource.label.subscription_id"]


def test_backlog_age_alert_fires_before_rollback_or_the_canary_drop_an_event_as_stale() -> None:
    """Past its maximum age an event is dropped unhandled: the oldest-unacked alert must
    open (threshold, then its duration) while the decision makers can still act."""
    from shared.event_ages import MAX_EVENT_AGE_S
    from shared.settings import Settings

    condition = _threshold("push_backlog_age")
    assert "pubsub.googleapis.com/subscription/oldest_unacked_message_age" in condition["filter"]
    assert "${local.push_subscriptions_filter}" in condition["filter"]
    assert "keys(local.subscriptions)" in TF.locals["push_subscriptions_filter"]
    assert TF.resource("google_pubsub_subscription", "push")["name"] == "${each.key}"
    opens_after = _local(condition["threshold_value"]) + _seconds(condition["duration"])
    settings = Settings()
    for consumer in ("rollback", "canary"):
        assert opens_after <= MAX_EVENT_AGE_S[consumer](settings), consumer
    assert first(condition["aggregations"])["group_by_fields"] == ["resource.label.subscription_id"]


# --- the functions ------------------------------------------------------------------------


def test_function_alerts_cover_every_function_by_its_cloud_run_service() -> None:
    """A gen2 function runs as the Cloud Run service of its name: the policies select the
    services named like google_cloudfunctions2_function.fn."""
    function = TF.resource("google_cloudfunctions2_function", "fn")
    assert function["name"] == 'sightops-${replace(each.key, "_", "-")}'
    assert 'fn => "sightops-${replace(fn, "_", "-")}"' in TF.locals["function_service_names"]
    assert (
        TF.locals["own_services_filter"] == 'resource.label.service_name = starts_with("sightops-")'
    )
    errors = _threshold("function_errors")
    assert "${local.own_services_filter}" in errors["filter"]
    assert "${local.own_services_filter}" in errors["denominator_filter"]
    assert 'response_code_class = "5xx"' in errors["filter"]
    assert "5xx" not in errors["denominator_filter"]
    assert 0 < _local(errors["threshold_value"]) < 1

    timing = POLICIES["function_execution_time"]
    assert timing["for_each"] == "${local.functions}"
    condition = _threshold("function_execution_time")
    assert "run.googleapis.com/request_latencies" in condition["filter"]
    assert "local.function_service_names[each.key]" in condition["filter"]
    assert condition["threshold_value"] == (
        "${each.value.timeout_seconds * 10 * local.execution_time_pct}"  # ms
    )
    assert 50 <= TF.locals["execution_time_pct"] < 100


# --- log-based metrics on the runtime's own outcome lines ---------------------------------


def _handler(function: str) -> Any:
    spec = importlib.util.spec_from_file_location(
        f"_watch_{function}", ROOT / "functions" / function / "main.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, function).handler


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def runtime_lines() -> Iterator[_Lines]:
    lines = _Lines()
    runtime = logging.getLogger("sightops.runtime")
    level = runtime.level
    runtime.addHandler(lines)
    runtime.setLevel(logging.INFO)
    yield lines
    runtime.removeHandler(lines)
    runtime.setLevel(level)


def _stale_line(function: str, lines: _Lines) -> dict[str, Any]:
    """The entry Cloud Logging stores for ``function``'s outcome line on a smoke failure
    published long ago: the real handler, parser and formatter, no database needed."""
    from shared.log import JsonFormatter
    from shared.runtime import Deps, message_from_envelope
    from shared.settings import Settings

    golden = json.loads((GOLDEN / "ops" / "smoke_failed.json").read_text())
    message = message_from_envelope(
        envelope(golden["data"], golden["attributes"], publish_time=datetime.now(UTC))
    )
    outcome = _handler(function).handle_message(message, Deps(Settings()))
    assert outcome == "stale"
    line = JsonFormatter().format(lines.records[-1])
    return log_entry(line, service_name=f"sightops-{function}")


def test_overdue_metric_counts_rollbacks_real_stale_line_and_nothing_else(
    runtime_lines: _Lines,
) -> None:
    rollback = _stale_line("rollback", runtime_lines)
    assert rollback["labels"]["outcome"] == "stale"
    assert log_filter_matches(_log_filter("decision_overdue"), rollback)
    assert not log_filter_matches(_log_filter("rejected_messages"), rollback)
    assert not log_filter_matches(_log_filter("canary_ticks"), rollback)
    for metric in ("decision_overdue", "rejected_messages"):
        for label in METRICS[metric]["label_extractors"]:
            assert label in rollback["labels"], f"{metric}: no label {label} on the line"
    # notify dropping the same stale event decides nothing: not counted.
    notify = _stale_line("notify", runtime_lines)
    assert not log_filter_matches(_log_filter("decision_overdue"), notify)


def test_log_metrics_select_outcomes_and_types_the_runtime_writes() -> None:
    from shared.runtime._handler import OutcomeStatus

    outcomes = set(typing.get_args(OutcomeStatus))
    for name, metric in METRICS.items():
        expression = _log_filter(name)
        for value in re.findall(r'labels\.outcome=\(?("[^)]*")\)?', expression):
            assert set(re.findall(r'"([^"]*)"', value)) <= outcomes, name
        for value in re.findall(r'labels\.event_type="([^"]*)"', expression):
            assert value in {t.value for t in EventType}, name
        assert metric["metric_descriptor"][0]["metric_kind"] == "DELTA"
    assert 'labels.outcome="rejected"' in _log_filter("rejected_messages")
    assert f'labels.event_type="{EventType.CANARY_TICK.value}"' in _log_filter("canary_ticks")


@pytest.mark.parametrize(
    ("policy", "metric"),
    [("rejected_messages", "rejected_messages"), ("decision_overdue", "decision_overdue")],
)
def test_log_metric_policies_read_their_metric_and_close_on_silence(
    policy: str, metric: str
) -> None:
    condition = _threshold(policy)
    assert references(condition["filter"]) == {("google_logging_metric", metric)}
    assert "logging.googleapis.com/user/" in condition["filter"]
    assert condition["evaluation_missing_data"] == "EVALUATION_MISSING_DATA_INACTIVE"
    assert condition["threshold_value"] == 0


def test_canary_ticks_are_watched_for_absence_only_while_canaries_run() -> None:
    [dynamic] = POLICIES["decision_overdue"]["dynamic"]
    block = dynamic["conditions"]
    assert block["for_each"].startswith("${length(var.canary_services) > 0 ?")
    assert TF.resource("google_cloud_scheduler_job", "canary_tick")["count"].startswith(
        "${length(var.canary_services) > 0 ?"
    )
    absent = first(first(block["content"])["condition_absent"])
    assert references(absent["filter"]) == {("google_logging_metric", "canary_ticks")}
    assert TF.locals["canary_tick_absence_s"] >= 300  # several ticks, not one late one


# --- guardrails ---------------------------------------------------------------------------


def test_redis_guardrail_is_memorystore_usage_above_80_percent_of_the_named_instance() -> None:
    condition = _threshold("redis_memory")
    assert 'metric.type = "redis.googleapis.com/stats/memory/usage_ratio"' in condition["filter"]
    assert "${local.redis_instance_id}" in condition["filter"]
    assert TF.locals["redis_instance_id"] == (
        "projects/${var.project_id}/locations/${var.region}/instances/${var.redis_instance}"
    )
    assert _local(condition["threshold_value"]) == 0.8


def test_database_guardrails_are_disk_above_8_gb_and_connections_above_70_percent() -> None:
    disk = _threshold("cloudsql_disk")
    assert "cloudsql.googleapis.com/database/disk/bytes_used" in disk["filter"]
    assert _local(disk["threshold_value"]) == 8 * 10**9 < 10 * 10**9  # the seed: < 10 GB
    pool = _threshold("db_connections_70")
    assert "postgresql/num_backends" in pool["filter"]
    assert pool["threshold_value"] == (
        "${floor(var.max_connections * local.db_connections_alert_pct / 100)}"
    )
    assert TF.locals["db_connections_alert_pct"] == 70
    for condition in (disk, pool):
        assert "${local.cloudsql_database_id}" in condition["filter"]
    assert TF.locals["cloudsql_database_id"] == "${var.project_id}:${var.cloudsql_instance}"


def test_budget_publishes_to_the_topic_notify_consumes_with_the_seeds_thresholds() -> None:
    from sightops.topology import FUNCTIONS, TOPICS

    budget = TF.resource("google_billing_budget", "monthly")
    updates = first(budget["all_updates_rule"])
    assert updates["pubsub_topic"] == '${google_pubsub_topic.topic["billing-budget"].id}'
    assert updates["schema_version"] == "1.0"
    assert first(budget["budget_filter"])["projects"] == ["projects/${local.project_number}"]
    [rules] = budget["dynamic"]
    assert rules["threshold_rules"]["for_each"] == "${var.budget.thresholds}"
    kind = TF.variables["budget"]["type"]
    assert "amount = optional(number, 200)" in kind
    assert "thresholds = optional(list(number), [0.5, 0.9, 1.0])" in kind
    grant = TF.resource("google_pubsub_topic_iam_member", "billing_publishes_budget")
    assert grant["member"] == "serviceAccount:billing-budget-alert@system.gserviceaccount.com"
    assert grant["role"] == "roles/pubsub.publisher"
    assert 'topic["billing-budget"]' in grant["topic"]
    assert "billing-budget" in FUNCS["notify"]["topics"]  # -> notify--billing-budget, dead letters
    assert "billing-budget" in TOPICS
    assert "billing-budget" in next(f for f in FUNCTIONS if f.name == "notify").topics
    assert (
        "billingbudgets.googleapis.com" in TF.resource("google_project_service", "api")["for_each"]
    )


def test_logs_are_kept_30_days_in_the_default_bucket() -> None:
    bucket = TF.resource("google_logging_project_bucket_config", "default")
    assert bucket["bucket_id"] == "_Default"
    assert bucket["location"] == "global"
    assert bucket["project"] == "${var.project_id}"
    assert _local(bucket["retention_days"]) == 30


def _runbooks() -> Iterator[Path]:
    for body in POLICIES.values():
        yield ROOT / "docs" / "runbooks" / f"{body['user_labels']['runbook']}.md"


def test_every_alert_runbook_says_what_it_means_and_what_to_do_first() -> None:
    for path in _runbooks():
        text = path.read_text()
        assert text.startswith("# "), path.name
        for heading in ("## What it means", "## First five minutes"):
            assert heading in text, f"{path.name}: no {heading!r}"
