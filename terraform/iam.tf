# Least privilege, per function service account (docs/deploy.md has the matrix):
#   roles/secretmanager.secretAccessor  on exactly the secrets in local.functions[*].secrets
#   roles/pubsub.publisher              on exactly the topics in local.functions[*].publishes
#   custom sightopsRollbackTraffic      on local.functions[*].moves_traffic_for } rollback and
#   custom sightopsActAsRuntime         on their runtime service account        } canary only
#   roles/monitoring.viewer             the project's metrics, canary only (canary.tf)
#   roles/logging.viewAccessor          one log view of Cloud Run request logs, canary only
#   roles/cloudtrace.agent              span writes only (below)
# No primitive roles, and no other project-wide grant to a function. Not roles/cloudsql.client:
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

# --- Cloud Run: custom roles with exactly the permissions used ---------------------------------
#
# roles/run.developer would let rollback and the deploy build create and delete services
# (and jobs). These roles hold only what the code calls (docs/deploy.md, "Cloud Run
# permissions"); none holds run.services.create or run.services.delete. A deleted custom
# role stays reserved for 7 to 37 days: rename role_id rather than recreate it.

# shared/rollback/_cloudrun.py (rollback's pin, the canary's split): GetService,
# ListRevisions, UpdateService (traffic), and GetOperation while it waits for the update.
resource "google_project_iam_custom_role" "rollback_traffic" {
  project     = var.project_id
  role_id     = "sightopsRollbackTraffic"
  title       = "sight-ops rollback: move traffic"
  description = "Read a Cloud Run service and its revisions, update its traffic, wait for the operation. No create, no delete."
  permissions = [
    "run.operations.get",
    "run.revisions.list",
    "run.services.get",
    "run.services.update",
  ]
}

# cloudbuild-deploy.yaml runs `sightops deploy` (shared/deploy, Cloud Run Admin API v2):
# GetService, UpdateService (new revision, then the traffic pin), GetOperation (waits for
# both), GetRevision (is the new revision Ready, which image), ListRevisions (the promotion
# reads the service as rollback does, shared/rollback/_cloudrun.py).
resource "google_project_iam_custom_role" "deploy_release" {
  project     = var.project_id
  role_id     = "sightopsDeployRelease"
  title       = "sight-ops deploy: release a revision"
  description = "Read and update an existing Cloud Run service (new revision, traffic). No create, no delete."
  permissions = [
    "run.services.get",
    "run.services.update",
    "run.revisions.get",
    "run.revisions.list",
    "run.operations.get",
  ]
}

# Updating a service re-submits its template, which names the runtime service account:
# the caller must be allowed to act as it, and needs nothing else on it (not the get/list
# of roles/iam.serviceAccountUser).
resource "google_project_iam_custom_role" "act_as_runtime" {
  project     = var.project_id
  role_id     = "sightopsActAsRuntime"
  title       = "sight-ops: act as the managed services' runtime account"
  description = "iam.serviceAccounts.actAs only; bound on the managed services' runtime service account alone."
  permissions = ["iam.serviceAccounts.actAs"]
}

resource "google_cloud_run_v2_service_iam_member" "rollback_traffic" {
  for_each = local.cloud_run_managers

  location = var.region
  name     = each.value.service
  role     = google_project_iam_custom_role.rollback_traffic.name
  member   = google_service_account.fn[each.value.function].member
}

resource "google_service_account_iam_member" "rollback_acts_as_runtime" {
  for_each = toset([for fn, f in local.functions : fn if length(f.moves_traffic_for) > 0])

  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.managed_services_runtime_service_account}"
  role               = google_project_iam_custom_role.act_as_runtime.name
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

# Spans to Cloud Trace (docs/release.md). Cloud Trace has no resource below the project to
# grant on, so this is the one project-level role a function holds: cloudtrace.agent can
# only write spans (traces.patch / batchWrite), never read them or anything else.
resource "google_project_iam_member" "trace_writer" {
  for_each = merge(
    { for name, sa in google_service_account.fn : name => sa.member },
    { deploy = google_service_account.deploy.member },
  )

  project = var.project_id
  role    = "roles/cloudtrace.agent"
  member  = each.value
}
