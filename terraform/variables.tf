# Inputs. Every variable is documented here and in docs/deploy.md; none holds a secret
# value (secrets are created empty by secrets.tf and filled with `gcloud secrets versions add`).

variable "project_id" {
  description = "Google Cloud project that runs Sight and sight-ops."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]$", var.project_id))
    error_message = "project_id must be a project ID (6-30 lowercase letters, digits, hyphens)."
  }
}

variable "region" {
  description = "Region for the functions, Cloud Run services, scheduler jobs and the source bucket."
  type        = string
  default     = "europe-west1"

  validation {
    condition     = can(regex("^[a-z]+-[a-z]+[0-9]$", var.region))
    error_message = "region must be a Google Cloud region such as europe-west1."
  }
}

variable "labels" {
  description = "Extra labels put on every resource that takes labels."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.labels : can(regex("^[a-z][a-z0-9_-]{0,62}$", k)) && can(regex("^[a-z0-9_-]{0,63}$", v))])
    error_message = "labels keys and values must be lowercase letters, digits, '_' or '-' (keys start with a letter)."
  }
}

variable "package_dir" {
  description = "Directory holding `make package` output (manifest.json and the content-hashed zips), relative to this module or absolute."
  type        = string
  default     = "../dist"

  validation {
    condition     = length(trimspace(var.package_dir)) > 0
    error_message = "package_dir must not be empty."
  }
}

variable "function_runtime" {
  description = "Cloud Functions runtime; must match the Python the packages were pinned with (3.11)."
  type        = string
  default     = "python311"

  validation {
    condition     = can(regex("^python3[0-9]{2}$", var.function_runtime))
    error_message = "function_runtime must be a Python runtime such as python311."
  }
}

variable "managed_services" {
  description = "Cloud Run services of Sight that the release pipeline deploys and rollback may move traffic on (in var.region)."
  type        = list(string)
  default     = ["sight-api"]

  validation {
    condition     = length(var.managed_services) > 0 && alltrue([for s in var.managed_services : can(regex("^[a-z]([-a-z0-9]{0,47}[a-z0-9])?$", s))])
    error_message = "managed_services must be a non-empty list of Cloud Run service names."
  }
}

variable "managed_services_runtime_service_account" {
  description = "Email of the service account the managed Cloud Run services run as; rollback and the deploy pipeline need iam.serviceAccounts.actAs on it (and on nothing else)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9-]+\\.iam\\.gserviceaccount\\.com$", var.managed_services_runtime_service_account))
    error_message = "managed_services_runtime_service_account must be a service account email (...@PROJECT.iam.gserviceaccount.com)."
  }
}

variable "vpc_connector" {
  description = "Serverless VPC Access connector (projects/P/locations/R/connectors/N) through which the functions reach Cloud SQL (private IP), Memorystore and Neo4j; null for none."
  type        = string
  default     = null

  validation {
    condition     = var.vpc_connector == null || can(regex("^projects/[^/]+/locations/[^/]+/connectors/[^/]+$", var.vpc_connector))
    error_message = "vpc_connector must be a full connector name projects/P/locations/R/connectors/N, or null."
  }
}

variable "vpc_egress" {
  description = "Which egress goes through the VPC connector: PRIVATE_RANGES_ONLY (default: Google APIs stay direct) or ALL_TRAFFIC."
  type        = string
  default     = "PRIVATE_RANGES_ONLY"

  validation {
    condition     = contains(["PRIVATE_RANGES_ONLY", "ALL_TRAFFIC"], var.vpc_egress)
    error_message = "vpc_egress must be PRIVATE_RANGES_ONLY or ALL_TRAFFIC."
  }
}

variable "cloudsql_instance" {
  description = "Name of the Cloud SQL for PostgreSQL instance (in project_id) holding Sight's database; names it in the connections alert."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{0,96}$", var.cloudsql_instance))
    error_message = "cloudsql_instance must be a Cloud SQL instance name (not the connection name)."
  }
}

variable "max_connections" {
  description = "The instance's max_connections flag; the connections alert fires above 90% of it."
  type        = number
  default     = 100

  validation {
    condition     = var.max_connections >= 14 && var.max_connections <= 262143 && floor(var.max_connections) == var.max_connections
    error_message = "max_connections must be an integer between 14 and 262143 (Cloud SQL's range)."
  }
}

variable "db_connection_budget" {
  description = "Most PostgreSQL connections sight-ops may hold at full scale-out: the sum over functions of max_instances * (DB_POOL_SIZE + DB_MAX_OVERFLOW + own sessions) must not exceed it (plan fails). The rest of max_connections is Sight's API's."
  type        = number
  default     = 60 # 52 in use (maintain's 2 included), under the seed's 70 % of max_connections

  validation {
    condition     = var.db_connection_budget >= 1 && var.db_connection_budget < var.max_connections && floor(var.db_connection_budget) == var.db_connection_budget
    error_message = "db_connection_budget must be a whole number from 1 to max_connections - 1 (Sight's API needs connections too)."
  }
}

variable "neo4j_uri" {
  description = "Bolt URI of Sight's Neo4j 5 (e.g. neo4j+s://xxxx.databases.neo4j.io); the password is the sightops-neo4j-password secret."
  type        = string

  validation {
    condition     = can(regex("^(neo4j|bolt)(\\+s|\\+ssc)?://[^\\s]+$", var.neo4j_uri))
    error_message = "neo4j_uri must be a neo4j:// or bolt:// URI (optionally +s / +ssc)."
  }
}

variable "neo4j_user" {
  description = "Neo4j user the functions connect as."
  type        = string
  default     = "neo4j"

  validation {
    condition     = length(var.neo4j_user) > 0
    error_message = "neo4j_user must not be empty."
  }
}

variable "log_level" {
  description = "LOG_LEVEL of every function."
  type        = string
  default     = "INFO"

  validation {
    condition     = contains(["DEBUG", "INFO", "WARNING", "ERROR"], var.log_level)
    error_message = "log_level must be DEBUG, INFO, WARNING or ERROR."
  }
}

variable "rollback_dry_run" {
  description = "ROLLBACK__DRY_RUN: rollback decides, records and publishes, but never moves traffic. Start with true on a new project."
  type        = bool
  default     = false
}

variable "max_delivery_attempts" {
  description = "Deliveries of one message to a function before Pub/Sub moves it to the subscription's dead-letter topic (the runbooks assume 5)."
  type        = number
  default     = 5

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100 (Pub/Sub's bounds)."
  }
}

variable "retry_backoff_seconds" {
  description = "Pub/Sub exponential retry backoff bounds for every push subscription, in seconds."
  type = object({
    minimum = number
    maximum = number
  })
  default = {
    minimum = 10
    maximum = 600
  }

  validation {
    condition     = var.retry_backoff_seconds.minimum >= 0 && var.retry_backoff_seconds.maximum <= 600 && var.retry_backoff_seconds.minimum <= var.retry_backoff_seconds.maximum
    error_message = "retry_backoff_seconds must satisfy 0 <= minimum <= maximum <= 600."
  }
}

variable "kpi_invoker_members" {
  description = "Service accounts allowed to call the kpi HTTP function with an ID token: the dashboard's (the Sight API's), as serviceAccount:EMAIL. Empty: nobody can call it."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.kpi_invoker_members : can(regex("^serviceAccount:[^@\\s]+@[^@\\s]+\\.gserviceaccount\\.com$", m))])
    error_message = "kpi_invoker_members must be service accounts (serviceAccount:NAME@PROJECT.iam.gserviceaccount.com); users, groups, allUsers and allAuthenticatedUsers are not allowed."
  }
}

variable "alert_webhook_enabled" {
  description = "Make alert_intake reachable by Cloud Monitoring webhooks: it then accepts unauthenticated HTTP and checks Basic auth itself (the channel itself is alert_webhook_channel)."
  type        = bool
  default     = false
}

variable "alert_webhook_channel" {
  description = "Name (projects/P/notificationChannels/ID) of the webhook_basicauth channel to alert_intake, created with gcloud from the alert-intake secrets (docs/deploy.md) so no credential enters Terraform state; null for none. Needs alert_webhook_enabled."
  type        = string
  default     = null

  validation {
    condition     = var.alert_webhook_channel == null || (var.alert_webhook_enabled && can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", var.alert_webhook_channel)))
    error_message = "alert_webhook_channel must be a full channel name projects/P/notificationChannels/ID, and needs alert_webhook_enabled = true (else alert_intake is internal-only)."
  }
}

variable "alert_notification_channels" {
  description = "Extra notification channel IDs (e-mail, PagerDuty, ...) every alert policy also notifies."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for c in var.alert_notification_channels : can(regex("^projects/[^/]+/notificationChannels/[0-9]+$", c))])
    error_message = "alert_notification_channels must be full channel names projects/P/notificationChannels/ID."
  }
}

variable "notify_config_file" {
  description = "notify's YAML configuration (routes, grouping; webhook references only, never URLs), mounted into notify from Secret Manager."
  type        = string
  default     = "../config/notify.yaml"

  validation {
    condition     = can(regex("\\.ya?ml$", var.notify_config_file))
    error_message = "notify_config_file must be a .yaml or .yml file."
  }
}

variable "slack_route_secret_ids" {
  description = "IDs of extra secrets holding Slack webhook URLs that notify's routes reference (created empty here, read by notify only)."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for s in var.slack_route_secret_ids : can(regex("^[a-zA-Z0-9_-]{1,255}$", s))])
    error_message = "slack_route_secret_ids must be Secret Manager secret IDs."
  }
}

variable "kpi_refresh_schedule" {
  description = "Cron schedule (in scheduler_time_zone) of the job publishing {\"all_active\": true} to kpi-refresh."
  type        = string
  default     = "*/10 * * * *"

  validation {
    condition     = length(split(" ", var.kpi_refresh_schedule)) == 5
    error_message = "kpi_refresh_schedule must be a five-field cron expression."
  }
}

variable "notify_flush_schedule" {
  description = "Cron schedule of the job calling notify_flush (due alert groups and repeat reminders)."
  type        = string
  default     = "* * * * *"

  validation {
    condition     = length(split(" ", var.notify_flush_schedule)) == 5
    error_message = "notify_flush_schedule must be a five-field cron expression."
  }
}

variable "prune_schedule" {
  description = "Cron schedule of the job asking kpi_refresh to prune old receipts and rejected events (docs/schema.md, Pruning)."
  type        = string
  default     = "23 * * * *"

  validation {
    condition     = length(split(" ", var.prune_schedule)) == 5
    error_message = "prune_schedule must be a five-field cron expression."
  }
}

variable "release_report_schedule" {
  description = "Cron schedule of the job asking kpi_refresh for the weekly release metrics digest (docs/metrics.md)."
  type        = string
  default     = "0 9 * * 1" # Mondays 09:00: the 7 days up to then, one digest per ISO week

  validation {
    condition     = length(split(" ", var.release_report_schedule)) == 5
    error_message = "release_report_schedule must be a five-field cron expression."
  }
}

variable "scheduler_time_zone" {
  description = "Time zone of the Cloud Scheduler jobs."
  type        = string
  default     = "Etc/UTC"

  validation {
    condition     = length(var.scheduler_time_zone) > 0
    error_message = "scheduler_time_zone must be a tz database name."
  }
}

variable "github_owner" {
  description = "GitHub owner of the repository whose pushes run CI (cloudbuild.yaml) and which holds cloudbuild-deploy.yaml. Needs the Cloud Build GitHub app installed."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9][A-Za-z0-9-]{0,38}$", var.github_owner))
    error_message = "github_owner must be a GitHub user or organisation name."
  }
}

variable "github_repo" {
  description = "GitHub repository name (see github_owner)."
  type        = string

  validation {
    condition     = can(regex("^[A-Za-z0-9._-]{1,100}$", var.github_repo))
    error_message = "github_repo must be a GitHub repository name."
  }
}

variable "ci_branch_regex" {
  description = "Branches whose pushes run CI (RE2)."
  type        = string
  default     = "^main$"

  validation {
    condition     = can(regexall(var.ci_branch_regex, "main"))
    error_message = "ci_branch_regex must be a valid regular expression."
  }
}

variable "ci_service" {
  description = "_SERVICE substitution of the CI trigger: the managed service this repository's CI releases. CI pushes its image as <image repo>/<ci_service>:<commit> (the name the deploy deploys) and migrate acts on the CI trigger's builds. \"\" opts out: CI releases no service and migrate skips its builds."
  type        = string
  default     = "sight-api"

  validation {
    condition     = var.ci_service == "" || contains(var.managed_services, var.ci_service)
    error_message = "ci_service must be empty or one of managed_services."
  }
}

variable "migrate_trigger_ids" {
  description = "Ids of the Cloud Build triggers (outside this stack) whose SUCCESS builds migrate acts on: the managed services' CI. Builds no listed trigger ran, manual ones included, are never migrated or deployed."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.migrate_trigger_ids : can(regex("^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", id))])
    error_message = "migrate_trigger_ids must be Cloud Build trigger ids (lowercase UUIDs)."
  }
}

variable "deploy_branch" {
  description = "Branch the deploy trigger reads cloudbuild-deploy.yaml (and the smoke runner) from."
  type        = string
  default     = "main"

  validation {
    condition     = length(var.deploy_branch) > 0
    error_message = "deploy_branch must not be empty."
  }
}

variable "image_repository_id" {
  description = "Artifact Registry Docker repository (in var.region) CI pushes images to."
  type        = string
  default     = "sight"

  validation {
    condition     = can(regex("^[a-z]([a-z0-9-]{0,61}[a-z0-9])?$", var.image_repository_id))
    error_message = "image_repository_id must be a valid Artifact Registry repository ID."
  }
}

variable "canary_services" {
  description = "Managed services whose releases go through the canary (docs/canary.md), each with its traffic steps (percent, rising, ending at 100) and the time limit per step in seconds; CANARY__SERVICES of the canary function. Empty: no canary, and no tick job."
  type = map(object({
    steps      = optional(list(number), [5, 25, 50, 100])
    max_step_s = optional(number, 1800)
  }))
  default = {}

  validation {
    condition     = alltrue([for s in keys(var.canary_services) : contains(var.managed_services, s)])
    error_message = "canary_services keys must be managed_services: the canary moves traffic on those only."
  }
  validation {
    condition = alltrue([
      for plan in values(var.canary_services) :
      try(plan.steps[length(plan.steps) - 1], 0) == 100 && alltrue([
        for i, step in plan.steps : floor(step) == step && step >= 1 && (i == 0 || step > plan.steps[max(i - 1, 0)])
      ]) && plan.max_step_s > 0
    ])
    error_message = "canary_services steps must be whole percents from 1, strictly rising, ending at 100; max_step_s must be positive."
  }
}

variable "canary_dry_run" {
  description = "CANARY__DRY_RUN: the canary analyses, records and publishes its decisions but never moves traffic. Start with true on a new project."
  type        = bool
  default     = false
}

variable "redis_instance" {
  description = "Name of the Memorystore for Redis instance (in var.region) that REDIS_URL points at; names it in the Redis memory guardrail (guardrails.tf)."
  type        = string

  validation {
    condition     = can(regex("^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$", var.redis_instance))
    error_message = "redis_instance must be a Memorystore instance name (lowercase letters, digits, hyphens; not the full path)."
  }
}

variable "billing_account" {
  description = "Cloud Billing account ID (XXXXXX-XXXXXX-XXXXXX) paying for project_id: the budget (guardrails.tf) is created on it, so whoever applies needs roles/billing.costsManager (or admin) on that account."
  type        = string

  validation {
    condition     = can(regex("^[0-9A-Z]{6}-[0-9A-Z]{6}-[0-9A-Z]{6}$", var.billing_account))
    error_message = "billing_account must be a billing account ID such as 012345-6789AB-CDEF01."
  }
}

variable "budget" {
  description = "Monthly budget on this project's spend (guardrails.tf): amount in currency_code (the billing account's currency), alert thresholds as fractions of it, and the billing services counted (default Cloud Run and Cloud Functions: Sight and the sight-ops functions; [] counts every service). Each update is published to billing-budget for notify."
  type = object({
    amount        = optional(number, 200)
    currency_code = optional(string, "USD")
    thresholds    = optional(list(number), [0.5, 0.9, 1.0])
    services      = optional(list(string), ["services/152E-C115-5142", "services/29E7-DA93-CA13"])
  })
  default = {}

  validation {
    condition = (
      var.budget.amount > 0 && floor(var.budget.amount) == var.budget.amount
      && can(regex("^[A-Z]{3}$", var.budget.currency_code))
      && length(var.budget.thresholds) > 0
      && alltrue([for t in var.budget.thresholds : t > 0 && t <= 10])
      && alltrue([for s in var.budget.services : can(regex("^services/[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}$", s))])
    )
    error_message = "budget: amount a positive whole number, currency_code an ISO 4217 code, thresholds fractions in (0, 10], services billing service names services/XXXX-XXXX-XXXX."
  }
}

variable "maintain_schedule" {
  description = "Cron schedule of the daily request to maintain: ANALYZE, REINDEX CONCURRENTLY of bloated indexes, Neo4j index states (docs/maintain.md). Pick a quiet hour: a rebuild reads the whole table."
  type        = string
  default     = "30 3 * * *"

  validation {
    condition     = length(split(" ", var.maintain_schedule)) == 5
    error_message = "maintain_schedule must be a five-field cron expression."
  }
}

variable "maintain_dry_run" {
  description = "MAINTAIN__DRY_RUN: maintain estimates, records and publishes what it would rebuild, and rebuilds nothing. Start with true on a new project to see its estimates first."
  type        = bool
  default     = false
}

variable "backup_retention_days" {
  description = "Retention policy of the backup bucket: no object younger than this can be deleted or replaced (docs/backups.md). Lifecycle deletes daily backups at 30 days and weekly ones at 84."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 30
    error_message = "backup_retention_days must be 1..30 (longer would outlive the daily lifecycle rule)."
  }
}

variable "backup_postgres_schedule" {
  description = "Cron schedule of the daily PostgreSQL backup (then its drill). Pick a quiet hour, away from maintain_schedule."
  type        = string
  default     = "15 2 * * *"

  validation {
    condition     = length(split(" ", var.backup_postgres_schedule)) == 5
    error_message = "backup_postgres_schedule must be a five-field cron expression."
  }
}

variable "backup_neo4j_schedule" {
  description = "Cron schedule of the weekly Neo4j backup (then its drill)."
  type        = string
  default     = "45 2 * * 0"

  validation {
    condition     = length(split(" ", var.backup_neo4j_schedule)) == 5
    error_message = "backup_neo4j_schedule must be a five-field cron expression."
  }
}

variable "backup_drill_schedule" {
  description = "Cron schedule of the weekly restore drill of the newest backup of each store."
  type        = string
  default     = "30 4 * * 0"

  validation {
    condition     = length(split(" ", var.backup_drill_schedule)) == 5
    error_message = "backup_drill_schedule must be a five-field cron expression."
  }
}

variable "backup_scratch_neo4j_uri" {
  description = "Bolt URI of the Neo4j the restore drill restores into and WIPES (never the production graph; backup_drill refuses NEO4J_URI)."
  type        = string
  default     = "bolt://neo4j-scratch.internal:7687"

  validation {
    condition     = can(regex("^(bolt|neo4j)(\\+s|\\+ssc)?://", var.backup_scratch_neo4j_uri)) && var.backup_scratch_neo4j_uri != var.neo4j_uri
    error_message = "backup_scratch_neo4j_uri must be a bolt:// or neo4j:// URI other than neo4j_uri."
  }
}

variable "backup_postgres_max_age_hours" {
  description = "Alert when the newest verified PostgreSQL backup is older than this many hours (daily backups: 26)."
  type        = number
  default     = 26

  validation {
    condition     = var.backup_postgres_max_age_hours >= 25
    error_message = "backup_postgres_max_age_hours must leave a daily backup time to run (>= 25)."
  }
}

variable "backup_neo4j_max_age_hours" {
  description = "Alert when the newest verified Neo4j backup is older than this many hours (weekly backups: 8 days = 192)."
  type        = number
  default     = 192

  validation {
    condition     = var.backup_neo4j_max_age_hours >= 169
    error_message = "backup_neo4j_max_age_hours must leave a weekly backup time to run (>= 169)."
  }
}
