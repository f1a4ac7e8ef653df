"""terraform/backup.tf read statically against the code it serves (docs/backups.md): the
bucket's guarantees, least privilege on it, schedules the functions accept, and staleness
alerts on the metric the drill writes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from shared.backup._function import CONSUMER_OF_KIND, VERIFIED_METRIC, parse
from shared.backup._manifest import backup_prefix
from shared.metrics import METRIC_PREFIX
from shared.settings import BackupConfig
from sightops.topology import subscription_filter
from tests.infra.hcl import first, load

TF = load()
BUCKET = TF.resource("google_storage_bucket", "backups")
FUNCS = TF.locals["functions"]
BUCKET_REF = "${google_storage_bucket.backups.name}"


def test_the_bucket_is_private_uniform_and_holds_objects_under_a_retention_policy() -> None:
    assert BUCKET["uniform_bucket_level_access"] is True
    assert BUCKET["public_access_prevention"] == "enforced"
    assert BUCKET["force_destroy"] is False
    retention = first(BUCKET["retention_policy"])
    assert retention["retention_period"] == "${var.backup_retention_days * 86400}"
    days = TF.variables["backup_retention_days"]
    assert 1 <= days["default"] <= 30  # shorter than the shortest lifecycle rule


@pytest.mark.parametrize(("period", "days"), [("daily", 30), ("manual", 30), ("weekly", 84)])
def test_lifecycle_keeps_30_daily_and_12_weekly_backups_by_the_names_the_code_writes(
    period: str, days: int
) -> None:
    ages = {}
    for rule in BUCKET["lifecycle_rule"]:
        condition = first(rule["condition"])
        assert first(rule["action"])["type"] == "Delete"
        for prefix in condition["matches_prefix"]:
            ages[prefix] = condition["age"]
    when = datetime(2026, 1, 4, 2, 15, tzinfo=UTC)
    for store in ("postgres", "neo4j"):
        name = backup_prefix(store, period, f"{store}-20260104T021500Z-abcdef", when)  # type: ignore[arg-type]
        matching = [age for prefix, age in ages.items() if name.startswith(prefix)]
        assert matching == [days], name


def test_the_writer_may_only_create_objects_and_the_drill_only_read_them() -> None:
    grants = [
        (name, body)
        for kind, name, body in TF.iam_members()
        if kind == "google_storage_bucket_iam_member" and body["bucket"] == BUCKET_REF
    ]
    assert {(body["role"], body["member"]) for _, body in grants} == {
        ("roles/storage.objectCreator", '${google_service_account.fn["backup"].member}'),
        ("roles/storage.objectViewer", '${google_service_account.fn["backup_drill"].member}'),
    }
    assert FUNCS["backup"]["source"] == FUNCS["backup_drill"]["source"] == "backup"
    for name in ("backup", "backup_drill"):
        assert FUNCS[name]["env"]["BACKUP__BUCKET"] == BUCKET_REF
        assert FUNCS[name]["topics"] == ["backup-requests"]
    assert "neo4j_password" not in FUNCS["backup_drill"]["secrets"]  # never the real graph
    assert "scratch_neo4j_password" in FUNCS["backup_drill"]["secrets"]
    assert FUNCS["backup_drill"]["env"]["METRICS_BACKEND"] == "cloud_monitoring"
    # its one project-level grant: writing the staleness metric (no narrower resource)
    assert TF.resource("google_project_iam_member", "backup_drill_writes_metric") == {
        "project": "${var.project_id}",
        "role": "roles/monitoring.metricWriter",
        "member": '${google_service_account.fn["backup_drill"].member}',
    }


@pytest.mark.parametrize("job", sorted(TF.locals["backup_jobs"]))
def test_each_schedule_sends_a_request_its_function_accepts_and_only_it_receives(job: str) -> None:
    body = TF.resource("google_cloud_scheduler_job", "backup")
    target = first(body["pubsub_target"])
    assert 'google_pubsub_topic.topic["backup-requests"]' in target["topic_name"]
    data = TF.locals["backup_jobs"][job]["data"]
    attributes = {**target["attributes"], "kind": data["kind"]}
    assert target["attributes"]["kind"] == "${each.value.data.kind}"
    request = parse(json.dumps(data).encode(), attributes)
    assert request.kind == data["kind"]
    consumer = CONSUMER_OF_KIND[request.kind]
    # the production filters (the emulator ignores them; the handler skips the other kind)
    wanted = subscription_filter(consumer, "backup-requests")
    other = subscription_filter(
        "backup" if consumer == "backup_drill" else "backup_drill", "backup-requests"
    )
    assert wanted == f'attributes.kind {"=" if consumer == "backup_drill" else "!="} "drill"'
    assert other is not None and other != wanted
    assert TF.locals["subscription_filters"][f"{consumer}--backup-requests"] == wanted


def test_schedules_are_daily_for_postgres_and_weekly_for_neo4j_and_the_drill() -> None:
    jobs = TF.locals["backup_jobs"]
    assert jobs["postgres_daily"]["data"]["stores"] == ["postgres"]
    assert TF.variables["backup_postgres_schedule"]["default"].endswith("* * *")
    assert jobs["neo4j_weekly"]["data"]["stores"] == ["neo4j"]
    assert TF.variables["backup_neo4j_schedule"]["default"].endswith("* * 0")
    assert jobs["drill_weekly"]["data"] == {"stores": ["postgres", "neo4j"], "kind": "drill"}
    assert TF.variables["backup_drill_schedule"]["default"].endswith("* * 0")


def test_staleness_alerts_read_the_metric_the_drill_writes_at_the_settings_limits() -> None:
    metric = METRIC_PREFIX + VERIFIED_METRIC  # custom.googleapis.com/sightops/...
    promql = metric.replace("custom.googleapis.com/", "custom_googleapis_com:").replace("/", "_")
    assert TF.locals["backup_verified_metric"] == promql
    defaults = BackupConfig()
    assert TF.variables["backup_postgres_max_age_hours"]["default"] == defaults.postgres_max_age_h
    assert TF.variables["backup_neo4j_max_age_hours"]["default"] == defaults.neo4j_max_age_h
    policy = TF.resource("google_monitoring_alert_policy", "backup_stale")
    assert policy["for_each"] == "${local.backup_staleness}"
    query = first(first(policy["conditions"])["condition_prometheus_query_language"])["query"]
    assert "time() - max by (store) (last_over_time(" in query
    assert "absent_over_time(" in query  # never verified fires too
    assert "${each.value.hours * 3600}" in query
    assert policy["user_labels"]["runbook"] == "backup-stale"
