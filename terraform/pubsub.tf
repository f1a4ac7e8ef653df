# Topics, and one push subscription per (function, topic) it consumes, each with its own
# dead-letter topic and a bounded exponential retry policy (docs/architecture.md).
#
# Why explicit push subscriptions rather than Eventarc triggers: an Eventarc Pub/Sub trigger
# creates and owns its subscription, which cannot be given a dead-letter policy, and a gen2
# function takes a single trigger while notify consumes four topics. Pushing straight to the
# function's URL with an OIDC token gives every subscription a dead-letter topic, a retry
# policy and a name we choose (the same names `make dev` uses, sightops/topology.py).
# functions-framework turns the raw push body into the same CloudEvent Eventarc would send
# (the topic comes from the push path /projects/P/topics/T). docs/deploy.md has the details.

locals {
  # Topics we own. `cloud-builds` is where Cloud Build publishes (google_pubsub_topic.cloud_builds);
  # `billing-budget` is where the budget publishes its spend updates (guardrails.tf).
  # `maintenance` carries Cloud Scheduler's daily request to maintain (maintain.tf).
  topics = toset(["smoke-tests", "monitoring-alerts", "ops-events", "kpi-refresh", "billing-budget", "maintenance", "backup-requests"])

  topic_ids = merge(
    { for t in local.topics : t => google_pubsub_topic.topic[t].id },
    { "cloud-builds" = google_pubsub_topic.cloud_builds.id },
  )

  # "<function>--<topic>" -> which function consumes which topic.
  subscriptions = {
    for pair in flatten([
      for fn, f in local.pubsub_functions : [for t in f.topics : { function = fn, topic = t }]
    ]) : "${pair.function}--${pair.topic}" => pair
  }

  # Subscription filters (the same table as SUBSCRIPTION_FILTERS in sightops/topology.py).
  # rollback moves traffic only on incidents from the Pub/Sub notification channel, never
  # on the copies alert_intake publishes (attribute origin=webhook, set by our code):
  # the webhook is reachable with a shared password (docs/rollback.md). notify still gets
  # both. A filter cannot be changed in place: changing it replaces the subscription.
  subscription_filters = {
    "rollback--monitoring-alerts" = "NOT attributes:origin"
    # rollback records the release.* events in the ledger (docs/rollback.md, "Ledger rows")
    # and needs nothing else from ops-events.
    "rollback--ops-events" = "hasPrefix(attributes.type, \"sight.ops.release.\")"
    # The canary takes its requests and the ticks of its scheduler job (canary.tf); its
    # handler skips its own decisions, which it publishes here too.
    "canary--ops-events" = "hasPrefix(attributes.type, \"sight.ops.canary.\")"
    # The tick, every minute, is the canary's alarm clock, not news; Cloud Scheduler sends
    # it without the id and time attributes notify's strict parser requires.
    "notify--ops-events" = "attributes.type != \"sight.ops.canary.tick\""
    # backup and backup_drill share backup-requests; the kind attribute (set by the
    # scheduler jobs and by backup's drill request) gives each its own (backup.tf).
    "backup--backup-requests"       = "attributes.kind != \"drill\""
    "backup_drill--backup-requests" = "attributes.kind = \"drill\""
  }
}

# Cloud Build publishes build updates to `cloud-builds` but does not create it (its docs:
# create the topic). Managed here so a new project gets it; where it already exists,
# import it before the first apply (docs/deploy.md):
#   terraform -chdir=terraform import google_pubsub_topic.cloud_builds projects/PROJECT/topics/cloud-builds
# Other subscribers in the project may read it too: never destroyed by this stack.
resource "google_pubsub_topic" "cloud_builds" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption, as for our topics; Cloud Build publishes here and a CMEK key would have to grant its agent too.
  name = "cloud-builds"

  lifecycle {
    prevent_destroy = true
  }

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "topic" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption; messages carry build/alert metadata, no secrets or personal data, and CMEK would couple every publish to a KMS key.
  for_each = local.topics

  name                       = each.key
  message_retention_duration = "604800s" # 7 days: replay after an outage (seek)

  depends_on = [google_project_service.api]
}

resource "google_pubsub_topic" "dead_letter" {
  #checkov:skip=CKV_GCP_83:Google-managed encryption, as for the source topics.
  for_each = local.subscriptions

  name                       = "${each.key}--dead-letter"
  message_retention_duration = "604800s"
  labels                     = { role = "dead-letter", function = replace(each.value.function, "_", "-") }

  depends_on = [google_project_service.api]
}

resource "google_pubsub_subscription" "push" {
  for_each = local.subscriptions

  name                       = each.key
  topic                      = local.topic_ids[each.value.topic]
  ack_deadline_seconds       = min(600, google_cloudfunctions2_function.fn[each.value.function].service_config[0].timeout_seconds)
  message_retention_duration = "604800s"
  labels                     = { role = "push", function = replace(each.value.function, "_", "-") }
  filter                     = lookup(local.subscription_filters, each.key, null)

  push_config {
    # The path names the topic: functions-framework builds the CloudEvent source from it.
    push_endpoint = "${google_cloudfunctions2_function.fn[each.value.function].service_config[0].uri}/projects/${var.project_id}/topics/${each.value.topic}"

    oidc_token {
      service_account_email = google_service_account.push[each.value.function].email
      audience              = google_cloudfunctions2_function.fn[each.value.function].service_config[0].uri
    }
  }

  retry_policy {
    minimum_backoff = "${var.retry_backoff_seconds.minimum}s"
    maximum_backoff = "${var.retry_backoff_seconds.maximum}s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter[each.key].id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expire for inactivity
  }

  depends_on = [
    google_cloud_run_v2_service_iam_member.push_invoker,
    google_service_account_iam_member.pubsub_mints_push_tokens,
  ]
}

# A topic without a subscription drops what it receives: each dead-letter topic gets a
# pull subscription that keeps messages 7 days for the runbook
# (docs/runbooks/rejected-and-dead-lettered-messages.md). It is the end of the line, so it
# has no dead-letter policy of its own.
resource "google_pubsub_subscription" "dead_letter_hold" {
  for_each = local.subscriptions

  name                       = "${each.key}--dead-letter"
  topic                      = google_pubsub_topic.dead_letter[each.key].id
  ack_deadline_seconds       = 60
  message_retention_duration = "604800s"
  retain_acked_messages      = true
  labels                     = { role = "dead-letter-hold", function = replace(each.value.function, "_", "-") }

  expiration_policy {
    ttl = ""
  }
}

# --- what the Pub/Sub service agent needs for dead-lettering and authenticated push ---------

resource "google_pubsub_topic_iam_member" "pubsub_agent_publishes_dead_letters" {
  for_each = local.subscriptions

  topic  = google_pubsub_topic.dead_letter[each.key].id
  role   = "roles/pubsub.publisher"
  member = local.pubsub_service_agent
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_acks_dead_letters" {
  for_each = local.subscriptions

  subscription = google_pubsub_subscription.push[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = local.pubsub_service_agent
}

resource "google_service_account_iam_member" "pubsub_mints_push_tokens" {
  for_each = local.pubsub_functions

  service_account_id = google_service_account.push[each.key].name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = local.pubsub_service_agent
}
