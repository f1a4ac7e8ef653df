# Progressive delivery (issue 14, docs/canary.md): the canary function is local.functions.canary
# (functions.tf: its account, push subscription on ops-events with dead letters, secrets,
# publisher on ops-events, the traffic role on the opted-in services); this file adds what
# only the canary needs: reading Cloud Monitoring and Cloud Run's request logs, and its
# wake-up every minute.
#
# Opt-in per service: var.canary_services (CANARY__SERVICES) lists the services whose deploys
# hand over to the canary and their step plans. Empty, the function is deployed but idle:
# no tick job, no Cloud Run grant.

# The analysis reads run.googleapis.com/request_count and request_latencies by revision
# (ListTimeSeries, shared/canary/_monitoring.py). Cloud Monitoring has no resource below the
# project to grant on; roles/monitoring.viewer reads metrics, dashboards and policies and
# writes nothing (not monitoring.editor, not metricWriter).
resource "google_project_iam_member" "canary_reads_metrics" {
  project = var.project_id
  role    = "roles/monitoring.viewer"
  member  = google_service_account.fn["canary"].member
}

# The first step (CANARY__LOGS_STEPS, default 1) is analysed every 10 s from Cloud Run's request
# logs (entries.list, shared/canary/_logs.py; docs/canary.md, "Reading the request logs"). The
# function reads them through a log view that holds only those logs, so it can read nothing
# else: not roles/logging.viewer (every log of the project), roles/logging.viewAccessor on
# this one view. The view is on _Default, where Cloud Run writes them (guardrails.tf keeps
# its retention at 30 days).
resource "google_logging_log_view" "cloud_run_requests" {
  name        = "sightops-cloud-run-requests"
  bucket      = google_logging_project_bucket_config.default.id
  description = "Cloud Run request logs only: what the canary reads (docs/canary.md)."
  filter      = "SOURCE(\"projects/${var.project_id}\") AND resource.type = \"cloud_run_revision\" AND LOG_ID(\"run.googleapis.com/requests\")"
}

locals {
  # what entries.list names as its resource (CANARY__LOGS_VIEW of the canary function)
  canary_logs_view = "projects/${var.project_id}/locations/global/buckets/_Default/views/${google_logging_log_view.cloud_run_requests.name}"
}

resource "google_logging_log_view_iam_member" "canary_reads_request_logs" {
  parent   = google_logging_log_view.cloud_run_requests.parent
  location = google_logging_log_view.cloud_run_requests.location
  bucket   = google_logging_log_view.cloud_run_requests.bucket
  name     = google_logging_log_view.cloud_run_requests.name
  role     = "roles/logging.viewAccessor"
  member   = google_service_account.fn["canary"].member
}

# Cloud Run's Monitoring points are 60 s samples, so a wake-up every minute loses nothing;
# one job serves every running canary; a lost or doubled tick is harmless (the next one
# analyses, and a decision is idempotent under the service's lock). docs/canary.md, "Wake-up".
# Like the kpi-refresh jobs, the message is the same on every run, so it carries no `id` or
# `time` attribute: the canary deduplicates ticks on the Pub/Sub message id, and notify's
# subscription filters them out (pubsub.tf).
resource "google_cloud_scheduler_job" "canary_tick" {
  count = length(var.canary_services) > 0 ? 1 : 0

  name        = "sightops-canary-tick"
  region      = var.region
  description = "Wake the canary every minute to analyse and step every running canary (canary)."
  schedule    = "* * * * *"
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 0 # the next minute's tick is the retry
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["ops-events"].id
    data       = base64encode(jsonencode({})) # CanaryTick: no service, every running canary
    attributes = {
      type   = "sight.ops.canary.tick"
      source = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.api]
}
