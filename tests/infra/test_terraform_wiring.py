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

# The issue's least-privilege list: what a function's runtime account may ever hold. Not
# roles/cloudsql.client: it gates only the Cloud SQL connector/proxy, and the functions
# connect to the private IP through the VPC connector.
ROLLBACK_TRAFFIC = "${google_project_iam_custom_role.rollback_traffic.name}"
DEPLOY_RELEASE = "${google_project_iam_custom_role.deploy_release.name}"
ACT_AS_RUNTIME = "${google_project_iam_custom_role.act_as_runtime.name}"
CONSOLE_READ = "${google_project_iam_custom_role.console_read.name}"
ALLOWED_FUNCTION_ROLES = {
    ROLLBACK_TRAFFIC,  # rollback and canary only, on the services they move traffic for
    ACT_AS_RUNTIME,  # rollback and canary only, on their runtime account
    "roles/pubsub.publisher",  # only on topics the function publishes to
    "roles/secretmanager.secretAccessor",  # only on its own secrets
    "roles/monitoring.viewer",  # canary only: it reads metrics (project-wide, no narrower)
    "roles/logging.viewAccessor",  # canary only, on the view of Cloud Run's request logs
    "roles/storage.objectCreator",  # backup only, on the backup bucket (backup.tf)
    "roles/storage.objectViewer",  # backup_drill only, on the backup bucket
    "roles/monitoring.metricWriter",  # backup_drill only: the staleness alert's metric
    CONSOLE_READ,  # console only, on the managed services (tests/infra/test_console_wiring.py)
    "roles/pubsub.subscriber",  # console only, on the dead-letter holds (same)
}
EXPECTED_PUBLISHES = {
    "migrate": ["ops-events"],
    "rollback": ["ops-events"],
    "canary": ["ops-events"],  # its decisions and release.promoted / release.failed
    "alert_intake": ["monitoring-alerts"],
    "kpi_refresh": ["ops-events"],  # the weekly release metrics digest (docs/metrics.md)
    "maintain": ["ops-events"],  # sight.ops.maintain.completed (docs/maintain.md)
    "backup": ["ops-events", "backup-requests"],  # a failed export; the drill of each backup
    "backup_drill": ["ops-events"],  # sight.ops.backup.verified / failed (docs/backups.md)
    "slack_actions": ["ops-events"],  # a Slack button runs `sightops rollback` & co. (console)
}
RUNBOOK = re.compile(r"docs/runbooks/([a-z0-9-]+\.md)")


def test_topics_are_the_designs_with_cloud_builds_managed_but_never_destroyed() -> None:
    assert set(TOPICS) == OUR_TOPICS | GOOGLE_TOPICS
    assert "cloud-builds" not in OUR_TOPICS
    # Cloud Build publishes to cloud-builds but does not create it: a data source would fail
    # the first plan of a fresh project. Managed (imported where it exists), kept on destroy.
    assert "google_pubsub_topic" not in TF.data
    topic = TF.resource("google_pubsub_topic", "cloud_builds")
    assert topic["name"] == "cloud-builds"
    assert first(topic["lifecycle"])["prevent_destroy"] is True
    assert "google_pubsub_topic.cloud_builds.id" in str(TF.locals["topic_ids"])
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "terraform -chdir=terraform import google_pubsub_topic.cloud_builds" in deploy


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
    # The push identity of the function this subscription delivers to, no other.
    assert oidc["service_account_email"] == (
        "${google_service_account.push[each.value.function].email}"
    )
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


def test_rollback_never_receives_the_incidents_alert_intake_publishes() -> None:
    """Only the Pub/Sub notification channel may move traffic (docs/rollback.md): rollback's
    monitoring-alerts subscription filters out what alert_intake marks (origin=webhook),
    notify's does not, and the local topology applies the same filters."""
    from sightops.topology import SUBSCRIPTION_FILTERS

    push = TF.resource("google_pubsub_subscription", "push")
    assert push["filter"] == "${lookup(local.subscription_filters, each.key, null)}"
    filters = TF.locals["subscription_filters"]
    assert filters == {f"{fn}--{topic}": f for (fn, topic), f in SUBSCRIPTION_FILTERS.items()}
    assert filters["rollback--monitoring-alerts"] == "NOT attributes:origin"
    assert set(filters) <= {f"{fn}--{t}" for fn, f in FUNCS.items() for t in f["topics"]}
    assert "notify--monitoring-alerts" not in filters
    # alert_intake's side (it sets origin=webhook): tests/functions/rollback/test_webhook_origin.py


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


def test_migrate_selects_the_ci_triggers_builds_and_matches_the_retry_policy() -> None:
    """An empty selector selects nothing: without this, production would skip every build.
    Selection is by trigger id (a manual build can name any _SERVICE); services narrow."""
    env = FUNCS["migrate"]["env"]
    assert env["MIGRATE__SELECTOR"] == "${local.migrate_selector}"
    selector = TF.locals["migrate_selector"]
    assert "trigger_ids = local.migrate_trigger_ids" in selector
    assert "services = var.managed_services" in selector
    assert "length(local.migrate_trigger_ids) == 0 ? jsonencode({})" in selector
    triggers = TF.locals["migrate_trigger_ids"]
    assert "google_cloudbuild_trigger.ci.trigger_id" in triggers
    assert "var.migrate_trigger_ids" in triggers
    assert "var.max_delivery_attempts" in env["MIGRATE__MAX_DELIVERY_ATTEMPTS"]


def test_no_account_holds_a_primitive_or_authoritative_role() -> None:
    for kind, name, body in TF.iam_members():
        assert not kind.endswith(("_iam_binding", "_iam_policy")), (
            f"{kind}.{name}: authoritative IAM would remove grants made elsewhere"
        )
        assert body["role"] not in PRIMITIVE, f"{kind}.{name} grants {body['role']}"
        custom = re.fullmatch(r"\$\{google_project_iam_custom_role\.(\w+)\.name\}", body["role"])
        assert body["role"].startswith("roles/") or (
            custom and custom.group(1) in TF.of_type("google_project_iam_custom_role")
        ), f"{kind}.{name} grants {body['role']}"


def test_function_accounts_hold_only_the_issues_roles_each_where_it_says() -> None:
    seen_roles = set()
    for kind, name, body in TF.iam_members():
        if ("google_service_account", "fn") not in references(body.get("member", "")):
            continue
        role = body["role"]
        seen_roles.add(role)
        assert role in ALLOWED_FUNCTION_ROLES, f"{kind}.{name} gives a function {role}"
        if role == ROLLBACK_TRAFFIC:
            assert kind == "google_cloud_run_v2_service_iam_member"
            assert body["for_each"] == "${local.cloud_run_managers}"
        if role == ACT_AS_RUNTIME:
            assert kind == "google_service_account_iam_member"
            assert "var.managed_services_runtime_service_account" in body["service_account_id"]
            assert "length(f.moves_traffic_for) > 0" in body["for_each"]
        if role == "roles/pubsub.publisher":
            assert kind == "google_pubsub_topic_iam_member"
            assert body["for_each"] == "${local.function_publishes}"
        if role == "roles/secretmanager.secretAccessor":
            assert kind == "google_secret_manager_secret_iam_member"
        if role in {CONSOLE_READ, "roles/pubsub.subscriber"}:
            assert body["member"] == '${google_service_account.fn["console"].member}', name
        if role == "roles/logging.viewAccessor":
            assert (kind, name) == (
                "google_logging_log_view_iam_member",
                "canary_reads_request_logs",
            )
            assert body["member"] == '${google_service_account.fn["canary"].member}'
        if role == "roles/monitoring.viewer":
            assert (kind, name) == ("google_project_iam_member", "canary_reads_metrics")
            assert body["member"] == '${google_service_account.fn["canary"].member}'
        if role.startswith("roles/storage."):  # tests/infra/test_backup_wiring.py
            assert kind == "google_storage_bucket_iam_member"
            assert body["bucket"] == "${google_storage_bucket.backups.name}"
        if role == "roles/monitoring.metricWriter":
            assert (kind, name) == ("google_project_iam_member", "backup_drill_writes_metric")
            assert body["member"] == '${google_service_account.fn["backup_drill"].member}'
    assert seen_roles == ALLOWED_FUNCTION_ROLES


# --- Cloud Run: custom roles with exactly the permissions used (docs/deploy.md) ----------

# Each call mapped to its permission: rollback (shared/rollback/_cloudrun.py) GetService,
# ListRevisions, UpdateService, GetOperation; the deploy build (`sightops deploy`,
# shared/deploy/_cloudrun.py) GetService, UpdateService, GetOperation, GetRevision and,
# for the promotion through rollback's adapter, ListRevisions. Updating a service names its
# runtime account: actAs on it.
EXPECTED_CUSTOM_ROLES = {
    "rollback_traffic": {
        "run.services.get",
        "run.revisions.list",
        "run.services.update",
        "run.operations.get",
    },
    "deploy_release": {
        "run.services.get",
        "run.services.update",
        "run.revisions.get",
        "run.revisions.list",
        "run.operations.get",
    },
    "act_as_runtime": {"iam.serviceAccounts.actAs"},
    # the console: GetService and ListRevisions, the traffic split it shows
    "console_read": {"run.services.get", "run.revisions.list"},
}
RUNTIME_SA = (
    "projects/${var.project_id}/serviceAccounts/${var.managed_services_runtime_service_account}"
)


def test_no_predefined_cloud_run_role_but_invoker_is_bound_anywhere() -> None:
    """run.developer/admin let an account create and delete services and jobs."""
    for kind, name, body in TF.iam_members():
        role = body["role"]
        if role.startswith("roles/run."):
            assert role == "roles/run.invoker", f"{kind}.{name} grants {role}"
        assert role != "roles/iam.serviceAccountUser", f"{kind}.{name}: use act_as_runtime"


def test_cloud_run_custom_roles_hold_exactly_the_permissions_used() -> None:
    roles = TF.of_type("google_project_iam_custom_role")
    assert {name: set(body["permissions"]) for name, body in roles.items()} == (
        EXPECTED_CUSTOM_ROLES
    )
    for name, body in roles.items():
        assert body["project"] == "${var.project_id}"
        assert re.fullmatch(r"sightops[A-Z][A-Za-z]+", body["role_id"]), name
        assert len(body["permissions"]) == len(set(body["permissions"])), name
    granted = set().union(*EXPECTED_CUSTOM_ROLES.values())
    assert "run.services.create" not in granted and "run.services.delete" not in granted


def test_each_custom_role_is_bound_to_its_account_on_its_resource_only() -> None:
    bindings: dict[str, list[tuple[str, str, dict]]] = {}
    for kind, name, body in TF.iam_members():
        custom = re.fullmatch(r"\$\{google_project_iam_custom_role\.(\w+)\.name\}", body["role"])
        if custom:
            bindings.setdefault(custom.group(1), []).append((kind, name, body))
    assert set(bindings) == set(EXPECTED_CUSTOM_ROLES), "a custom role nobody holds"

    # rollback: on each managed service, through local.cloud_run_managers (rollback only).
    [(kind, _, body)] = bindings["rollback_traffic"]
    assert kind == "google_cloud_run_v2_service_iam_member"
    assert body["for_each"] == "${local.cloud_run_managers}"
    assert body["name"] == "${each.value.service}"
    assert body["member"] == "${google_service_account.fn[each.value.function].member}"
    assert "f.moves_traffic_for" in TF.locals["cloud_run_managers"]

    # deploy build: on each managed service, its own account.
    [(kind, _, body)] = bindings["deploy_release"]
    assert kind == "google_cloud_run_v2_service_iam_member"
    assert body["for_each"] == "${toset(var.managed_services)}"
    assert body["member"] == "${google_service_account.deploy.member}"

    # console: read-only, on each managed service, its own account.
    [(kind, _, body)] = bindings["console_read"]
    assert kind == "google_cloud_run_v2_service_iam_member"
    assert body["for_each"] == "${toset(var.managed_services)}"
    assert body["member"] == '${google_service_account.fn["console"].member}'

    # actAs: on the runtime account alone, for rollback and the deploy build.
    members = set()
    for kind, _, body in bindings["act_as_runtime"]:
        assert kind == "google_service_account_iam_member"
        assert body["service_account_id"] == RUNTIME_SA
        members.add(body["member"])
    assert members == {
        "${google_service_account.fn[each.key].member}",
        "${google_service_account.deploy.member}",
    }


def test_nobody_holds_cloudsql_client_and_no_function_has_a_project_grant() -> None:
    """Connections go to the private IP via the VPC connector (no Cloud SQL connector).
    Cloud Trace and Cloud Monitoring have no resource below the project to grant on: the
    span writer (every function) and the canary's metrics reader are the only exceptions."""
    for kind, name, body in TF.iam_members():
        assert body["role"] != "roles/cloudsql.client", f"{kind}.{name}"
        if (kind, name) == ("google_project_iam_member", "canary_reads_metrics"):
            continue  # tests/infra/test_canary_wiring.py
        if (kind, name) == ("google_project_iam_member", "backup_drill_writes_metric"):
            continue  # tests/infra/test_backup_wiring.py
        if kind == "google_project_iam_member" and body["role"] != "roles/cloudtrace.agent":
            # the one exception: Cloud Trace is granted per project only (docs/release.md)
            assert ("google_service_account", "fn") not in references(body.get("member", ""))
            assert ("google_service_account", "fn") not in references(str(body.get("for_each")))


def test_functions_and_the_deploy_may_only_write_spans_at_project_level() -> None:
    grants = [
        (name, body)
        for kind, name, body in TF.iam_members()
        if kind == "google_project_iam_member" and body["role"] == "roles/cloudtrace.agent"
    ]
    assert [name for name, _ in grants] == ["trace_writer"]
    refs = references(str(grants[0][1]["for_each"]))
    assert ("google_service_account", "fn") in refs
    assert ("google_service_account", "deploy") in refs
    assert all("cloudsql" not in fn for fn in FUNCS.values())


def test_only_rollback_and_canary_move_traffic_and_publishers_are_as_designed() -> None:
    movers = {
        name: fn["moves_traffic_for"] for name, fn in FUNCS.items() if fn["moves_traffic_for"]
    }
    assert movers == {
        "rollback": "${var.managed_services}",
        "canary": "${keys(var.canary_services)}",  # the opted-in services only
        # Slack's buttons run the CLI's rollback and canary commands (docs/console.md)
        "slack_actions": "${var.managed_services}",
    }
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


def test_each_event_driven_function_has_its_own_push_identity_invoking_only_it() -> None:
    """Least privilege: one push identity per function, invoker on that function alone."""
    account = TF.resource("google_service_account", "push")
    assert account["for_each"] == "${local.pubsub_functions}"
    assert "each.key" in account["account_id"]
    longest = max(len(f"sightops-push-{name.replace('_', '-')}") for name in FUNCS)
    assert longest <= 30, "service account ids are at most 30 characters"
    invoker = TF.resource("google_cloud_run_v2_service_iam_member", "push_invoker")
    assert invoker["member"] == "${google_service_account.push[each.key].member}"
    assert "google_cloudfunctions2_function.fn[each.key]" in invoker["name"]
    mint = TF.resource("google_service_account_iam_member", "pubsub_mints_push_tokens")
    assert mint["for_each"] == "${local.pubsub_functions}"
    assert mint["service_account_id"] == "${google_service_account.push[each.key].name}"
    assert mint["role"] == "roles/iam.serviceAccountTokenCreator"
    assert mint["member"] == "${local.pubsub_service_agent}"
    # Whatever else holds run.invoker is one of the documented callers, each on one function.
    for kind, name, body in TF.iam_members():
        if body["role"] != "roles/run.invoker" or name == "push_invoker":
            continue
        assert ("google_service_account", "push") not in references(body["member"]), name
        target = re.search(r'fn\["([a-z_]+)"\]', body["name"])
        assert target, f"{kind}.{name} grants run.invoker on more than one function"


POLICIES = TF.of_type("google_monitoring_alert_policy")


def test_the_four_platform_alert_policies_exist() -> None:
    sight = ("error_rate_5xx", "latency_p95", "db_connections", "memory")
    metrics = {name: str(POLICIES[name]["conditions"]) for name in sight}
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
    """Requests and latency of Sight's managed services: a bad release, which rollback
    fixes. The same metrics of sight-ops' own functions (watch.tf) are not: rollback would
    try to move traffic on a function."""
    labels = POLICIES[name]["user_labels"]
    metric = str(POLICIES[name]["conditions"])
    rollback_helps = ("request_count" in metric or "request_latencies" in metric) and (
        "local.managed_services_filter" in metric
    )
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


def test_no_secret_value_is_ever_read_into_terraform_state() -> None:
    """A data source on a secret version, or a channel built from one, puts the value in
    state in plain text. The webhook channel is created with gcloud and passed by name."""
    assert "google_secret_manager_secret_version" not in TF.data
    channels = TF.of_type("google_monitoring_notification_channel")
    assert set(channels) == {"pubsub"}
    for path in sorted((ROOT / "terraform").glob("*.tf")):
        text = path.read_text()
        assert "sensitive_labels" not in text, path.name
        assert "data.google_secret_manager_secret_version" not in text, path.name
        for line in text.splitlines():
            if "secret_data" in line and not line.lstrip().startswith("#"):
                assert "file(" in line, f"{path.name}: {line.strip()}"
    assert "var.alert_webhook_channel" in str(TF.locals["alert_channels"])
    validation = first(TF.variables["alert_webhook_channel"]["validation"])["condition"]
    assert "var.alert_webhook_enabled" in validation, "a channel to an internal-only function"
    deploy = (ROOT / "docs" / "deploy.md").read_text()
    assert "gcloud beta monitoring channels create" in deploy
    assert "alert_webhook_channel" in deploy


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


def test_scheduler_asks_kpi_refresh_to_prune_hourly_in_the_shape_it_accepts() -> None:
    """Pruning rides on kpi-refresh (docs/schema.md, "Pruning"): its consumer must parse it."""
    from shared.housekeeping import PRUNE_REQUESTED, parse_prune_request

    job = TF.resource("google_cloud_scheduler_job", "prune")
    target = first(job["pubsub_target"])
    assert 'google_pubsub_topic.topic["kpi-refresh"]' in target["topic_name"]
    assert "kpi-refresh" in FUNCS["kpi_refresh"]["topics"]
    attributes = target["attributes"]
    assert attributes["type"] == PRUNE_REQUESTED
    assert "id" not in attributes, "a fixed id would make every run after the first a duplicate"
    assert "jsonencode({})" in target["data"]
    assert parse_prune_request(b"{}", attributes).dry_run is False
    assert job["schedule"] == "${var.prune_schedule}"
    assert len(TF.variables["prune_schedule"]["default"].split()) == 5


def _yaml_substitutions(name: str) -> dict[str, str]:
    import yaml

    return dict(yaml.safe_load((ROOT / name).read_text())["substitutions"])


@pytest.mark.parametrize(
    ("trigger", "file"), [("ci", "cloudbuild.yaml"), ("deploy", "cloudbuild-deploy.yaml")]
)
def test_triggers_pass_every_project_specific_substitution(trigger: str, file: str) -> None:
    """A YAML default naming a region or repository is only right for one project: the
    trigger must override it (the deploy trigger once resolved images in a hard-coded repo)."""
    passed = TF.resource("google_cloudbuild_trigger", trigger)["substitutions"]
    for key, default in _yaml_substitutions(file).items():
        if "docker.pkg.dev" in str(default) or key in {"_IMAGE_REPO", "_REGION"}:
            if trigger == "ci" and key == "_REGION":
                continue  # cloudbuild.yaml has no _REGION
            assert key in passed, f"{trigger} trigger leaves {key} at {default!r}"
    assert passed["_IMAGE_REPO"] == "${local.image_repo}"
    assert "google_artifact_registry_repository.images" in TF.locals["image_repo"]


def test_build_triggers_ci_on_push_and_deploy_on_migration_succeeded() -> None:
    triggers = TF.of_type("google_cloudbuild_trigger")
    ci, deploy = triggers["ci"], triggers["deploy"]
    assert ci["filename"] == "cloudbuild.yaml"
    assert first(first(ci["github"])["push"])["branch"] == "${var.ci_branch_regex}"
    assert 'google_pubsub_topic.topic["ops-events"]' in first(deploy["pubsub_config"])["topic"]
    assert first(deploy["git_file_source"])["path"] == "cloudbuild-deploy.yaml"
    assert deploy["substitutions"]["_EVENT_TYPE"] == "$(body.message.attributes.type)"
    # migration.succeeded with well-formed values only (tests/infra/test_deploy_pipeline.py).
    assert deploy["filter"] == "${local.deploy_filter}"
    deploy_filter = TF.locals["deploy_filter"]
    conditions = re.findall(r'"(_[A-Z_]+)\.matches\(', deploy_filter)
    assert conditions == ["_EVENT_TYPE", "_COMMIT_SHA", "_SERVICE", "_BUILD_ID"]
    assert "_EVENT_TYPE.matches('^sight[.]ops[.]migration[.]succeeded$')" in deploy_filter
    assert 'join(" && "' in deploy_filter
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


# --- scaling: delivery attempts and database connections ---------------------------------


def test_migrate_scales_past_one_instance_so_pushes_never_meet_a_busy_429() -> None:
    """Every build publishes to cloud-builds; with one single-request instance busy for up
    to 540 s, Cloud Run answers 429 and each 429 costs a delivery attempt migrate never
    sees. Several instances, one run each: the advisory lock serialises, its bounded wait
    answers 503 inside the function (where attempts are counted) before the timeout."""
    from shared.settings import MigrateConfig

    migrate = FUNCS["migrate"]
    assert migrate["concurrency"] == 1
    assert 3 <= migrate["max_instances"] <= 5
    assert MigrateConfig().lock_wait_s < migrate["timeout_seconds"]


def _connections(fn: dict) -> int:
    return int(fn["max_instances"]) * (
        int(fn["db_pool_size"]) + int(fn["db_max_overflow"]) + int(fn["db_extra_sessions"])
    )


def test_database_connections_at_full_scale_out_stay_within_the_budget() -> None:
    budget = TF.variables["db_connection_budget"]["default"]
    max_connections = TF.variables["max_connections"]["default"]
    total = sum(_connections(fn) for fn in FUNCS.values())
    assert total <= budget, {name: _connections(fn) for name, fn in FUNCS.items()}
    # Sight's API shares the instance, and the connections alert fires at 90%.
    assert budget < max_connections * 0.9
    # The same sum is a plan-time precondition, so a tfvars change cannot slip past it.
    assert (
        "f.max_instances * (f.db_pool_size + f.db_max_overflow + f.db_extra_sessions)"
        in (TF.locals["db_connections"])
    )
    conditions = [
        p["condition"]
        for p in first(TF.resource("google_cloudfunctions2_function", "fn")["lifecycle"])[
            "precondition"
        ]
    ]
    assert "${local.db_connections <= var.db_connection_budget}" in conditions
    validation = first(TF.variables["db_connection_budget"]["validation"])["condition"]
    assert "var.max_connections" in validation


@pytest.mark.parametrize("name", sorted(FUNCS))
def test_each_function_sets_its_pool_from_its_concurrency(name: str) -> None:
    from shared.settings import Settings

    fn = FUNCS[name]
    pool, overflow = int(fn["db_pool_size"]), int(fn["db_max_overflow"])
    if not any(SECRETS[key]["env"] == "DATABASE_URL" for key in fn["secrets"]):
        assert pool == overflow == int(fn["db_extra_sessions"]) == 0
        return
    assert pool >= 1, "SQLAlchemy reads pool_size=0 as no limit at all"
    if fn["trigger"] == "pubsub":
        # Each in-flight delivery holds its receipt transaction's connection.
        assert pool + overflow >= fn["concurrency"], name
    # The values reach Settings through env (env names are Settings fields).
    assert {"db_pool_size", "db_max_overflow"} <= set(Settings.model_fields)
    db_env = TF.locals["db_env"]
    assert "DB_POOL_SIZE = f.db_pool_size" in db_env and "DB_MAX_OVERFLOW" in db_env
    service = first(TF.resource("google_cloudfunctions2_function", "fn")["service_config"])
    assert "local.db_env[each.key]" in service["environment_variables"]


def test_the_check_infra_cache_key_covers_what_these_tests_import() -> None:
    """A Settings or event-parser change must rerun the wiring tests, not hit the cache."""
    script = (ROOT / "scripts" / "check_infra.sh").read_text()
    key = script[script.index("wiring_inputs=(") : script.index("check terraform-wiring")]
    imported: set[str] = set()
    for test in (ROOT / "tests" / "infra").glob("*.py"):
        imported |= set(
            re.findall(r"from ((?:shared|sightops)(?:\.\w+)+) import", test.read_text())
        )
    assert imported
    # Directories whose every .py file is part of the key (the `find` line).
    found = key[key.index("find ") : key.index("-type f")]
    directories = [d for d in found.split() if "/" in d or d.isidentifier()]
    for module in sorted(imported):
        path = module.replace(".", "/")
        as_file, as_package = f"{path}.py", path
        assert (
            as_file in key
            or f" {as_package} " in key
            or f" {as_package}/" in key
            or any(path.startswith(f"{d}/") for d in directories)
        ), module
    for name in ("cloudbuild.yaml", "cloudbuild-deploy.yaml", "docs/deploy.md"):
        assert name in key


def test_kpi_is_invoked_only_by_the_dashboards_service_accounts() -> None:
    """docs/kpi.md, "Calling it": Cloud Run IAM with an ID token, no public access; the
    only invokers are the service accounts in kpi_invoker_members (the dashboard's)."""
    invoker = TF.resource("google_cloud_run_v2_service_iam_member", "kpi_invoker")
    assert invoker["for_each"] == "${toset(var.kpi_invoker_members)}"
    assert invoker["member"] == "${each.value}"
    assert invoker["role"] == "roles/run.invoker"
    assert 'fn["kpi"]' in invoker["name"]
    for kind, name, body in TF.iam_members():
        if 'fn["kpi"]' in str(body.get("name", "")):
            assert (kind, name) == ("google_cloud_run_v2_service_iam_member", "kpi_invoker")

    variable = TF.variables["kpi_invoker_members"]
    assert variable["default"] == [], "no invoker unless one is named"
    (validation,) = variable["validation"]
    literal = re.search(r'regex\("((?:[^"\\]|\\.)*)"', validation["condition"])
    assert literal, validation["condition"]
    admitted = re.compile(literal[1].encode().decode("unicode_escape"))  # HCL string escapes
    assert admitted.search("serviceAccount:sight-api@sight-prod.iam.gserviceaccount.com")
    for member in (
        "allUsers",
        "allAuthenticatedUsers",
        "user:ana@example.com",
        "group:ops@example.com",
        "domain:example.com",
        "serviceAccount:someone@example.com",
        "serviceAccount:allUsers",
    ):
        assert not admitted.search(member), member
    example = (ROOT / "terraform" / "terraform.tfvars.example").read_text()
    assert re.search(r'kpi_invoker_members\s*=\s*\["serviceAccount:[^"]+"\]', example)
