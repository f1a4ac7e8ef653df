"""The Terraform wiring, read statically (terraform cannot reach its registry here).

Functions, topics, subscriptions, secrets, IAM and alert policies must agree with each
other, with the local topology (sightops/topology.py) and with the repository's runbooks.
"""

from __future__ import annotations

import re

import pytest

from sightops.topology import FUNCTIONS, MAX_DELIVERY_ATTEMPTS, TOPICS
from tests.infra.hcl import ROOT, first, load, references

TF = load()
FUNCS: dict[str, dict] = TF.locals["functions"]
OUR_TOPICS = set(re.findall(r'"([a-z-]+)"', TF.locals["topics"]))  # toset([...])
GOOGLE_TOPICS = {"cloud-builds"}
PRIMITIVE = {"roles/owner", "roles/editor", "roles/viewer"}
SECRETS: dict[str, dict] = TF.locals["secrets"]

# The issue's least-privilege list: what a function's runtime account may ever hold.
ALLOWED_FUNCTION_ROLES = {
    "roles/run.developer",  # rollback only, on the managed services
    "roles/iam.serviceAccountUser",  # rollback only, on their runtime account
    "roles/pubsub.publisher",  # only on topics the function publishes to
    "roles/secretmanager.secretAccessor",  # only on its own secrets
    "roles/cloudsql.client",  # where it connects
}
EXPECTED_PUBLISHES = {
    "migrate": ["ops-events"],
    "rollback": ["ops-events"],
    "alert_intake": ["monitoring-alerts"],
}
RUNBOOK = re.compile(r"docs/runbooks/([a-z0-9-]+\.md)")


def test_topics_are_the_designs_five_with_cloud_builds_referenced_as_googles() -> None:
    assert set(TOPICS) == OUR_TOPICS | GOOGLE_TOPICS
    assert "cloud-builds" not in OUR_TOPICS
    assert TF.data["google_pubsub_topic"]["cloud_builds"]["name"] == "cloud-builds"


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_every_function_trigger_topic_exists(name: str) -> None:
    fn = FUNCS[name]
    assert fn["trigger"] in {"pubsub", "http"}
    if fn["trigger"] == "pubsub":
        assert fn["topics"], f"{name} is event-driven but consumes no topic"
    else:
        assert fn["topics"] == [], f"{name} is HTTP but lists topics"
    for topic in fn["topics"] + fn["publishes"]:
        assert topic in OUR_TOPICS | GOOGLE_TOPICS, f"{name}: unknown topic {topic}"


@pytest.mark.parametrize("spec", FUNCTIONS, ids=lambda s: s.name)
def test_terraform_deploys_every_function_of_the_local_topology_with_the_same_topics(
    spec: object,
) -> None:
    name = spec.name  # type: ignore[attr-defined]
    assert name in FUNCS, f"{name} runs in make dev but terraform does not deploy it"
    fn = FUNCS[name]
    assert fn["entry_point"] == name
    expected = "pubsub" if spec.signature == "cloudevent" else "http"  # type: ignore[attr-defined]
    assert fn["trigger"] == expected
    assert set(spec.topics) <= set(fn["topics"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    "main", sorted((ROOT / "functions").glob("*/main.py")), ids=lambda p: p.parent.name
)
def test_every_function_source_in_the_tree_is_deployed(main: object) -> None:
    from sightops.package import entry_points

    source = main.parent.name  # type: ignore[attr-defined]
    deployed = {f["entry_point"] for f in FUNCS.values() if f["source"] == source}
    found = {e.name for e in entry_points(main)}  # type: ignore[arg-type]
    assert found, f"functions/{source}/main.py registers no function"
    assert found == deployed, f"functions/{source}: entry points {found}, deployed {deployed}"


def test_every_subscription_is_a_push_with_a_dead_letter_topic_and_bounded_retries() -> None:
    subs = TF.of_type("google_pubsub_subscription")
    push = subs["push"]
    assert push["for_each"] == "${local.subscriptions}"
    dlp = first(push["dead_letter_policy"])
    assert "google_pubsub_topic.dead_letter[each.key]" in dlp["dead_letter_topic"]
    assert dlp["max_delivery_attempts"] == "${var.max_delivery_attempts}"
    retry = first(push["retry_policy"])
    assert retry["minimum_backoff"] and retry["maximum_backoff"]
    oidc = first(first(push["push_config"])["oidc_token"])
    assert "google_service_account.push.email" in oidc["service_account_email"]
    endpoint = first(push["push_config"])["push_endpoint"]
    assert endpoint.endswith("/projects/${var.project_id}/topics/${each.value.topic}")
    assert TF.resource("google_pubsub_topic", "dead_letter")["for_each"] == (
        "${local.subscriptions}"
    )
    # Anything else must be the holding subscription at the end of a dead-letter topic.
    for name, body in subs.items():
        if name == "push":
            continue
        assert "dead_letter_policy" not in body
        assert "google_pubsub_topic.dead_letter" in body["topic"], name
        assert body["labels"]["role"] == "dead-letter-hold", name


def test_dead_lettering_is_possible_for_the_pubsub_service_agent() -> None:
    publish = TF.resource("google_pubsub_topic_iam_member", "pubsub_agent_publishes_dead_letters")
    ack = TF.resource("google_pubsub_subscription_iam_member", "pubsub_agent_acks_dead_letters")
    for grant in (publish, ack):
        assert grant["for_each"] == "${local.subscriptions}"
        assert grant["member"] == "${local.pubsub_service_agent}"
    assert publish["role"] == "roles/pubsub.publisher"
    assert ack["role"] == "roles/pubsub.subscriber"


def test_retry_and_dead_letter_defaults_match_the_runbooks() -> None:
    assert TF.variables["max_delivery_attempts"]["default"] == MAX_DELIVERY_ATTEMPTS
    backoff = TF.variables["retry_backoff_seconds"]["default"]
    assert 0 < backoff["minimum"] <= backoff["maximum"] <= 600


def test_subscription_names_match_the_local_topology() -> None:
    from sightops.topology import dead_letter_topic, subscription_name

    assert '"${pair.function}--${pair.topic}"' in str(TF.locals["subscriptions"]) or (
        "${pair.function}--${pair.topic}" in str(TF.locals["subscriptions"])
    )
    assert TF.resource("google_pubsub_topic", "dead_letter")["name"] == "${each.key}--dead-letter"
    assert dead_letter_topic("f", "t") == f"{subscription_name('f', 't')}--dead-letter"
    assert subscription_name("f", "t") == "f--t"


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_every_referenced_secret_exists(name: str) -> None:
    for key in FUNCS[name]["secrets"]:
        assert key in SECRETS, f"{name} reads undeclared secret {key}"
    assert TF.resource("google_secret_manager_secret", "secret")["for_each"] == "${local.secrets}"


def test_secrets_are_created_without_values() -> None:
    versions = TF.of_type("google_secret_manager_secret_version")
    # The only version Terraform writes is notify's routing file (references, not credentials).
    assert set(versions) <= {"notify_config"}
    assert "file(" in versions["notify_config"]["secret_data"]


def test_secret_env_names_are_settings_fields() -> None:
    from shared.settings import Settings

    fields = {f.upper() for f in Settings.model_fields} | {"DATABASE_URL_SYNC"}
    for key, secret in SECRETS.items():
        env = secret["env"]
        top, _, nested = env.partition("__")
        assert top in fields, f"{key}: {env} is not a Settings field"
        if nested:
            model = Settings.model_fields[top.lower()].annotation
            assert nested.lower() in model.model_fields, f"{key}: {env} is not a Settings field"  # type: ignore[union-attr]


def test_every_plain_env_name_is_a_settings_field() -> None:
    from shared.settings import Settings

    for name, fn in FUNCS.items():
        for env in fn["env"]:
            top, _, nested = env.partition("__")
            assert top.lower() in Settings.model_fields, f"{name}: {env}"
            if nested:
                model = Settings.model_fields[top.lower()].annotation
                assert nested.lower() in model.model_fields, f"{name}: {env}"  # type: ignore[union-attr]


def test_migrate_selects_the_managed_services_and_matches_the_retry_policy() -> None:
    """An empty selector selects nothing: without this, production would skip every build."""
    env = FUNCS["migrate"]["env"]
    assert "var.managed_services" in env["MIGRATE__SELECTOR"]
    assert "var.max_delivery_attempts" in env["MIGRATE__MAX_DELIVERY_ATTEMPTS"]


def test_no_account_holds_a_primitive_or_authoritative_role() -> None:
    for kind, name, body in TF.iam_members():
        assert not kind.endswith(("_iam_binding", "_iam_policy")), (
            f"{kind}.{name}: authoritative IAM would remove grants made elsewhere"
        )
        assert body["role"] not in PRIMITIVE, f"{kind}.{name} grants {body['role']}"
        assert "roles/" in body["role"]


def test_function_accounts_hold_only_the_issues_roles_each_where_it_says() -> None:
    seen_roles = set()
    for kind, name, body in TF.iam_members():
        if ("google_service_account", "fn") not in references(body.get("member", "")):
            continue
        role = body["role"]
        seen_roles.add(role)
        assert role in ALLOWED_FUNCTION_ROLES, f"{kind}.{name} gives a function {role}"
        if role == "roles/run.developer":
            assert kind == "google_cloud_run_v2_service_iam_member"
            assert body["for_each"] == "${local.cloud_run_managers}"
        if role == "roles/iam.serviceAccountUser":
            assert kind == "google_service_account_iam_member"
            assert "var.managed_services_runtime_service_account" in body["service_account_id"]
            assert "f.manages_cloud_run" in body["for_each"]
        if role == "roles/pubsub.publisher":
            assert kind == "google_pubsub_topic_iam_member"
            assert body["for_each"] == "${local.function_publishes}"
        if role == "roles/secretmanager.secretAccessor":
            assert kind == "google_secret_manager_secret_iam_member"
        if role == "roles/cloudsql.client":
            assert kind == "google_project_iam_member"
            condition = first(body["condition"])["expression"]
            assert "instances/${var.cloudsql_instance}" in condition
            assert "f.cloudsql" in body["for_each"]
    assert seen_roles == ALLOWED_FUNCTION_ROLES


def test_only_rollback_manages_cloud_run_and_publishers_are_as_designed() -> None:
    managers = {name for name, fn in FUNCS.items() if fn["manages_cloud_run"]}
    assert managers == {"rollback"}
    publishes = {name: fn["publishes"] for name, fn in FUNCS.items() if fn["publishes"]}
    assert publishes == EXPECTED_PUBLISHES


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_every_function_has_its_own_account_bounded_scaling_and_the_package(name: str) -> None:
    fn = FUNCS[name]
    assert 1 <= fn["max_instances"] <= 20
    assert 0 <= fn["min_instances"] <= fn["max_instances"]
    if name in {"rollback", "kpi"}:
        assert fn["min_instances"] >= 1, f"{name} is latency-sensitive: keep one warm"
    body = TF.resource("google_cloudfunctions2_function", "fn")
    assert body["for_each"] == "${local.functions}"
    service = first(body["service_config"])
    assert service["service_account_email"] == "${google_service_account.fn[each.key].email}"
    assert service["vpc_connector"] == "${var.vpc_connector}"
    source = first(first(first(body["build_config"])["source"])["storage_source"])
    assert "google_storage_bucket_object.source" in source["object"]
    obj = TF.resource("google_storage_bucket_object", "source")
    assert "local.packages" in obj["name"] and "local.packages" in obj["source"]


def test_push_invoker_covers_exactly_the_event_driven_functions() -> None:
    invoker = TF.resource("google_cloud_run_v2_service_iam_member", "push_invoker")
    assert invoker["for_each"] == "${local.pubsub_functions}"
    assert invoker["role"] == "roles/run.invoker"
    public = TF.resource("google_cloud_run_v2_service_iam_member", "alert_intake_public")
    assert public["count"] == "${var.alert_webhook_enabled ? 1 : 0}"


POLICIES = TF.of_type("google_monitoring_alert_policy")


def test_the_four_platform_alert_policies_exist() -> None:
    metrics = {name: str(body["conditions"]) for name, body in POLICIES.items()}
    assert len(POLICIES) == 4
    assert any("request_count" in m and "5xx" in m and "denominator" in m for m in metrics.values())
    assert any("request_latencies" in m and "PERCENTILE_95" in m for m in metrics.values())
    assert any("num_backends" in m for m in metrics.values())
    assert any("memory/utilizations" in m for m in metrics.values())


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_every_alert_policy_names_a_channel_and_a_runbook_that_exists(name: str) -> None:
    body = POLICIES[name]
    assert body["notification_channels"] == "${local.alert_channels}"
    assert "google_monitoring_notification_channel.pubsub.id" in str(TF.locals["alert_channels"])
    content = first(body["documentation"])["content"]
    runbooks = RUNBOOK.findall(content)
    assert runbooks, f"{name}: documentation links no docs/runbooks/<page>.md"
    for page in runbooks:
        assert (ROOT / "docs" / "runbooks" / page).is_file(), f"{name}: missing runbook {page}"
    assert body["user_labels"]["runbook"] == runbooks[0].removesuffix(".md")


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_auto_rollback_is_set_exactly_where_rollback_is_the_right_response(name: str) -> None:
    labels = POLICIES[name]["user_labels"]
    metric = str(POLICIES[name]["conditions"])
    rollback_helps = "request_count" in metric or "request_latencies" in metric
    assert (labels.get("auto_rollback") == "true") == rollback_helps


def test_the_pubsub_channel_publishes_to_monitoring_alerts_with_the_agents_grant() -> None:
    channel = TF.resource("google_monitoring_notification_channel", "pubsub")
    assert channel["type"] == "pubsub"
    assert 'google_pubsub_topic.topic["monitoring-alerts"]' in channel["labels"]["topic"]
    grant = TF.resource("google_pubsub_topic_iam_member", "monitoring_agent_publishes_alerts")
    assert grant["member"] == "${local.monitoring_service_agent}"
    assert grant["role"] == "roles/pubsub.publisher"
    agent = TF.locals["monitoring_service_agent"]
    assert "gcp-sa-monitoring-notification.iam.gserviceaccount.com" in agent
    webhook = TF.resource("google_monitoring_notification_channel", "alert_intake")
    assert webhook["type"] == "webhook_basicauth"
    assert webhook["count"] == "${var.alert_webhook_enabled ? 1 : 0}"


def test_scheduler_publishes_a_refresh_request_kpi_refresh_accepts() -> None:
    from shared.kpi.refresh import parse_refresh_request

    job = TF.resource("google_cloud_scheduler_job", "kpi_refresh")
    target = first(job["pubsub_target"])
    assert 'google_pubsub_topic.topic["kpi-refresh"]' in target["topic_name"]
    attributes = target["attributes"]
    assert attributes["type"] == "sight.ops.kpi.refresh_requested"
    assert "id" not in attributes, "a fixed id would make every run after the first a duplicate"
    assert "all_active = true" in target["data"]
    request = parse_refresh_request(b'{"all_active": true}', attributes)
    assert request.all_active


def test_build_triggers_ci_on_push_and_deploy_on_migration_succeeded() -> None:
    triggers = TF.of_type("google_cloudbuild_trigger")
    ci, deploy = triggers["ci"], triggers["deploy"]
    assert ci["filename"] == "cloudbuild.yaml"
    assert first(first(ci["github"])["push"])["branch"] == "${var.ci_branch_regex}"
    assert 'google_pubsub_topic.topic["ops-events"]' in first(deploy["pubsub_config"])["topic"]
    assert first(deploy["git_file_source"])["path"] == "cloudbuild-deploy.yaml"
    assert deploy["substitutions"]["_EVENT_TYPE"] == "$(body.message.attributes.type)"
    assert re.fullmatch(r"_EVENT_TYPE\.matches\('.*migration.*succeeded.*'\)", deploy["filter"])
    assert (ROOT / "cloudbuild.yaml").is_file() and (ROOT / "cloudbuild-deploy.yaml").is_file()


def test_versions_are_pinned_and_every_variable_and_output_is_documented() -> None:
    block = TF.terraform[0]
    assert block["required_version"].startswith(">=")
    google = (
        block["required_providers"][0]["google"]
        if isinstance(block["required_providers"], list)
        else block["required_providers"]["google"]
    )
    assert google["version"].startswith("~> 6.")
    for name, var in TF.variables.items():
        assert len(var.get("description", "")) > 15, f"variable {name} is undocumented"
        assert "type" in var, f"variable {name} has no type"
        if not isinstance(var.get("default"), bool):
            assert "validation" in var, f"variable {name} has no validation"
    for name, out in TF.outputs.items():
        assert len(out.get("description", "")) > 15, f"output {name} is undocumented"
