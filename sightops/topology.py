"""Which function consumes which topic: one table for `make dev`, tests and docs.

Every push subscription gets a dead-letter topic and a bounded retry policy, as in
production (terraform/ declares the same wiring).
"""

from __future__ import annotations

from dataclasses import dataclass

#: ``billing-budget`` is where the monthly budget publishes its spend (terraform/guardrails.tf);
#: ``maintenance`` carries Cloud Scheduler's daily request to maintain (terraform/maintain.tf).
#: ``backup-requests`` carries backup and drill requests (terraform/backup.tf, docs/backups.md).
TOPICS = (
    "cloud-builds",
    "smoke-tests",
    "monitoring-alerts",
    "ops-events",
    "kpi-refresh",
    "billing-budget",
    "maintenance",
    "backup-requests",
)


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    port: int
    signature: str  # "cloudevent" or "http"
    topics: tuple[str, ...] = ()
    source: str | None = None  # functions/<source>/main.py; None: the function's name

    @property
    def source_dir(self) -> str:
        return self.source or self.name


FUNCTIONS: tuple[FunctionSpec, ...] = (
    FunctionSpec(
        "notify",
        8801,
        "cloudevent",
        ("cloud-builds", "smoke-tests", "ops-events", "monitoring-alerts", "billing-budget"),
    ),
    FunctionSpec("migrate", 8802, "cloudevent", ("cloud-builds",)),
    FunctionSpec("alert_intake", 8804, "http"),
    FunctionSpec(
        "rollback", 8803, "cloudevent", ("smoke-tests", "monitoring-alerts", "ops-events")
    ),
    FunctionSpec("kpi", 8805, "http"),
    FunctionSpec("kpi_refresh", 8806, "cloudevent", ("kpi-refresh",), source="kpi"),
    FunctionSpec("canary", 8807, "cloudevent", ("ops-events",)),
    # the release console's pages (docs/console.md); its base URL is in every Slack link
    FunctionSpec("console", 8810, "http"),
    # Slack's Request URL for the buttons (public in production: signed requests only)
    FunctionSpec("slack_actions", 8811, "http", source="console"),
    FunctionSpec("maintain", 8808, "cloudevent", ("maintenance",)),
    FunctionSpec("backup", 8809, "cloudevent", ("backup-requests",)),
    FunctionSpec("backup_drill", 8812, "cloudevent", ("backup-requests",), source="backup"),
)

#: Pub/Sub subscription filters by (function, topic); terraform/pubsub.tf declares the same.
#: rollback never sees what alert_intake publishes (``origin=webhook``): only incidents from
#: the Pub/Sub notification channel may move traffic (docs/rollback.md). The emulator
#: (0.8.20) stores a filter but does not apply it; rollback's handler skips webhook
#: incidents as well, so the local stack behaves the same.
#: rollback reads ``ops-events`` only for the ledger's release rows (docs/rollback.md,
#: "Ledger rows"); its handler skips every other type too.
#: canary reads ``ops-events`` for its requests and ticks (docs/canary.md); its handler
#: skips every other type, its own results among them.
#: notify never gets the canary's tick: Cloud Scheduler sends it every minute without the
#: ``id`` and ``time`` attributes notify's parser requires (terraform/canary.tf).
#: backup and backup_drill share ``backup-requests``: the ``kind`` attribute gives each its
#: kind of request (docs/backups.md); their handler skips the other's as well.
SUBSCRIPTION_FILTERS: dict[tuple[str, str], str] = {
    ("rollback", "monitoring-alerts"): "NOT attributes:origin",
    ("rollback", "ops-events"): 'hasPrefix(attributes.type, "sight.ops.release.")',
    ("canary", "ops-events"): 'hasPrefix(attributes.type, "sight.ops.canary.")',
    ("notify", "ops-events"): 'attributes.type != "sight.ops.canary.tick"',
    ("backup", "backup-requests"): 'attributes.kind != "drill"',
    ("backup_drill", "backup-requests"): 'attributes.kind = "drill"',
}

MAX_DELIVERY_ATTEMPTS = 5
MIN_BACKOFF_S = 1
MAX_BACKOFF_S = 60


def subscription_name(function: str, topic: str) -> str:
    return f"{function}--{topic}"


def subscription_filter(function: str, topic: str) -> str | None:
    return SUBSCRIPTION_FILTERS.get((function, topic))


def dead_letter_topic(function: str, topic: str) -> str:
    return f"{subscription_name(function, topic)}--dead-letter"


def dead_letter_hold(function: str, topic: str) -> str:
    """The pull subscription where dead letters wait (terraform/pubsub.tf
    ``dead_letter_hold``: named like its topic); `sightops dlq` reads it."""
    return dead_letter_topic(function, topic)


def consumed_topics() -> dict[str, tuple[str, ...]]:
    """Consumer (function name) -> the topics it is subscribed to."""
    return {fn.name: fn.topics for fn in FUNCTIONS if fn.topics}


def push_endpoint(host: str, port: int, project: str, topic: str) -> str:
    """functions-framework takes the topic for the CloudEvent source from this path."""
    return f"http://{host}:{port}/projects/{project}/topics/{topic}"
