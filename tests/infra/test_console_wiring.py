"""The console's Terraform (issue 15; terraform/console.tf, local.functions.console): no
public invoker, least privilege, and the settings it is deployed with agree with the code
that reads them (docs/console.md, "Production")."""

from __future__ import annotations

import re
from typing import Any

import pytest

from shared.settings import ConsoleConfig
from sightops.topology import FUNCTIONS, dead_letter_hold
from tests.infra.hcl import ROOT, first, load, references

TF = load()
FUNCS: dict[str, dict[str, Any]] = TF.locals["functions"]
CONSOLE = FUNCS["console"]
CONSOLE_MEMBER = '${google_service_account.fn["console"].member}'


def _grants_to_console() -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (kind, name, body)
        for kind, name, body in TF.iam_members()
        if body.get("member") == CONSOLE_MEMBER
    ]


def test_the_console_is_an_http_function_that_publishes_nothing_and_moves_no_traffic() -> None:
    assert (CONSOLE["source"], CONSOLE["entry_point"], CONSOLE["trigger"]) == (
        "console",
        "console",
        "http",
    )
    assert CONSOLE["topics"] == CONSOLE["publishes"] == CONSOLE["moves_traffic_for"] == []
    assert next(fn for fn in FUNCTIONS if fn.name == "console").signature == "http"


def test_nobody_but_the_named_members_may_open_the_console() -> None:
    """No allUsers / allAuthenticatedUsers anywhere on it: Cloud Run IAM is its door."""
    on_console = [
        (kind, name, body)
        for kind, name, body in TF.iam_members()
        if 'fn["console"]' in str(body.get("name", ""))
    ]
    assert [(k, n) for k, n, _ in on_console] == [
        ("google_cloud_run_v2_service_iam_member", "console_invoker")
    ]
    [(_, _, invoker)] = on_console
    assert invoker["for_each"] == "${toset(var.console_invoker_members)}"
    assert invoker["member"] == "${each.value}" and invoker["role"] == "roles/run.invoker"
    variable = TF.variables["console_invoker_members"]
    assert variable["default"] == []
    (validation,) = variable["validation"]
    literal = re.search(r'regex\("((?:[^"\\]|\\.)*)"', validation["condition"])
    assert literal, validation["condition"]
    admitted = re.compile(literal[1].encode().decode("unicode_escape"))
    for member in ("group:sight-oncall@example.com", "user:ana@example.com"):
        assert admitted.search(member), member
    for member in ("allUsers", "allAuthenticatedUsers", "domain:example.com", "group:x"):
        assert not admitted.search(member), member


def test_the_console_account_holds_only_read_grants_each_on_its_resource() -> None:
    grants = {(kind, name): body for kind, name, body in _grants_to_console()}
    assert set(grants) == {
        ("google_cloud_run_v2_service_iam_member", "console_reads_services"),
        ("google_pubsub_subscription_iam_member", "console_reads_dead_letters"),
    }
    services = grants["google_cloud_run_v2_service_iam_member", "console_reads_services"]
    assert services["role"] == "${google_project_iam_custom_role.console_read.name}"
    role = TF.resource("google_project_iam_custom_role", "console_read")
    assert set(role["permissions"]) == {"run.services.get", "run.revisions.list"}
    holds = grants["google_pubsub_subscription_iam_member", "console_reads_dead_letters"]
    assert holds["role"] == "roles/pubsub.subscriber"
    assert ("google_pubsub_subscription", "dead_letter_hold") in references(holds["subscription"])
    # its one secret: the read-only database user's URL, readable by it alone
    assert CONSOLE["secrets"] == ["console_database_url"]
    assert TF.locals["secrets"]["console_database_url"]["env"] == "DATABASE_URL"
    readers = [n for n, f in FUNCS.items() if "console_database_url" in f["secrets"]]
    assert readers == ["console"]
    assert "database_url" not in CONSOLE["secrets"]  # not the read-write user


def test_the_console_and_notify_agree_on_where_release_pages_are() -> None:
    assert CONSOLE["env"]["CONSOLE__BASE_URL"] == "${var.console_url}"
    assert FUNCS["notify"]["env"]["CONSOLE__BASE_URL"] == "${var.console_url}"
    (validation,) = TF.variables["console_url"]["validation"]
    assert 'var.console_url == ""' in validation["condition"]
    assert ConsoleConfig(base_url="").base_url is None  # Terraform's default: no links
    with pytest.raises(ValueError, match="pattern"):
        ConsoleConfig(base_url="https://c.example/a|b")


def test_the_console_reads_every_dead_letter_hold_named_as_the_topology_names_them() -> None:
    holds = CONSOLE["env"]["CONSOLE__DEAD_LETTER_HOLDS"]
    assert "keys(local.subscriptions)" in holds and '--dead-letter"' in holds
    assert TF.resource("google_pubsub_subscription", "dead_letter_hold")["name"] == (
        "${each.key}--dead-letter"
    )
    from shared.console._pages import _holds

    names = [dead_letter_hold(fn.name, t) for fn in FUNCTIONS for t in fn.topics]
    parsed = _holds(names)
    assert [(h.consumer, h.topic) for h in parsed] == [
        (fn.name, t) for fn in FUNCTIONS for t in fn.topics
    ]


def test_the_console_package_is_deployed_with_the_others() -> None:
    body = TF.resource("google_cloudfunctions2_function", "fn")
    assert body["for_each"] == "${local.functions}"
    assert (ROOT / "functions" / "console" / "main.py").is_file()
    service = first(body["service_config"])
    assert "each.value.ingress" in service["ingress_settings"]
    assert CONSOLE["ingress"] == "ALLOW_ALL"  # reachable, but IAM-authenticated


SLACK = FUNCS["slack_actions"]


def test_slack_actions_is_public_only_when_enabled_and_acts_like_the_cli() -> None:
    assert (SLACK["source"], SLACK["entry_point"], SLACK["trigger"]) == (
        "console",
        "slack_actions",
        "http",
    )
    public = TF.resource("google_cloud_run_v2_service_iam_member", "slack_actions_public")
    assert public["count"] == "${var.slack_interactivity_enabled ? 1 : 0}"
    assert public["member"] == "allUsers" and 'fn["slack_actions"]' in public["name"]
    assert TF.variables["slack_interactivity_enabled"]["default"] is False
    assert SLACK["ingress"] == (
        '${var.slack_interactivity_enabled ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"}'
    )
    # the CLI's commands: traffic of the managed services, events on ops-events
    assert SLACK["moves_traffic_for"] == "${var.managed_services}"
    assert SLACK["publishes"] == ["ops-events"]
    assert set(SLACK["secrets"]) == {"database_url", "slack_signing_secret", "slack_bot_token"}
    secrets = TF.locals["secrets"]
    assert secrets["slack_signing_secret"]["env"] == "CONSOLE__SLACK_SIGNING_SECRET"
    assert secrets["slack_bot_token"]["env"] == "CONSOLE__SLACK_BOT_TOKEN"
    assert SLACK["env"]["CONSOLE__SLACK_ALLOWED"] == "${jsonencode(var.slack_allowed)}"
    (validation,) = TF.variables["slack_allowed"]["validation"]
    literal = re.search(r'regex\("((?:[^"\\]|\\.)*)"', validation["condition"])
    assert literal
    admitted = re.compile(literal[1].encode().decode("unicode_escape"))
    assert admitted.search("U012AB3CD") and admitted.search("S0614TZR7")
    assert not admitted.search("allUsers") and not admitted.search("<!here>")
