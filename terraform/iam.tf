# Least privilege, per function service account (docs/deploy.md has the matrix):
#   roles/secretmanager.secretAccessor  on exactly the secrets in local.functions[*].secrets
#   roles/pubsub.publisher              on exactly the topics in local.functions[*].publishes
#   roles/run.developer                 on the managed Cloud Run services  } rollback only
#   roles/iam.serviceAccountUser        on their runtime service account   }
# No primitive roles and no project-wide grant to a function. Not roles/cloudsql.client:
# that role only gates the Cloud SQL connector/Auth Proxy; the functions connect to the
# instance's private IP through the VPC connector, authenticated by PostgreSQL itself.

resource "google_secret_manager_secret_iam_member" "function" {
  for_each = local.function_secrets

  secret_id = google_secret_manager_secret.secret[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.fn[each.value.function].member
}

resource "google_secret_manager_secret_iam_member" "notify_config" {
  for_each = { for fn, f in local.functions : fn => f if f.notify_config }

  secret_id = google_secret_manager_secret.notify_config.id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.fn[each.key].member
}

resource "google_secret_manager_secret_iam_member" "slack_route" {
  for_each = {
    for pair in setproduct([for fn, f in local.functions : fn if f.notify_config], var.slack_route_secret_ids) :
    "${pair[0]}/${pair[1]}" => { function = pair[0], secret = pair[1] }
  }

  secret_id = google_secret_manager_secret.slack_route[each.value.secret].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.fn[each.value.function].member
}

resource "google_pubsub_topic_iam_member" "function_publisher" {
  for_each = local.function_publishes

  topic  = google_pubsub_topic.topic[each.value.topic].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.fn[each.value.function].member
}

resource "google_cloud_run_v2_service_iam_member" "rollback_run_developer" {
  for_each = local.cloud_run_managers

  location = var.region
  name     = each.value.service
  role     = "roles/run.developer"
  member   = google_service_account.fn[each.value.function].member
}

resource "google_service_account_iam_member" "rollback_acts_as_runtime" {
  for_each = toset([for fn, f in local.functions : fn if f.manages_cloud_run])

  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.managed_services_runtime_service_account}"
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.fn[each.key].member
}

# --- building the functions --------------------------------------------------------------------

# Cloud Functions builds run as this account instead of a default one with broad roles.
resource "google_service_account" "build" {
  account_id   = "sightops-function-build"
  display_name = "sight-ops function builds"
  description  = "Builds the sight-ops function images from the source bucket."
}

resource "google_storage_bucket_iam_member" "build_reads_sources" {
  bucket = google_storage_bucket.sources.name
  role   = "roles/storage.objectViewer"
  member = google_service_account.build.member
}

resource "google_artifact_registry_repository_iam_member" "build_writes_functions" {
  location   = google_artifact_registry_repository.functions.location
  repository = google_artifact_registry_repository.functions.name
  role       = "roles/artifactregistry.writer"
  member     = google_service_account.build.member
}

resource "google_project_iam_member" "build_logs" {
  for_each = toset([
    google_service_account.build.member,
    google_service_account.ci.member,
    google_service_account.deploy.member,
  ])

  project = var.project_id
  role    = "roles/logging.logWriter"
  member  = each.value
}
