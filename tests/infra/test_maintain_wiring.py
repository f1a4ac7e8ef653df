"""The maintain function's wiring, read statically (docs/maintain.md, terraform/maintain.tf):
its own topic and daily job in the shape the function accepts, least privilege, a timeout
its lock wait and time budget fit in, and the same wiring as the local topology."""

from __future__ import annotations

from shared.maintain import parse
from shared.settings import MaintainConfig
from sightops.topology import FUNCTIONS, TOPICS, dead_letter_topic
from tests.infra.hcl import first, load, references

TF = load()
MAINTAIN = TF.locals["functions"]["maintain"]


def test_maintain_has_its_own_topic_here_and_in_the_local_topology() -> None:
    [spec] = [fn for fn in FUNCTIONS if fn.name == "maintain"]
    assert spec.topics == ("maintenance",) and spec.signature == "cloudevent"
    assert spec.port == 8808
    assert "maintenance" in TOPICS
    assert '"maintenance"' in TF.locals["topics"]
    assert MAINTAIN["trigger"] == "pubsub" and MAINTAIN["topics"] == ["maintenance"]
    # The push subscription, its dead letters and the push identity come from the same
    # for_each as every other function's (pubsub.tf), named as in `make dev`.
    assert dead_letter_topic("maintain", "maintenance") == "maintain--maintenance--dead-letter"
    assert "maintain--maintenance" not in TF.locals["subscription_filters"]


def test_the_daily_job_publishes_a_request_maintain_accepts() -> None:
    job = TF.resource("google_cloud_scheduler_job", "maintain")
    target = first(job["pubsub_target"])
    assert 'google_pubsub_topic.topic["maintenance"]' in target["topic_name"]
    attributes = target["attributes"]
    assert attributes["type"] == "sight.ops.maintain.requested"
    assert "id" not in attributes, "a fixed id would make every run after the first a duplicate"
    assert "jsonencode({})" in target["data"]
    assert parse(b"{}", attributes).dry_run is False
    assert job["schedule"] == "${var.maintain_schedule}"
    schedule = TF.variables["maintain_schedule"]
    assert len(schedule["default"].split()) == 5
    assert "validation" in schedule


def test_maintain_holds_its_two_secrets_and_publishes_its_result_nothing_more() -> None:
    assert MAINTAIN["secrets"] == ["database_url", "neo4j_password"]
    assert MAINTAIN["publishes"] == ["ops-events"]
    assert MAINTAIN["moves_traffic_for"] == []
    assert MAINTAIN["notify_config"] is False
    assert MAINTAIN["ingress"] == "ALLOW_INTERNAL_ONLY"
    # Nothing grants the maintain account anything by name: its roles come only from the
    # per-function for_each grants the generic wiring tests bound (secrets, publisher, trace).
    for kind, name, body in TF.iam_members():
        assert 'fn["maintain"]' not in str(body.get("member", "")), f"{kind}.{name}"


def test_one_run_at_a_time_within_a_timeout_its_lock_wait_and_budget_fit_in() -> None:
    cfg = MaintainConfig()
    assert MAINTAIN["max_instances"] == 1 and MAINTAIN["concurrency"] == 1
    assert cfg.lock_wait_s + cfg.budget_s < MAINTAIN["timeout_seconds"] <= 540
    # The lock is held on a session of its own, outside the delivery's pool.
    assert MAINTAIN["db_extra_sessions"] == 1 and MAINTAIN["db_pool_size"] >= 1


def test_dry_run_is_a_variable_that_reaches_the_setting() -> None:
    assert MAINTAIN["env"]["MAINTAIN__DRY_RUN"] == "${tostring(var.maintain_dry_run)}"
    assert TF.variables["maintain_dry_run"]["default"] is False
    assert "dry_run" in MaintainConfig.model_fields


def test_a_lost_request_is_retried_once_by_the_scheduler_then_left_to_the_next_day() -> None:
    job = TF.resource("google_cloud_scheduler_job", "maintain")
    assert first(job["retry_config"])["retry_count"] == 1
    assert ("google_project_service", "api") in references(job["depends_on"])
