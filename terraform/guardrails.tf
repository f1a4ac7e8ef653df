# Sight's resource and cost guardrails (issue 17; docs/observability.md): the seed's targets
# enforced by policies instead of remembered. Each policy notifies local.alert_channels,
# links its runbook and sends open and close notifications, like monitoring.tf's; none is
# auto_rollback (moving traffic frees no memory, disk, connection or money).
#
#   Redis memory        < 2 GB        alert above 80 % of the instance's maxmemory
#   database storage    < 10 GB       alert above 8 GB on disk
#   connection pool use < 70 %        alert above 70 % of max_connections (90 %: monitoring.tf)
#   Cloud Run cost      < $200/month  budget with 50/90/100 % thresholds, published to notify
#   log retention       30 days       the _Default log bucket

locals {
  redis_memory_alert_ratio  = 0.8
  cloudsql_disk_alert_bytes = 8000000000 # 8 GB (decimal, as Cloud SQL bills storage)
  db_connections_alert_pct  = 70
  log_retention_days        = 30
  cloudsql_database_id      = "${var.project_id}:${var.cloudsql_instance}"
  redis_instance_id         = "projects/${var.project_id}/locations/${var.region}/instances/${var.redis_instance}"
}

# --- Redis (Memorystore) ----------------------------------------------------------------------

# usage_ratio is used memory over maxmemory: at 1.0 Redis evicts (allkeys-lru) or refuses
# writes (noeviction), and the KPI cache and notify's alert groups live there.
resource "google_monitoring_alert_policy" "redis_memory" {
  display_name = "Sight Redis memory above 80%"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook = "alert-redis-memory"
  }

  conditions {
    display_name = "Memorystore memory usage above 80% of maxmemory for 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"redis_instance\" AND metric.type = \"redis.googleapis.com/stats/memory/usage_ratio\" AND resource.label.instance_id = \"${local.redis_instance_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = local.redis_memory_alert_ratio
      duration        = "600s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.instance_id"]
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
    subject   = "[$${policy.display_name}] ${var.redis_instance} memory above 80%"
    content   = <<-EOT
      Memorystore instance **${var.redis_instance}** uses more than 80% of its maxmemory.
      At 100% Redis evicts keys or refuses writes: KPI cache entries and notify's alert
      groups are lost or fail. The seed's target is under 2 GB.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-redis-memory.md
    EOT
  }
}

# --- Cloud SQL --------------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "cloudsql_disk" {
  display_name = "Sight database disk above 8 GB"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook = "alert-cloudsql-disk"
  }

  conditions {
    display_name = "Cloud SQL disk bytes used above 8 GB for 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND metric.type = \"cloudsql.googleapis.com/database/disk/bytes_used\" AND resource.label.database_id = \"${local.cloudsql_database_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = local.cloudsql_disk_alert_bytes
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_MEAN"
        cross_series_reducer = "REDUCE_MAX"
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
    subject   = "[$${policy.display_name}] ${var.cloudsql_instance} above 8 GB"
    content   = <<-EOT
      Cloud SQL instance **${var.cloudsql_instance}** uses more than 8 GB of disk (tables,
      indexes, WAL and temporary files). The seed's target is under 10 GB.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-cloudsql-disk.md
    EOT
  }
}

# The seed's "connection pool use under 70 %", measured where every pool meets: PostgreSQL
# backends (Sight's API and sight-ops together) against max_connections. sight-ops' own
# pool gauge (db_pool_checked_out) is a DEBUG log line in production, not a metric.
resource "google_monitoring_alert_policy" "db_connections_70" {
  display_name = "Sight database connections above 70% of max_connections"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook = "alert-connection-pool"
  }

  conditions {
    display_name = "PostgreSQL backends above ${local.db_connections_alert_pct}% of ${var.max_connections} for 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloudsql_database\" AND metric.type = \"cloudsql.googleapis.com/database/postgresql/num_backends\" AND resource.label.database_id = \"${local.cloudsql_database_id}\""
      comparison      = "COMPARISON_GT"
      threshold_value = floor(var.max_connections * local.db_connections_alert_pct / 100)
      duration        = "600s"

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
    subject   = "[$${policy.display_name}] ${var.cloudsql_instance} connections above 70%"
    content   = <<-EOT
      Cloud SQL instance **${var.cloudsql_instance}** has more than 70% of its
      ${var.max_connections} connections in use for 10 minutes (the seed's pool target).
      Not urgent yet: the 90% policy pages before connections are refused.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-connection-pool.md
    EOT
  }
}

# --- cost -------------------------------------------------------------------------------------

# Cloud Billing publishes the budget's state to billing-budget several times a day, whatever
# the thresholds (the message says which threshold was last crossed); notify consumes the
# topic (push subscription notify--billing-budget, pubsub.tf) and posts when a threshold is
# crossed. Budgets use estimated billing data, hours late: a guardrail, never a cap.
resource "google_billing_budget" "monthly" {
  billing_account = var.billing_account
  display_name    = "sight-ops ${var.project_id} monthly" # at most 60 characters: 48 here

  budget_filter {
    projects               = ["projects/${local.project_number}"]
    services               = var.budget.services
    calendar_period        = "MONTH"
    credit_types_treatment = "INCLUDE_ALL_CREDITS"
  }

  amount {
    specified_amount {
      currency_code = var.budget.currency_code
      units         = tostring(var.budget.amount)
    }
  }

  dynamic "threshold_rules" {
    for_each = var.budget.thresholds
    content {
      threshold_percent = threshold_rules.value
      spend_basis       = "CURRENT_SPEND"
    }
  }

  all_updates_rule {
    pubsub_topic   = google_pubsub_topic.topic["billing-budget"].id
    schema_version = "1.0"
    # The billing account's admins keep their e-mails too: notify is one more channel.
    disable_default_iam_recipients = false
  }

  depends_on = [
    google_project_service.api,
    google_pubsub_topic_iam_member.billing_publishes_budget,
  ]
}

# Cloud Billing publishes as this Google-managed identity (it grants itself on connecting a
# topic when the caller may set the topic's IAM policy; declared here so a plan shows it).
resource "google_pubsub_topic_iam_member" "billing_publishes_budget" {
  topic  = google_pubsub_topic.topic["billing-budget"].id
  role   = "roles/pubsub.publisher"
  member = "serviceAccount:billing-budget-alert@system.gserviceaccount.com"
}

# --- logs -------------------------------------------------------------------------------------

# The project's _Default bucket (every log but audit logs, which _Required keeps 400 days)
# keeps entries 30 days: declared, so a console change shows up as drift. Terraform adopts
# the bucket; destroying this resource leaves the bucket and its retention as they are.
resource "google_logging_project_bucket_config" "default" {
  project        = var.project_id
  location       = "global"
  bucket_id      = "_Default"
  retention_days = local.log_retention_days
}
