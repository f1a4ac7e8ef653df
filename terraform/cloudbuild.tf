# Release pipeline triggers (docs/deploy.md): CI on push, deploy on migration.succeeded.

locals {
  # Where CI pushes images and deploy resolves them: both triggers pass it, so neither
  # build falls back to the default hard-coded in its YAML.
  image_repo = "${var.region}-docker.pkg.dev/${var.project_id}/${google_artifact_registry_repository.images.repository_id}"

  # The triggers whose SUCCESS builds migrate acts on (docs/migrate.md): selection is by
  # buildTriggerId, which only Cloud Build sets, never by _SERVICE, a tag or a trigger name,
  # which the caller of `gcloud builds submit` chooses. This repository's CI counts when it
  # releases a managed service (ci_service, default sight-api; "" opts out).
  migrate_trigger_ids = concat(
    var.ci_service == "" ? [] : [google_cloudbuild_trigger.ci.trigger_id],
    var.migrate_trigger_ids,
  )
  # MIGRATE__SELECTOR; services only narrow the triggers, so without a trigger it is empty
  # (selects nothing) rather than services alone, which migrate refuses at start-up.
  migrate_selector = length(local.migrate_trigger_ids) == 0 ? jsonencode({}) : jsonencode({
    trigger_ids = local.migrate_trigger_ids
    services    = var.managed_services
  })

  # The deploy starts only for values of the shapes migrate checked; cloudbuild-deploy.yaml
  # checks them again and hands them to its scripts as environment variables only.
  deploy_filter = join(" && ", [
    "_EVENT_TYPE.matches('^sight[.]ops[.]migration[.]succeeded$')",
    "_COMMIT_SHA.matches('^[0-9a-f]{40}$')",
    "_SERVICE.matches('^[a-z]([-a-z0-9]{0,61}[a-z0-9])?$')",
    "_BUILD_ID.matches('^[0-9A-Za-z][-0-9A-Za-z]{0,127}$')",
  ])
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

# Fires on every ops-events message; the filter keeps sight.ops.migration.succeeded with
# well-formed values only. Cloud Build decodes the JSON data, so its fields bind straight to
# substitutions, which cloudbuild-deploy.yaml passes to its steps through `env:` only: a
# substitution pasted into a script would run as code with the deploy account's rights.
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
    _EVENT_TYPE  = "$(body.message.attributes.type)"
    _EVENT_ID    = "$(body.message.attributes.id)"
    _SERVICE     = "$(body.message.data.service)"
    _BUILD_ID    = "$(body.message.data.build_id)"
    _COMMIT_SHA  = "$(body.message.data.commit_sha)"
    _TRACEPARENT = "$(body.message.attributes.traceparent)" # checked by check-event
    _REGION      = var.region
    _IMAGE_REPO  = local.image_repo
    # The opted-in services hand over to the canary instead of promoting (docs/deploy.md):
    # the same JSON as the canary function's CANARY__SERVICES, reaching `sightops deploy`
    # through its environment only.
    _CANARY_SERVICES = jsonencode(var.canary_services)
  }

  filter = local.deploy_filter

  depends_on = [google_project_service.api]
}

# The deploy build (`sightops deploy`): deploy and promote the managed services, act as their
# runtime account, publish smoke results and release events.
# Custom roles with exactly what cloudbuild-deploy.yaml calls (terraform/iam.tf).
resource "google_cloud_run_v2_service_iam_member" "deploy_release" {
  for_each = toset(var.managed_services)

  location = var.region
  name     = each.value
  role     = google_project_iam_custom_role.deploy_release.name
  member   = google_service_account.deploy.member
}

resource "google_service_account_iam_member" "deploy_acts_as_runtime" {
  service_account_id = "projects/${var.project_id}/serviceAccounts/${var.managed_services_runtime_service_account}"
  role               = google_project_iam_custom_role.act_as_runtime.name
  member             = google_service_account.deploy.member
}

resource "google_pubsub_topic_iam_member" "deploy_publishes_smoke_results" {
  topic  = google_pubsub_topic.topic["smoke-tests"].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.deploy.member
}

resource "google_pubsub_topic_iam_member" "deploy_publishes_release_events" {
  topic  = google_pubsub_topic.topic["ops-events"].id
  role   = "roles/pubsub.publisher"
  member = google_service_account.deploy.member
}

resource "google_artifact_registry_repository_iam_member" "deploy_reads_images" {
  location   = google_artifact_registry_repository.images.location
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.reader"
  member     = google_service_account.deploy.member
}
