# Routine database care (issue 17, docs/maintain.md). The maintain function is
# local.functions.maintain (functions.tf: its own account, holding secretAccessor on
# database_url and neo4j_password and publisher on ops-events only; its push subscription on
# `maintenance` with a dead-letter topic, a hold and a push identity that may invoke it
# alone, pubsub.tf); this file adds what only maintain needs: its daily request.
#
# Its own topic rather than a ride on kpi-refresh: kpi_refresh's subscription takes every
# message of that topic and would refuse this one (kept as rejected, counted by the
# rejected-message alert), so sharing it would take a filter on both subscriptions (changing
# a filter replaces the subscription) and, since the Pub/Sub emulator applies no filter,
# skip code in both consumers. A topic costs nothing at rest (Pub/Sub bills throughput), and
# its subscription, dead letters and IAM come from the same for_each as every other
# function's.

# Like the kpi-refresh jobs, the message is the same on every run, so it carries no `id` or
# `time` attribute: maintain reads it leniently and deduplicates on the Pub/Sub message id.
# A run that meets a migration holding the lock is skipped, not retried: the next day's run
# is the retry (docs/maintain.md, "The lock").
resource "google_cloud_scheduler_job" "maintain" {
  name        = "sightops-maintain"
  region      = var.region
  description = "Daily database care: ANALYZE, REINDEX CONCURRENTLY of bloated indexes, Neo4j index states (maintain)."
  schedule    = var.maintain_schedule
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["maintenance"].id
    data       = base64encode(jsonencode({}))
    attributes = {
      type   = "sight.ops.maintain.requested"
      source = "cloud-scheduler"
    }
  }

  depends_on = [google_project_service.api]
}
