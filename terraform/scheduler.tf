# Scheduled work: the KPI refresh sweep, the pruning of old receipts and rejected events and
# the weekly release metrics digest (Pub/Sub, all to kpi_refresh), and notify's group flush
# (HTTP). The canary's tick every minute (to ops-events) is in canary.tf, with the canary.

resource "google_service_account" "scheduler" {
  account_id   = "sightops-scheduler"
  display_name = "sight-ops scheduler"
  description  = "OIDC identity of the Cloud Scheduler job that calls notify_flush."
}

# Cloud Scheduler publishes the same data and attributes on every run, so the message has no
# `id` or `time` attribute: kpi_refresh reads it leniently and deduplicates on the Pub/Sub
# message id (docs/kpi.md, "Refresh messages").
resource "google_cloud_scheduler_job" "kpi_refresh" {
  name        = "sightops-kpi-refresh"
  region      = var.region
  description = "Precompute the KPIs of every active project (kpi_refresh)."
  schedule    = var.kpi_refresh_schedule
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["kpi-refresh"].id
    data       = base64encode(jsonencode({ all_active = true }))
    attributes = {
      type   = "sight.ops.kpi.refresh_requested"
      source = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.api]
}

# Pruning rides on kpi-refresh: kpi_refresh is the scheduled Pub/Sub consumer that already
# holds a database pool, so pruning needs no function, subscription, dead-letter topic, push
# identity or connection budget of its own. Same lenient shape as the refresh job (no `id`,
# deduplicated on the Pub/Sub message id); docs/schema.md, "Pruning".
resource "google_cloud_scheduler_job" "prune" {
  name        = "sightops-prune"
  region      = var.region
  description = "Delete receipts and rejected events past their retention (kpi_refresh, shared/housekeeping.py)."
  schedule    = var.prune_schedule
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["kpi-refresh"].id
    data       = base64encode(jsonencode({}))
    attributes = {
      type   = "sight.ops.housekeeping.prune_requested"
      source = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.api]
}

# The weekly release metrics digest also rides on kpi-refresh: kpi_refresh computes the
# report from the ledger, refreshes its cache entry and publishes sight.ops.report.weekly to
# ops-events, which notify posts to Slack. Same lenient shape as the jobs above (no `id`);
# one digest per ISO week however often it runs (docs/metrics.md, "Weekly digest").
resource "google_cloud_scheduler_job" "release_report" {
  name        = "sightops-release-report"
  region      = var.region
  description = "Weekly release metrics digest to Slack (kpi_refresh -> ops-events -> notify)."
  schedule    = var.release_report_schedule
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["kpi-refresh"].id
    data       = base64encode(jsonencode({ days = 7 }))
    attributes = {
      type   = "sight.ops.report.requested"
      source = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.api]
}

resource "google_cloud_scheduler_job" "notify_flush" {
  name             = "sightops-notify-flush"
  region           = var.region
  description      = "Flush due alert groups and repeat reminders (notify_flush)."
  schedule         = var.notify_flush_schedule
  time_zone        = var.scheduler_time_zone
  attempt_deadline = "120s"

  retry_config {
    retry_count = 0 # the next minute's run is the retry
  }

  http_target {
    http_method = "POST"
    uri         = google_cloudfunctions2_function.fn["notify_flush"].service_config[0].uri

    oidc_token {
      service_account_email = google_service_account.scheduler.email
      audience              = google_cloudfunctions2_function.fn["notify_flush"].service_config[0].uri
    }
  }

  depends_on = [google_cloud_run_v2_service_iam_member.scheduler_invokes_notify_flush]
}
