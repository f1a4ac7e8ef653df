"""The canary's Terraform (issue 14; terraform/canary.tf, local.functions.canary): least
privilege, its subscription filter, the tick job's message and the opt-in setting, each
checked against the code that consumes it (docs/canary.md)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import hcl2
import pytest

from shared.canary import StepPlan
from shared.events import CanaryTick, EventType
from tests.helpers import envelope
from tests.infra.filters import pubsub_filter_matches
from tests.infra.hcl import ROOT, TERRAFORM, first, load, references

TF = load()
FUNCS: dict[str, dict[str, Any]] = TF.locals["functions"]
CANARY = FUNCS["canary"]
FILTERS: dict[str, str] = TF.locals["subscription_filters"]
TICK_JOB = TF.resource("google_cloud_scheduler_job", "canary_tick")
TICK_TARGET = first(TICK_JOB["pubsub_target"])
GOLDEN = sorted((ROOT / "tests" / "fixtures" / "golden" / "ops").glob("*.json"))


def _golden(path: Path) -> dict[str, str]:
    return dict(json.loads(path.read_text())["attributes"])


def _subscription_keys() -> set[str]:
    """What local.subscriptions yields: one push subscription per (function, topic)."""
    return {
        f"{fn}--{t}" for fn, f in FUNCS.items() if f["trigger"] == "pubsub" for t in f["topics"]
    }


def test_canary_is_an_event_driven_function_on_ops_events_with_dead_letters_and_retries() -> None:
    assert CANARY["trigger"] == "pubsub"
    assert CANARY["entry_point"] == "canary"
    assert CANARY["topics"] == ["ops-events"]
    assert "canary--ops-events" in _subscription_keys()
    # The push subscription, its dead-letter topic and hold come from local.subscriptions,
    # with the retry and dead-letter policy every subscription has (test_terraform_wiring).
    for kind, name in [
        ("google_pubsub_subscription", "push"),
        ("google_pubsub_topic", "dead_letter"),
        ("google_pubsub_subscription", "dead_letter_hold"),
    ]:
        assert TF.resource(kind, name)["for_each"] == "${local.subscriptions}"


def test_canary_subscription_delivers_its_requests_and_ticks_and_no_other_family() -> None:
    """hasPrefix on the type: the canary's own results reach it too (its handler skips
    them); releases, rollbacks and migrations never do."""
    expression = FILTERS["canary--ops-events"]
    assert expression == 'hasPrefix(attributes.type, "sight.ops.canary.")'
    scheduled = dict(TICK_TARGET["attributes"])
    assert pubsub_filter_matches(expression, scheduled)
    delivered = {p.stem for p in GOLDEN if pubsub_filter_matches(expression, _golden(p))}
    assert delivered == {p.stem for p in GOLDEN if p.stem.startswith("canary_")}
    assert "canary_requested" in delivered and "release_promoted" not in delivered


def test_notify_subscription_drops_the_tick_and_nothing_else() -> None:
    """The tick Cloud Scheduler sends has no `id`/`time` (every run publishes the same
    message), which notify's strict ops parser refuses: without this filter each minute
    would leave a rejected row and raise the rejected-messages alert."""
    expression = FILTERS["notify--ops-events"]
    assert expression == f'attributes.type != "{EventType.CANARY_TICK.value}"'
    assert not pubsub_filter_matches(expression, dict(TICK_TARGET["attributes"]))
    for path in GOLDEN:
        attributes = _golden(path)
        assert pubsub_filter_matches(expression, attributes) == (
            attributes["type"] != EventType.CANARY_TICK.value
        ), path.name


def test_subscription_filters_are_the_local_topologys() -> None:
    from sightops.topology import SUBSCRIPTION_FILTERS

    for key in ("canary--ops-events", "notify--ops-events"):
        fn, topic = key.split("--")
        assert SUBSCRIPTION_FILTERS[(fn, topic)] == FILTERS[key]


def test_tick_job_publishes_every_minute_to_ops_events_only_when_a_service_is_opted_in() -> None:
    assert TICK_JOB["count"] == "${length(var.canary_services) > 0 ? 1 : 0}"
    assert TICK_JOB["schedule"] == "* * * * *"
    assert first(TICK_JOB["retry_config"])["retry_count"] == 0  # the next tick is the retry
    assert 'google_pubsub_topic.topic["ops-events"]' in TICK_TARGET["topic_name"]
    attributes = TICK_TARGET["attributes"]
    assert attributes == {"type": EventType.CANARY_TICK.value, "source": "cloud-scheduler"}
    assert "id" not in attributes, "a fixed id would make every tick after the first a duplicate"
    assert TICK_TARGET["data"] == "${base64encode(jsonencode({}))}"
    assert CanaryTick.model_validate({}) == CanaryTick(service=None, region=None)
    assert TF.variables["canary_services"]["default"] == {}


def test_the_canary_accepts_the_tick_cloud_scheduler_publishes_once_per_run() -> None:
    """The job's message (data `{}`, attributes type and source only) must parse, and two
    runs (two Pub/Sub message ids) must not deduplicate into one: a tick rejected or
    dropped as a duplicate every minute would leave every canary unanalysed."""
    from shared.canary import dedupe_key, parse
    from shared.runtime import message_from_envelope

    attributes = dict(TICK_TARGET["attributes"])
    keys = set()
    for message_id in ("1111111111111111", "2222222222222222"):
        message = message_from_envelope(envelope(b"{}", attributes, message_id=message_id))
        event = parse(message.data, message.attributes)
        assert event.type is EventType.CANARY_TICK
        assert event.data_as(CanaryTick).service is None
        keys.add(dedupe_key(event, message))
    assert len(keys) == 2


def test_canary_account_reads_metrics_and_holds_nothing_broader() -> None:
    """roles/monitoring.viewer at project level (Monitoring has no narrower resource), and
    no writer or admin role of Monitoring, and no project-wide Cloud Run role, for anyone."""
    grant = TF.resource("google_project_iam_member", "canary_reads_metrics")
    assert grant == {
        "project": "${var.project_id}",
        "role": "roles/monitoring.viewer",
        "member": '${google_service_account.fn["canary"].member}',
    }
    for kind, name, body in TF.iam_members():
        role = body["role"]
        if role.startswith("roles/monitoring.") and name != "backup_drill_writes_metric":
            # backup_drill writes one custom metric: tests/infra/test_backup_wiring.py
            assert (kind, name, role) == (
                "google_project_iam_member",
                "canary_reads_metrics",
                "roles/monitoring.viewer",
            )
        if kind == "google_project_iam_member":
            assert not role.startswith("roles/run."), f"{name}: project-wide {role}"
        if 'fn["canary"]' in str(body.get("member")):
            assert name in ("canary_reads_metrics", "canary_reads_request_logs"), (
                f"{kind}.{name}: a grant outside the tables"
            )
        if role.startswith("roles/logging.") and 'fn["canary"]' in str(body.get("member")):
            assert (kind, role) == (
                "google_logging_log_view_iam_member",
                "roles/logging.viewAccessor",
            ), f"{name}: the canary reads one log view, nothing else of Logging"
    assert CANARY["secrets"] == ["database_url"]
    assert CANARY["publishes"] == ["ops-events"]


def test_canary_reads_only_cloud_runs_request_logs_through_one_log_view() -> None:
    """The first step reads request logs (docs/canary.md, "Reading the request logs"):
    through a view holding only Cloud Run's request logs of this project, granted on that
    view alone, and named to the function as CANARY__LOGS_VIEW."""
    view = TF.resource("google_logging_log_view", "cloud_run_requests")
    assert view["bucket"] == "${google_logging_project_bucket_config.default.id}"
    assert view["filter"] == (
        'SOURCE("projects/${var.project_id}") AND resource.type = "cloud_run_revision"'
        ' AND LOG_ID("run.googleapis.com/requests")'
    )
    grant = TF.resource("google_logging_log_view_iam_member", "canary_reads_request_logs")
    assert grant["role"] == "roles/logging.viewAccessor"
    assert grant["member"] == '${google_service_account.fn["canary"].member}'
    assert grant["name"] == "${google_logging_log_view.cloud_run_requests.name}"
    assert CANARY["env"]["CANARY__LOGS_VIEW"] == "${local.canary_logs_view}"
    name = TF.locals["canary_logs_view"]
    assert name.endswith("/views/${google_logging_log_view.cloud_run_requests.name}")
    # the setting's own validation accepts the shape Terraform builds
    from shared.settings import CanaryConfig

    built = name.replace("${var.project_id}", "sight-prod").replace(
        "${google_logging_log_view.cloud_run_requests.name}", "sightops-cloud-run-requests"
    )
    assert CanaryConfig(logs_view=built).logs_view == built


def test_canary_moves_traffic_only_on_the_services_opted_in() -> None:
    assert CANARY["moves_traffic_for"] == "${keys(var.canary_services)}"
    grant = TF.resource("google_cloud_run_v2_service_iam_member", "rollback_traffic")
    assert grant["for_each"] == "${local.cloud_run_managers}"
    assert grant["name"] == "${each.value.service}"
    assert "for s in f.moves_traffic_for" in TF.locals["cloud_run_managers"]
    act_as = TF.resource("google_service_account_iam_member", "rollback_acts_as_runtime")
    assert "length(f.moves_traffic_for) > 0" in act_as["for_each"]
    # Only managed services may be opted in: the plan refuses any other.
    conditions = [v["condition"] for v in TF.variables["canary_services"]["validation"]]
    assert any("contains(var.managed_services, s)" in c for c in conditions)
    assert references(grant["role"]) == {("google_project_iam_custom_role", "rollback_traffic")}


def _optional_defaults() -> dict[str, Any]:
    """The defaults terraform fills in for a service given without steps or max_step_s."""
    kind = TF.variables["canary_services"]["type"]
    steps = re.search(r"steps\s*=\s*optional\(list\(number\),\s*\[([^\]]*)\]\)", kind)
    limit = re.search(r"max_step_s\s*=\s*optional\(number,\s*([0-9.]+)\)", kind)
    assert steps and limit, kind
    return {
        "steps": [int(s) for s in steps.group(1).split(",")],
        "max_step_s": float(limit.group(1)),
    }


def test_canary_services_variable_defaults_are_the_settings_defaults() -> None:
    from shared.settings import CanaryPlan

    plan = CanaryPlan()
    assert _optional_defaults() == {"steps": plan.steps, "max_step_s": plan.max_step_s}


@pytest.mark.parametrize(
    "tfvars",
    [
        None,  # terraform.tfvars.example's value
        {"sight-api": {}},  # opted in with the default plan
        {"sight-api": {"steps": [10, 100], "max_step_s": 600}},
    ],
    ids=["example", "defaults", "custom"],
)
def test_canary_services_render_into_the_env_the_canary_settings_read(
    tfvars: dict[str, Any] | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """CANARY__SERVICES is jsonencode(var.canary_services), optional attributes filled in
    as terraform does; Settings must read back the same plan for every service."""
    from shared.settings import Settings

    env = CANARY["env"]
    assert env["CANARY__SERVICES"] == "${jsonencode(var.canary_services)}"
    assert env["CANARY__PROJECT"] == "${var.project_id}"
    assert env["CANARY__REGION"] == "${var.region}"
    assert env["CANARY__DRY_RUN"] == "${tostring(var.canary_dry_run)}"
    if tfvars is None:
        example = hcl2.loads((TERRAFORM / "terraform.tfvars.example").read_text())
        tfvars = example["canary_services"]
    rendered = json.dumps(
        {name: {**_optional_defaults(), **plan} for name, plan in tfvars.items()},
        separators=(",", ":"),
    )
    monkeypatch.setenv("CANARY__SERVICES", rendered)
    services = Settings().canary.services
    assert set(services) == set(tfvars)
    for name, plan in tfvars.items():
        expected = {**_optional_defaults(), **plan}
        assert services[name].steps == expected["steps"]
        assert services[name].max_step_s == expected["max_step_s"]
        StepPlan.of(services[name])  # a plan the canary can run


def test_the_deploy_build_gets_the_same_opted_in_services_as_the_canary() -> None:
    """`sightops deploy` hands an opted-in service to the canary instead of promoting it:
    the trigger passes the canary's own JSON, and the build hands it to the deploy step
    through its environment only (docs/deploy.md, "Canary")."""
    import yaml

    trigger = TF.resource("google_cloudbuild_trigger", "deploy")["substitutions"]
    assert trigger["_CANARY_SERVICES"] == CANARY["env"]["CANARY__SERVICES"]
    build = yaml.safe_load((ROOT / "cloudbuild-deploy.yaml").read_text())
    assert build["substitutions"]["_CANARY_SERVICES"] == "{}"
    [deploy] = [step for step in build["steps"] if step.get("id") == "deploy"]
    assert "CANARY__SERVICES=${_CANARY_SERVICES}" in deploy["env"]
    assert "_CANARY_SERVICES" not in " ".join(deploy["args"])
