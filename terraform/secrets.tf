# Secret Manager secrets, created empty: values never appear in code, variables or state
# (nothing here reads a version back: no secret-version data source anywhere; the
# only version Terraform writes is notify's routing file, which holds no credential).
# Add them once per project (docs/deploy.md):
#   printf %s "$VALUE" | gcloud secrets versions add sightops-database-url --data-file=-

locals {
  # key -> the secret and the environment variable (shared/settings.py) it is injected as.
  secrets = {
    database_url      = { secret_id = "sightops-database-url", env = "DATABASE_URL" }
    neo4j_password    = { secret_id = "sightops-neo4j-password", env = "NEO4J_PASSWORD" }
    redis_url         = { secret_id = "sightops-redis-url", env = "REDIS_URL" }
    slack_webhook_url = { secret_id = "sightops-slack-webhook-url", env = "SLACK_WEBHOOK_URL" }
    intake_username   = { secret_id = "sightops-alert-intake-username", env = "INTAKE__USERNAME" }
    intake_password   = { secret_id = "sightops-alert-intake-password", env = "INTAKE__PASSWORD" }
    smoke_password    = { secret_id = "sightops-smoke-password", env = "ROLLBACK__SMOKE_PASSWORD" }
    # the console's own read-only database user (docs/console.md, "Production")
    console_database_url = { secret_id = "sightops-console-database-url", env = "DATABASE_URL" }
    # the Slack app's request signing secret and bot token (usergroups.users.list only)
    slack_signing_secret = { secret_id = "sightops-slack-signing-secret", env = "CONSOLE__SLACK_SIGNING_SECRET" }
    slack_bot_token      = { secret_id = "sightops-slack-bot-token", env = "CONSOLE__SLACK_BOT_TOKEN" }
    # the restore drill's own Neo4j (backup_drill; docs/backups.md)
    scratch_neo4j_password = { secret_id = "sightops-scratch-neo4j-password", env = "BACKUP__SCRATCH_NEO4J_PASSWORD" }
  }
}

resource "google_secret_manager_secret" "secret" {
  for_each = local.secrets

  secret_id = each.value.secret_id
  labels    = { env-var = lower(replace(each.value.env, "_", "-")) }

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret" "slack_route" {
  for_each = toset(var.slack_route_secret_ids)

  secret_id = each.value
  labels    = { purpose = "slack-route-webhook" }

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

# notify's configuration file holds routes and webhook *references*, never URLs; Secret
# Manager is simply how a gen2 function gets a file mounted. Its content is not secret.
resource "google_secret_manager_secret" "notify_config" {
  secret_id = "sightops-notify-config"
  labels    = { purpose = "notify-config" }

  replication {
    auto {}
  }

  depends_on = [google_project_service.api]
}

resource "google_secret_manager_secret_version" "notify_config" {
  secret      = google_secret_manager_secret.notify_config.id
  secret_data = file(startswith(var.notify_config_file, "/") ? var.notify_config_file : "${path.module}/${var.notify_config_file}")
}

# The deploy pipeline's smoke runner reads the smoke user's password (availableSecrets).
resource "google_secret_manager_secret_iam_member" "deploy_smoke_password" {
  secret_id = google_secret_manager_secret.secret["smoke_password"].id
  role      = "roles/secretmanager.secretAccessor"
  member    = google_service_account.deploy.member
}
