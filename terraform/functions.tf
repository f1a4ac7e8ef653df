# The sight-ops functions: Cloud Functions gen2, one service account each, built from the
# content-hashed zips of `make package` (dist/manifest.json).

locals {
  # Every deployed function. `source` is functions/<source>/ as packaged by `make package`;
  # `topics` are consumed through the push subscriptions of pubsub.tf (HTTP functions have
  # none); `publishes` get roles/pubsub.publisher on exactly those topics; `secrets` are
  # keys of local.secrets, injected as environment variables and readable by this
  # function's service account only; `moves_traffic_for` are the Sight services whose
  # traffic the function may move: the custom role sightopsRollbackTraffic on each of them,
  # and actAs on their runtime account (rollback: every managed service; canary: the
  # services opted in to it; iam.tf). No roles/cloudsql.client: the functions reach the
  # instance's private IP through the VPC connector with pg8000, not through the Cloud SQL
  # connector/proxy.
  #
  # Database connections (DB_POOL_SIZE / DB_MAX_OVERFLOW): every in-flight Pub/Sub delivery
  # holds one connection for its receipt transaction, so an event-driven function's pool
  # covers its concurrency; `db_extra_sessions` counts connections outside that pool
  # (migrate's own migration session). max_instances * (pool + overflow + extra), summed,
  # must stay within var.db_connection_budget (checked below and by tests/infra).
  functions = {
    migrate = {
      source            = "migrate"
      entry_point       = "migrate"
      description       = "Applies Alembic and Neo4j schema migrations for a selected successful CI build and reports on ops-events."
      trigger           = "pubsub"
      topics            = ["cloud-builds"]
      publishes         = ["ops-events"]
      secrets           = ["database_url", "neo4j_password"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "1Gi"
      cpu               = "1"
      timeout_seconds   = 540
      min_instances     = 0
      # Not 1: every build's QUEUED/WORKING/SUCCESS lands here, and a push finding no free
      # instance gets 429 from Cloud Run, which uses up a delivery attempt migrate never
      # sees (a SUCCESS could be dead-lettered during a 540 s run). The advisory lock
      # serialises runs; a waiter's bounded wait answers 503 inside the function, where
      # migrate counts attempts and answers `failed` on the last (docs/migrate.md).
      max_instances     = 3
      concurrency       = 1
      db_pool_size      = 1
      db_max_overflow   = 0
      db_extra_sessions = 1 # the migration session (shared/migrate/_run.py), one per delivery
      env = {
        # Builds of the CI triggers only (a manual build has no trigger id, whatever its
        # _SERVICE says), narrowed to the managed services; no trigger: selects nothing.
        MIGRATE__SELECTOR = local.migrate_selector
        # On the last attempt a retryable failure becomes `failed`, so the deploy stage
        # always gets an answer instead of a dead-lettered message.
        MIGRATE__MAX_DELIVERY_ATTEMPTS = tostring(var.max_delivery_attempts)
      }
    }
    rollback = {
      source            = "rollback"
      entry_point       = "rollback"
      description       = "Moves Cloud Run traffic back to the last known-good revision on a failed smoke test or an auto_rollback alert."
      trigger           = "pubsub"
      topics            = ["smoke-tests", "monitoring-alerts", "ops-events"]
      publishes         = ["ops-events"]
      secrets           = ["database_url"]
      moves_traffic_for = var.managed_services
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 300
      min_instances     = 1 # reaction latency: a rollback must not wait for a cold start
      max_instances     = 2
      concurrency       = 4
      db_pool_size      = 4 # one per delivery: a rollback works on its delivery's connection
      db_max_overflow   = 0
      db_extra_sessions = 0
      env = {
        ROLLBACK__DRY_RUN = tostring(var.rollback_dry_run)
        ROLLBACK__PROJECT = var.project_id
        ROLLBACK__REGION  = var.region
      }
    }
    # Progressive delivery (docs/canary.md): started by sight.ops.canary.requested from the
    # deploy, woken every minute by sight.ops.canary.tick (canary.tf). Reads Cloud Monitoring
    # (roles/monitoring.viewer, canary.tf) and moves traffic on the opted-in services only.
    canary = {
      source            = "canary"
      entry_point       = "canary"
      description       = "Steps Cloud Run traffic to a new revision as its metrics show it healthy, or rolls it back (canary.requested, canary.tick)."
      trigger           = "pubsub"
      topics            = ["ops-events"]
      publishes         = ["ops-events"]
      secrets           = ["database_url"]
      moves_traffic_for = keys(var.canary_services)
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 300
      min_instances     = 0 # the tick every minute keeps an instance warm while canaries run
      max_instances     = 1
      # A tick and a request at once; the per-service lock serialises decisions. A
      # 10-second tick waits for its time (at most 15 s) in one of these slots, before it
      # takes a connection (docs/canary.md, "Ten-second ticks"); a delivery that finds
      # both slots busy is refused and redelivered by Pub/Sub.
      concurrency       = 2
      db_pool_size      = 2 # one per delivery, like rollback
      db_max_overflow   = 0
      db_extra_sessions = 0
      env = {
        CANARY__SERVICES = jsonencode(var.canary_services)
        CANARY__PROJECT  = var.project_id
        CANARY__REGION   = var.region
        CANARY__DRY_RUN  = tostring(var.canary_dry_run)
        # the first step is read from Cloud Run's request logs through this view (canary.tf)
        CANARY__LOGS_VIEW = local.canary_logs_view
      }
    }
    notify = {
      source            = "notify"
      entry_point       = "notify"
      description       = "Posts one Slack message per terminal build, smoke failure, ops event, alert (grouped) and budget threshold."
      trigger           = "pubsub"
      topics            = ["cloud-builds", "smoke-tests", "ops-events", "monitoring-alerts", "billing-budget"]
      publishes         = []
      secrets           = ["database_url", "redis_url", "slack_webhook_url"]
      moves_traffic_for = []
      notify_config     = true
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 120
      min_instances     = 0
      # 12 deliveries at once is far more than Slack webhooks take (about one message per
      # second per channel), and each holds a database connection while it posts.
      max_instances     = 3
      concurrency       = 4
      db_pool_size      = 4 # one per delivery...
      db_max_overflow   = 1 # ...plus an audit row written in its own transaction
      db_extra_sessions = 0
      env = {
        NOTIFY__CONFIG_FILE = "${local.notify_config_dir}/notify.yaml"
        # notify_flush runs every minute (scheduler.tf), so group timers need not be held
        # in-process for long intervals (docs/notify.md, "Scheduled flush").
        NOTIFY__SCHEDULED_FLUSH = "true"
        # every message about a release links to its console page (docs/console.md)
        CONSOLE__BASE_URL = var.console_url
      }
    }
    notify_flush = {
      source            = "notify"
      entry_point       = "notify_flush"
      description       = "Flushes due alert groups and repeat reminders; called every minute by Cloud Scheduler."
      trigger           = "http"
      topics            = []
      publishes         = []
      secrets           = ["database_url", "redis_url", "slack_webhook_url"]
      moves_traffic_for = []
      notify_config     = true
      ingress           = "ALLOW_INTERNAL_ONLY" # Cloud Scheduler counts as internal
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 120
      min_instances     = 0
      max_instances     = 1
      concurrency       = 1
      db_pool_size      = 1
      db_max_overflow   = 1
      db_extra_sessions = 0
      env               = { NOTIFY__CONFIG_FILE = "${local.notify_config_dir}/notify.yaml" }
    }
    alert_intake = {
      source            = "alert_intake"
      entry_point       = "alert_intake"
      description       = "Authenticates Cloud Monitoring webhooks (Basic auth), validates them and publishes to monitoring-alerts."
      trigger           = "http"
      topics            = []
      publishes         = ["monitoring-alerts"]
      secrets           = ["intake_username", "intake_password"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = var.alert_webhook_enabled ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 30
      min_instances     = 0
      max_instances     = 10
      concurrency       = 16
      db_pool_size      = 0 # no database (no DATABASE_URL): no DB_* env either
      db_max_overflow   = 0
      db_extra_sessions = 0
      env               = {}
    }
    kpi = {
      source            = "kpi"
      entry_point       = "kpi"
      description       = "Serves a project's dashboard KPIs (GET /v1/projects/{id}/kpis), cached in Redis."
      trigger           = "http"
      topics            = []
      publishes         = []
      secrets           = ["database_url", "neo4j_password", "redis_url"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_ALL" # IAM-authenticated: only kpi_invoker_members may call it
      memory            = "1Gi"
      cpu               = "1"
      timeout_seconds   = 60
      min_instances     = 1 # the dashboard waits on it: no cold starts
      max_instances     = 4
      concurrency       = 20
      # Requests are served from Redis; only a miss queries PostgreSQL, once per project
      # per instance (single flight), so a small pool serves all 20 requests.
      db_pool_size      = 2
      db_max_overflow   = 1
      db_extra_sessions = 0
      env               = {}
    }
    kpi_refresh = {
      source            = "kpi"
      entry_point       = "kpi_refresh"
      description       = "Precomputes KPIs into Redis on schedule (kpi-refresh)."
      trigger           = "pubsub"
      topics            = ["kpi-refresh"]
      publishes         = ["ops-events"] # the weekly release metrics digest (docs/metrics.md)
      secrets           = ["database_url", "neo4j_password", "redis_url"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "1Gi"
      cpu               = "1"
      timeout_seconds   = 300
      min_instances     = 0
      max_instances     = 1 # one refresh sweep at a time
      concurrency       = 1
      db_pool_size      = 5 # the delivery's receipt + 4 refresh threads (KpiService)
      db_max_overflow   = 0
      db_extra_sessions = 0
      env               = {}
    }
    # Routine database care (docs/maintain.md): Cloud Scheduler's daily request on its own
    # topic (maintain.tf); ANALYZE and REINDEX CONCURRENTLY under migrate's advisory lock,
    # Neo4j's index states read. Its secrets and its result on ops-events, nothing else.
    maintain = {
      source            = "maintain"
      entry_point       = "maintain"
      description       = "Daily database care under the migration lock: ANALYZE, index bloat and REINDEX CONCURRENTLY, every Neo4j index ONLINE."
      trigger           = "pubsub"
      topics            = ["maintenance"]
      publishes         = ["ops-events"]
      secrets           = ["database_url", "neo4j_password"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 540 # > MAINTAIN__LOCK_WAIT_S + MAINTAIN__BUDGET_S (60 + 360 s)
      min_instances     = 0
      max_instances     = 1 # one run at a time (the advisory lock would serialise them anyway)
      concurrency       = 1
      db_pool_size      = 1 # the delivery's receipt and the run's ops.actions row
      db_max_overflow   = 0
      db_extra_sessions = 1 # the maintenance session holding the lock (shared/maintain/_postgres.py)
      env               = { MAINTAIN__DRY_RUN = tostring(var.maintain_dry_run) }
    }
    # Backups (docs/backups.md, backup.tf): one source, two accounts. backup exports and may
    # only create objects in the bucket; backup_drill restores into scratch targets (a
    # database it creates on the same server, BACKUP__SCRATCH_NEO4J_URI, which it wipes) and
    # may only read them. Each takes its `kind` of backup-requests (pubsub.tf's filters).
    backup = {
      source            = "backup"
      entry_point       = "backup"
      description       = "Exports PostgreSQL (streaming COPY) and Neo4j (JSON lines) to the backup bucket with a manifest, then asks for its drill."
      trigger           = "pubsub"
      topics            = ["backup-requests"]
      publishes         = ["ops-events", "backup-requests"] # a failed export; the drill request
      secrets           = ["database_url", "neo4j_password"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "1Gi" # streamed: an upload chunk (8 MiB) per open object, not the data
      cpu               = "1"
      timeout_seconds   = 540 # the most an event-driven function gets (docs/backups.md, "Limits")
      min_instances     = 0
      max_instances     = 1
      concurrency       = 1
      db_pool_size      = 1 # the delivery's receipt and the backup's ops.actions row
      db_max_overflow   = 0
      db_extra_sessions = 1 # the export's REPEATABLE READ snapshot (shared/backup/_postgres.py)
      env               = { BACKUP__BUCKET = google_storage_bucket.backups.name }
    }
    backup_drill = {
      source            = "backup"
      entry_point       = "backup_drill"
      description       = "Restores the newest (or a named) backup into scratch targets, compares it with its manifest and publishes backup.verified or backup.failed."
      trigger           = "pubsub"
      topics            = ["backup-requests"]
      publishes         = ["ops-events"]
      secrets           = ["database_url", "scratch_neo4j_password"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_INTERNAL_ONLY"
      memory            = "1Gi"
      cpu               = "1"
      timeout_seconds   = 540
      min_instances     = 0
      max_instances     = 1
      concurrency       = 1
      db_pool_size      = 1 # the delivery's receipt and the drill's ops.actions row
      db_max_overflow   = 0
      db_extra_sessions = 1 # the restore session into the scratch database
      env = {
        BACKUP__BUCKET            = google_storage_bucket.backups.name
        BACKUP__SCRATCH_NEO4J_URI = var.backup_scratch_neo4j_uri
        METRICS_BACKEND           = "cloud_monitoring" # the staleness alert's metric (backup.tf)
      }
    }
    # The release console (docs/console.md, terraform/console.tf): read-only pages over the
    # ledger as a read-only database user, Cloud Run's traffic (sightopsConsoleRead) and the
    # dead-letter holds. No public invoker: console_invoker_members only.
    console = {
      source            = "console"
      entry_point       = "console"
      description       = "The release console: services, releases and their timelines, rejected and dead-lettered messages, release metrics (read-only pages)."
      trigger           = "http"
      topics            = []
      publishes         = []
      secrets           = ["console_database_url"]
      moves_traffic_for = []
      notify_config     = false
      ingress           = "ALLOW_ALL" # IAM-authenticated: only console_invoker_members may call it
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 60
      min_instances     = 0
      max_instances     = 1 # a few on-call engineers: one instance serves them
      concurrency       = 8
      db_pool_size      = 2 # one short read-only transaction per page
      db_max_overflow   = 0
      db_extra_sessions = 0
      env = {
        CONSOLE__BASE_URL          = var.console_url
        CONSOLE__DEAD_LETTER_HOLDS = jsonencode([for key in sort(keys(local.subscriptions)) : "${key}--dead-letter"])
      }
    }
    # Slack's Request URL for the buttons on notify's messages (docs/console.md, "Acting
    # from Slack"): public when slack_interactivity_enabled, but only a request Slack signed,
    # from a user in slack_allowed, acts, through the CLI's code (it moves traffic and
    # publishes like `sightops rollback` / `sightops canary`).
    slack_actions = {
      source            = "console"
      entry_point       = "slack_actions"
      description       = "Slack's interactivity endpoint: signed clicks of allowed users on notify's buttons (undo rollback, unfreeze, roll back now, promote, mark bad)."
      trigger           = "http"
      topics            = []
      publishes         = ["ops-events"]
      secrets           = ["database_url", "slack_signing_secret", "slack_bot_token"]
      moves_traffic_for = var.managed_services
      notify_config     = false
      ingress           = var.slack_interactivity_enabled ? "ALLOW_ALL" : "ALLOW_INTERNAL_ONLY"
      memory            = "512Mi"
      cpu               = "1"
      timeout_seconds   = 120
      min_instances     = 0
      max_instances     = 1
      concurrency       = 4
      db_pool_size      = 1 # the click's claim and outcome rows, then the command's transaction
      db_max_overflow   = 1
      db_extra_sessions = 0
      env = {
        CONSOLE__SLACK_ALLOWED = jsonencode(var.slack_allowed)
        ROLLBACK__PROJECT      = var.project_id
        ROLLBACK__REGION       = var.region
        CANARY__PROJECT        = var.project_id
        CANARY__REGION         = var.region
      }
    }
  }

  # Environment shared by every function (Settings in shared/settings.py).
  common_env = {
    ENVIRONMENT          = "production"
    GCP_PROJECT          = var.project_id
    GCP_REGION           = var.region
    LOG_LEVEL            = var.log_level
    METRICS_BACKEND      = "log"
    PUBSUB_EMULATOR_HOST = ""
    NEO4J_URI            = var.neo4j_uri
    NEO4J_USER           = var.neo4j_user
  }

  notify_config_dir = "/etc/sightops/notify"

  package_dir = startswith(var.package_dir, "/") ? var.package_dir : "${path.module}/${var.package_dir}"
  packages    = jsondecode(file("${local.package_dir}/manifest.json")).packages
  sources     = toset([for f in local.functions : f.source])

  pubsub_functions = { for k, f in local.functions : k => f if f.trigger == "pubsub" }

  # Most PostgreSQL connections sight-ops can open at full scale-out (Sight's API shares
  # the instance's max_connections).
  db_connections = sum([
    for f in local.functions : f.max_instances * (f.db_pool_size + f.db_max_overflow + f.db_extra_sessions)
  ])
  # Settings.db_pool_size / db_max_overflow; none for a function without a database.
  db_env = {
    for k, f in local.functions : k => {
      for name, value in { DB_POOL_SIZE = f.db_pool_size, DB_MAX_OVERFLOW = f.db_max_overflow } :
      name => tostring(value) if f.db_pool_size > 0
    }
  }

  function_secrets = {
    for pair in flatten([
      for fn, f in local.functions : [for s in f.secrets : { function = fn, secret = s }]
    ]) : "${pair.function}/${pair.secret}" => pair
  }
  function_publishes = {
    for pair in flatten([
      for fn, f in local.functions : [for t in f.publishes : { function = fn, topic = t }]
    ]) : "${pair.function}/${pair.topic}" => pair
  }
  cloud_run_managers = {
    for pair in flatten([
      for fn, f in local.functions : [for s in f.moves_traffic_for : { function = fn, service = s }]
    ]) : "${pair.function}/${pair.service}" => pair
  }
}

resource "google_service_account" "fn" {
  for_each = local.functions

  account_id   = "sightops-${replace(each.key, "_", "-")}"
  display_name = "sight-ops ${each.key}"
  description  = "Runtime identity of the ${each.key} function (least privilege: see docs/deploy.md)."
}

# Source archives, named by content hash: a new package is a new object, hence a new build.
resource "google_storage_bucket_object" "source" {
  for_each = local.sources

  bucket       = google_storage_bucket.sources.name
  name         = "functions/${lookup(local.packages, each.key, { zip = "${each.key}-missing.zip" }).zip}"
  source       = "${local.package_dir}/${lookup(local.packages, each.key, { zip = "${each.key}-missing.zip" }).zip}"
  content_type = "application/zip"

  lifecycle {
    precondition {
      condition     = contains(keys(local.packages), each.key)
      error_message = "No package for functions/${each.key}: run `make package` before plan/apply."
    }
  }
}

resource "google_cloudfunctions2_function" "fn" {
  #checkov:skip=CKV_GCP_124:Only kpi and console (IAM-authenticated: run.invoker for kpi_invoker_members / console_invoker_members alone) and, when enabled, alert_intake (Basic auth) and slack_actions (Slack-signed requests) accept external traffic; every event-driven function is ALLOW_INTERNAL_ONLY (local.functions[*].ingress).
  for_each = local.functions

  name        = "sightops-${replace(each.key, "_", "-")}"
  location    = var.region
  description = each.value.description

  build_config {
    runtime           = var.function_runtime
    entry_point       = each.value.entry_point
    service_account   = google_service_account.build.id
    docker_repository = google_artifact_registry_repository.functions.id

    source {
      storage_source {
        bucket = google_storage_bucket.sources.name
        object = google_storage_bucket_object.source[each.value.source].name
      }
    }
  }

  service_config {
    service_account_email            = google_service_account.fn[each.key].email
    available_memory                 = each.value.memory
    available_cpu                    = each.value.cpu
    timeout_seconds                  = each.value.timeout_seconds
    min_instance_count               = each.value.min_instances
    max_instance_count               = each.value.max_instances
    max_instance_request_concurrency = each.value.concurrency
    ingress_settings                 = each.value.ingress
    all_traffic_on_latest_revision   = true
    vpc_connector                    = var.vpc_connector
    vpc_connector_egress_settings    = var.vpc_connector == null ? null : var.vpc_egress
    environment_variables            = merge(local.common_env, local.db_env[each.key], each.value.env)

    dynamic "secret_environment_variables" {
      for_each = each.value.secrets
      content {
        key        = local.secrets[secret_environment_variables.value].env
        project_id = var.project_id
        secret     = google_secret_manager_secret.secret[secret_environment_variables.value].secret_id
        version    = "latest"
      }
    }

    dynamic "secret_volumes" {
      for_each = each.value.notify_config ? [local.notify_config_dir] : []
      content {
        mount_path = secret_volumes.value
        project_id = var.project_id
        secret     = google_secret_manager_secret.notify_config.secret_id
        versions {
          version = google_secret_manager_secret_version.notify_config.version
          path    = "notify.yaml"
        }
      }
    }
  }

  lifecycle {
    precondition {
      condition     = local.db_connections <= var.db_connection_budget
      error_message = "At full scale-out the functions could open ${local.db_connections} PostgreSQL connections, over db_connection_budget (${var.db_connection_budget}): lower max_instances or db_pool_size in local.functions."
    }
    precondition {
      condition     = contains(keys(lookup(local.packages, each.value.source, { entry_points = {} }).entry_points), each.value.entry_point)
      error_message = "functions/${each.value.source}/main.py has no entry point ${each.value.entry_point} (dist/manifest.json): package again or fix local.functions."
    }
  }

  depends_on = [
    google_project_service.api,
    google_secret_manager_secret_iam_member.function,
    google_secret_manager_secret_iam_member.notify_config,
    google_storage_bucket_iam_member.build_reads_sources,
    google_artifact_registry_repository_iam_member.build_writes_functions,
    google_project_iam_member.build_logs,
  ]
}

# --- who may call the functions --------------------------------------------------------------

# One push identity per event-driven function: its subscriptions push with an OIDC token of
# it, and it may invoke that function only (a leaked token or a misrouted subscription
# reaches one function, not all of them).
resource "google_service_account" "push" {
  for_each = local.pubsub_functions

  account_id   = "sightops-push-${replace(each.key, "_", "-")}"
  display_name = "sight-ops Pub/Sub push to ${each.key}"
  description  = "OIDC identity of the push subscriptions delivering events to ${each.key}."
}

resource "google_cloud_run_v2_service_iam_member" "push_invoker" {
  for_each = local.pubsub_functions

  location = var.region
  name     = google_cloudfunctions2_function.fn[each.key].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.push[each.key].member
}

resource "google_cloud_run_v2_service_iam_member" "kpi_invoker" {
  for_each = toset(var.kpi_invoker_members)

  location = var.region
  name     = google_cloudfunctions2_function.fn["kpi"].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}

resource "google_cloud_run_v2_service_iam_member" "scheduler_invokes_notify_flush" {
  location = var.region
  name     = google_cloudfunctions2_function.fn["notify_flush"].service_config[0].service
  role     = "roles/run.invoker"
  member   = google_service_account.scheduler.member
}

# Cloud Monitoring webhooks carry no Google identity, only HTTP Basic auth (checked in
# constant time by alert_intake against its two secrets), so the endpoint must be public
# when the webhook channel is enabled.
resource "google_cloud_run_v2_service_iam_member" "alert_intake_public" {
  count = var.alert_webhook_enabled ? 1 : 0

  location = var.region
  name     = google_cloudfunctions2_function.fn["alert_intake"].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}
