# Release pipeline triggers (DESIGN.md 1): CI on push, deploy on migration.succeeded.

locals {
  # Where CI pushes images and deploy resolves them: both triggers pass it, so neither
  # build falls back to the default hard-coded in its YAML.
  image_repo = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"
}

resource "google_service_account" "ci" {
  account_id   = "sightops-ci"
  display_name = "sight-ops CI builds"
  description  = "Runs cloudbuild.yaml: tests, then pushes images to Artifact Registry."
}

resource "google_service_account" "deploy" {
  account_id   = "sightops-deploy"
  display_name = "sight-ops deploy builds"
  description  = "Runs cloudbuild-deploy.yaml: deploys a managed service with no traffic, smoke-tests, promotes."
}

resource "google_cloudbuild_trigger" "ci" {
  name            = "sightops-ci"
  location        = "global"
  description     = "CI (cloudbuild.yaml) on every push to ${var.ci_branch_regex}."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.ci.id

  github {
    owner = var.github_owner
    name  = var.github_repo
    push {
      branch = var.ci_branch_regex
    }
  }

  substitutions = {
    _SERVICE    = var.ci_service
    _IMAGE_REPO = local.image_repo
  }

  depends_on = [google_project_service.api]
}

# Fires on every ops-events message; the filter keeps sight.ops.migration.succeeded only.
# Cloud Build decodes the JSON data, so its fields bind straight to substitutions.
resource "google_cloudbuild_trigger" "deploy" {
  name            = "sightops-deploy"
  location        = "global"
  description     = "Deploy (cloudbuild-deploy.yaml) after migrate reports sight.ops.migration.succeeded."
  service_account = google_service_account.deploy.id

  pubsub_config {
    topic = google_pubsub_topic.topic["ops-events"].id
  }

  source_to_build {
    uri       = "https://github.com/${var.github_owner}/${var.github_repo}"
    ref       = "refs/heads/${var.deploy_branch}"
    repo_type = "GITHUB"
  }

  git_file_source {
    path      = "cloudbuild-deploy.yaml"
    uri       = "https://github.com/${var.github_owner}/${var.github_repo}"
    revision  = "refs/heads/${var.deploy_branch}"
    repo_type = "GITHUB"
  }

  substitutions = {
    _EVENT_TYPE = "$(body.message.attributes.type)"
    _EVENT_ID   = "$(body.message.attributes.id)"
    _SERVICE    = "$(body.message.data.service)"
    _BUILD_ID   = "$(body.message.data.build_id)"
    _COMMIT_SHA = "$(body.message.data.commit_sha)"
    _REGION     = var.region
    _IMAGE_REPO = local.image_repo
  }

  filter = "_EVENT_TYPE.matches('^sight[.]ops[.]migration[.]succeeded$')"

  depends_on = [google_project_service.api]
}

# The deploy build: deploy and promote the managed services, act as their runtime account,
# publish smoke results, resolve the image CI pushed to its digest.
resource "google_cloud_run_v2_service_iam_member" "deploy_run_developer" {
  for_each = toset(var.managed_services)

  location = var.region
  name     = each.value
  role     = "roles/run.developer"
  member   = google_service_account.deploy.member
}

resource "google_service_account_iam_member" "deploy_acts_as_runtime" {
  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.managed_services_runtime_service_account}"
  role               = "roles/iam.serviceAccountUser"
  member             = google_service_account.deploy.member
}

resource "google_pubsub_topic_iam_member" "deploy_publishes_smoke_results" {
  topic  = google_pubsub_topic.topic["smoke-tests"].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.deploy.member
}

resource "google_artifact_registry_repository_iam_member" "deploy_reads_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.deploy.member
}
