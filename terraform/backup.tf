# Backups proven by restore (issue 16, docs/backups.md). The functions are
# local.functions.backup and .backup_drill (functions.tf: one source, two accounts, their
# push subscriptions on `backup-requests` filtered by the `kind` attribute, pubsub.tf). This
# file adds the bucket, the two accounts' rights on it and nothing else, the schedules and
# the staleness alerts.
#
# backup (the writer) may only create objects: it cannot read, list, replace or delete a
# backup, so a compromised or buggy function cannot destroy what exists. backup_drill (the
# reader) may only read and list. Nobody else is granted anything on the bucket here.

resource "google_storage_bucket" "backups" {
  #checkov:skip=CKV_GCP_62:Access is by two service accounts only, and Data Access audit logs (enabled for storage.googleapis.com per project) record their reads; an access-log bucket would add a second copy of the same.
  #checkov:skip=CKV_GCP_78:Object Versioning cannot be combined with a retention policy in Cloud Storage; the retention policy is the stronger guarantee (no version of an object can be deleted or replaced before it expires).
  name                        = "${var.project_id}-sightops-backups"
  location                    = var.region
  storage_class               = "STANDARD"
  force_destroy               = false
  uniform_bucket_level_access = true
  public_access_prevention    = "enforced"

  # Nothing can delete or overwrite an object younger than this, not even the project's
  # owners (until the policy is locked by hand: `gcloud storage buckets update --lock-retention-period`).
  retention_policy {
    retention_period = var.backup_retention_days * 86400
    is_locked        = false
  }

  # 30 daily and 12 weekly backups: object names start with <store>/<period>/ (docs/backups.md).
  lifecycle_rule {
    condition {
      age            = 30
      matches_prefix = ["postgres/daily/", "neo4j/daily/", "postgres/manual/", "neo4j/manual/"]
    }
    action {
      type = "Delete"
    }
  }
  lifecycle_rule {
    condition {
      age            = 84
      matches_prefix = ["postgres/weekly/", "neo4j/weekly/"]
    }
    action {
      type = "Delete"
    }
  }
  labels = { purpose = "sightops-backups" }

  depends_on = [google_project_service.api]
}

# The writer: objects.create only (roles/storage.objectCreator). Each upload is made with
# ifGenerationMatch=0, so it never needs the delete permission an overwrite would.
resource "google_storage_bucket_iam_member" "backup_writer" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectCreator"
  member = google_service_account.fn["backup"].member
}

# The drill: objects.get and objects.list only (roles/storage.objectViewer).
resource "google_storage_bucket_iam_member" "backup_reader" {
  bucket = google_storage_bucket.backups.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.fn["backup_drill"].member
}

# The drill writes the UTC time of the newest backup it verified as a custom metric (the
# staleness alerts below read it). Cloud Monitoring has no resource below the project to
# grant metric writes on.
resource "google_project_iam_member" "backup_drill_writes_metric" {
  project = var.project_id
  role    = "roles/monitoring.metricWriter"
  member  = google_service_account.fn["backup_drill"].member
}

# --- schedules --------------------------------------------------------------------------
# Like the other scheduled jobs, the message is the same on every run (no `id` or `time`
# attribute): the functions read it leniently and deduplicate on the Pub/Sub message id.
# The `kind` attribute routes it (pubsub.tf's filters). A backup asks for its own drill when
# it is written, so every backup is verified within minutes; the weekly drill restores the
# newest backups again from what the bucket holds then.

locals {
  backup_jobs = {
    postgres_daily = {
      description = "Daily PostgreSQL backup (sight and ops schemas), then its drill."
      schedule    = var.backup_postgres_schedule
      data        = { stores = ["postgres"], kind = "backup", period = "daily" }
    }
    neo4j_weekly = {
      description = "Weekly Neo4j backup (nodes, relationships, schema), then its drill."
      schedule    = var.backup_neo4j_schedule
      data        = { stores = ["neo4j"], kind = "backup", period = "weekly" }
    }
    drill_weekly = {
      description = "Weekly restore drill of the newest backup of each store."
      schedule    = var.backup_drill_schedule
      data        = { stores = ["postgres", "neo4j"], kind = "drill" }
    }
  }
}

resource "google_cloud_scheduler_job" "backup" {
  for_each = local.backup_jobs

  name        = "sightops-backup-${replace(each.key, "_", "-")}"
  region      = var.region
  description = each.value.description
  schedule    = each.value.schedule
  time_zone   = var.scheduler_time_zone

  retry_config {
    retry_count = 1
  }

  pubsub_target {
    topic_name = google_pubsub_topic.topic["backup-requests"].id
    data       = base64encode(jsonencode(each.value.data))
    attributes = {
      type   = "sight.ops.backup.requested"
      source = "cloud-scheduler"
      kind   = each.value.data.kind
    }
  }

  depends_on = [google_project_service.api]
}

# --- staleness --------------------------------------------------------------------------
# A custom metric, not a log-based one: the alert is on an age (now - the time of the newest
# verified backup), which a counter of log lines cannot express, and a metric-absence
# condition stops at 23.5 h, short of 26 h and 8 days. backup_drill writes
# custom.googleapis.com/sightops/backup_verified_taken_at_s{store} after each verified
# drill (shared/backup/_function.py); PromQL subtracts it from time(). No point at all in
# the lookback window (never verified) fires as well.

locals {
  backup_verified_metric = "custom_googleapis_com:sightops_backup_verified_taken_at_s"
  backup_staleness = {
    postgres = { hours = var.backup_postgres_max_age_hours, label = "PostgreSQL" }
    neo4j    = { hours = var.backup_neo4j_max_age_hours, label = "Neo4j" }
  }
}

resource "google_monitoring_alert_policy" "backup_stale" {
  for_each = local.backup_staleness

  display_name = "sight-ops ${each.value.label} backup not verified for ${each.value.hours} h"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "backup-stale"
    store   = each.key
  }

  conditions {
    display_name = "newest verified ${each.value.label} backup older than ${each.value.hours} h"

    condition_prometheus_query_language {
      query               = "(time() - max by (store) (last_over_time(${local.backup_verified_metric}{monitored_resource=\"global\",store=\"${each.key}\"}[9d])) > ${each.value.hours * 3600}) or absent_over_time(${local.backup_verified_metric}{monitored_resource=\"global\",store=\"${each.key}\"}[9d])"
      duration            = "0s"
      evaluation_interval = "300s"
    }
  }

  alert_strategy {
    auto_close           = "86400s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] no verified ${each.value.label} backup"
    content   = <<-EOT
      No ${each.value.label} backup newer than ${each.value.hours} h has been restored and
      verified by the drill. Until one is, a restore would go back further than the
      recovery point Sight's operations require.
      Runbook: docs/runbooks/backup-stale.md
    EOT
  }

  depends_on = [google_project_service.api]
}
