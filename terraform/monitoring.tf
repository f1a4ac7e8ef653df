# The platform's alert policies and where their incidents go.
#
# Every policy notifies the Pub/Sub channel to `monitoring-alerts` (consumed by notify and,
# for policies labelled auto_rollback=true, by rollback), links its runbook in
# docs/runbooks/, and asks for close notifications too (notify posts "resolved").

locals {
  runbook_base_url = "https://github.com/${var.github_owner}/${var.github_repo}/blob/${var.deploy_branch}"

  managed_services_filter = format(
    "resource.label.service_name = one_of(%s)",
    join(", ", [for s in var.managed_services : "\"${s}\""]),
  )

  alert_channels = concat(
    [google_monitoring_notification_channel.pubsub.id],
    var.alert_webhook_channel == null ? [] : [var.alert_webhook_channel],
    var.alert_notification_channels,
  )

  # Aggregation shared by the request-count ratio: per service and revision, so an incident
  # names the revision rollback acts on.
  per_revision = ["resource.label.service_name", "resource.label.revision_name"]
}

resource "google_monitoring_notification_channel" "pubsub" {
  display_name = "sight-ops monitoring-alerts (Pub/Sub)"
  type         = "pubsub"
  description  = "Publishes incidents to monitoring-alerts for notify and rollback."
  labels = {
    topic = google_pubsub_topic.topic["monitoring-alerts"].id
  }

  depends_on = [google_project_service.api]
}

# The channel publishes as Cloud Monitoring's notification service agent (created with the
# first channel of the project).
resource "google_pubsub_topic_iam_member" "monitoring_agent_publishes_alerts" {
  topic  = google_pubsub_topic.topic["monitoring-alerts"].id
  role   = "roles/pubsub.publisher"
  member = local.monitoring_service_agent

  depends_on = [google_monitoring_notification_channel.pubsub]
}

# Optional: the same incidents as an authenticated webhook to alert_intake
# (alert_webhook_enabled makes it reachable). The webhook_basicauth channel is NOT created
# here: its username/password would be stored in plain text in Terraform state. It is
# created with gcloud from the alert-intake secrets (docs/deploy.md) and passed in by name
# (var.alert_webhook_channel); Terraform never reads a secret value.

# --- policies --------------------------------------------------------------------------------

# 5xx ratio: a bad release shows here first; rolling back to the known-good revision is the
# right response, so rollback acts on it (auto_rollback=true).
resource "google_monitoring_alert_policy" "error_rate_5xx" {
  display_name = "Sight 5xx error rate above 1%"
  combiner     = "OR"
  severity     = "CRITICAL"
  user_labels = {
    auto_rollback = "true"
    runbook       = "alert-5xx-error-rate"
  }

  conditions {
    display_name = "5xx responses above 1% of requests for 5 minutes"

    condition_threshold {
      filter             = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.label.response_code_class = \"5xx\" AND ${local.managed_services_filter}"
      denominator_filter = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_count\" AND ${local.managed_services_filter}"
      comparison         = "COMPARISON_GT"
      threshold_value    = 0.01
      duration           = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = local.per_revision
      }
      denominator_aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = local.per_revision
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.service_name} 5xx above 1%"
    content   = <<-EOT
      More than 1% of requests to **$${resource.label.service_name}** (revision
      $${resource.label.revision_name}) answered 5xx for 5 minutes. sight-ops **rolls
      back automatically** (auto_rollback=true) when this opens within the window after a
      promotion; watch #ops for the rollback event.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-5xx-error-rate.md
    EOT
  }
}

# p95 latency: a slow release is rolled back like a failing one (auto_rollback=true).
resource "google_monitoring_alert_policy" "latency_p95" {
  display_name = "Sight p95 latency above 5 s"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    auto_rollback = "true"
    runbook       = "alert-p95-latency"
  }

  conditions {
    display_name = "p95 request latency above 5 s for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_latencies\" AND ${local.managed_services_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = 5000 # milliseconds
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_95"
        group_by_fields      = local.per_revision
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.service_name} p95 above 5 s"
    content   = <<-EOT
      The 95th percentile latency of **$${resource.label.service_name}** (revision
      $${resource.label.revision_name}) stayed above 5 s for 5 minutes. sight-ops **rolls
      back automatically** (auto_rollback=true) when this opens within the window after a
      promotion.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-p95-latency.md
    EOT
  }
}

# Database connections: a pool leak or a traffic surge. Moving traffic back would not free
# connections, so no auto_rollback: a human decides.
resource "google_monitoring_alert_policy" "db_connections" {
  display_name = "Sight database connections above 90% of max_connections"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "alert-db-connections"
  }

  conditions {
    display_name = "PostgreSQL backends above 90% of ${var.max_connections} for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND metric.type = \"cloudsql.googleapis.com/database/postgresql/num_backends\" AND resource.label.database_id = \"${var.project_id}:${var.cloudsql_instance}\""
      comparison      = "COMPARISON_GT"
      threshold_value = floor(var.max_connections * 0.9)
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_SUM" # num_backends is per database; the limit is per instance
        group_by_fields      = ["resource.label.database_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] Cloud SQL connections near the limit"
    content   = <<-EOT
      Cloud SQL instance **${var.cloudsql_instance}** has more than 90% of its
      ${var.max_connections} connections in use. New connections will soon be refused. No
      automatic rollback: find who holds the connections first.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-db-connections.md
    EOT
  }
}

# Memory: a leak or an undersized limit. Covers every Cloud Run revision of the project
# (the sight-ops functions too). No auto_rollback: the usual fix is a limit, not a revision.
resource "google_monitoring_alert_policy" "memory" {
  display_name = "Cloud Run memory above 80%"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook = "alert-memory"
  }

  conditions {
    display_name = "Container memory utilisation (p99) above 80% for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/container/memory/utilizations\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0.8
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
        group_by_fields      = local.per_revision
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.service_name} memory above 80%"
    content   = <<-EOT
      Containers of **$${resource.label.service_name}** (revision
      $${resource.label.revision_name}) use more than 80% of their memory limit. At 100% they
      are killed mid-request. No automatic rollback.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-memory.md
    EOT
  }
}
