# The release console (docs/console.md): read-only pages about what sight-ops did and why.
# The function itself is declared with the others (local.functions["console"],
# functions.tf); here: who may open it, and the narrow grants behind what it reads.
#
# Access: Cloud Run IAM only. No public invoker: run.invoker for console_invoker_members
# (a group of on-call engineers), who open it with `gcloud run services proxy` or behind an
# IAP-protected load balancer (docs/console.md, "Production"). The function checks no one
# itself and renders no secret.
#
# What its account holds, and nothing else: its own secret (the read-only database user's
# URL, local.functions), sightopsConsoleRead on each managed service (the traffic split),
# pubsub.subscriber on each dead-letter hold (a page view pulls, then gives every message
# back; it never acknowledges), and the span writer every function has (iam.tf).

variable "console_url" {
  description = "Where people open the console (its run.app URL or the IAP load balancer's address), without a trailing slash. notify links every Slack message about a release to <console_url>/releases/<release_id>; empty: no links."
  type        = string
  default     = ""

  validation {
    condition     = var.console_url == "" || can(regex("^https://[^\\s<>|]+[^/\\s<>|]$", var.console_url))
    error_message = "console_url must be empty or an https URL without a trailing slash (and no <, > or |, which would break a Slack link)."
  }
}

variable "console_invoker_members" {
  description = "Who may open the console (roles/run.invoker on it): group:, user: or serviceAccount: members, e.g. [\"group:sight-oncall@example.com\"]. Empty: nobody. Never allUsers or allAuthenticatedUsers."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for m in var.console_invoker_members : can(regex("^(group|user|serviceAccount):[^@\\s]+@[^@\\s]+\\.[a-z]+$", m))])
    error_message = "console_invoker_members must be group:, user: or serviceAccount: members; allUsers, allAuthenticatedUsers and domain: are not allowed (the console is not public)."
  }
}

resource "google_cloud_run_v2_service_iam_member" "console_invoker" {
  for_each = toset(var.console_invoker_members)

  location = var.region
  name     = google_cloudfunctions2_function.fn["console"].service_config[0].service
  role     = "roles/run.invoker"
  member   = each.value
}

# The console shows each managed service's traffic split and revisions: GetService and
# ListRevisions (shared/rollback/_cloudrun.py CloudRun.read), nothing that changes them.
resource "google_project_iam_custom_role" "console_read" {
  project     = var.project_id
  role_id     = "sightopsConsoleRead"
  title       = "sight-ops console: read Cloud Run traffic"
  description = "Read a Cloud Run service and list its revisions. No update, no create, no delete."
  permissions = [
    "run.revisions.list",
    "run.services.get",
  ]
}

resource "google_cloud_run_v2_service_iam_member" "console_reads_services" {
  for_each = toset(var.managed_services)

  location = var.region
  name     = each.value
  role     = google_project_iam_custom_role.console_read.name
  member   = google_service_account.fn["console"].member
}

# /messages lists the dead letters waiting on each hold subscription (shared/dlq.py
# DeadLetterHolds): pulling needs pubsub.subscriptions.consume, which only
# roles/pubsub.subscriber holds. The console gives every pulled message back (ack deadline
# 0) and never acknowledges one: replaying stays `sightops dlq replay`'s job.
resource "google_pubsub_subscription_iam_member" "console_reads_dead_letters" {
  for_each = local.subscriptions

  subscription = google_pubsub_subscription.dead_letter_hold[each.key].id
  role         = "roles/pubsub.subscriber"
  member       = google_service_account.fn["console"].member
}

# --- Slack's buttons (local.functions["slack_actions"]) ------------------------------

variable "slack_interactivity_enabled" {
  description = "Let Slack reach slack_actions (the buttons on notify's messages): public, but only requests signed with the Slack app's signing secret (sightops-slack-signing-secret), from a user in slack_allowed, act."
  type        = bool
  default     = false
}

variable "slack_allowed" {
  description = "Slack user ids (U..., W...) and user group ids (S..., expanded with the bot token's usergroups:read) who may press the buttons. Anyone else is refused and recorded."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for id in var.slack_allowed : can(regex("^[UWS][A-Z0-9]{2,20}$", id))])
    error_message = "slack_allowed takes Slack user ids (U..., W...) or user group ids (S...)."
  }
}

# Slack carries no Google identity: the endpoint must be public to be reached at all. What
# guards it is the signature (v0 HMAC within 5 minutes), the allow-list and the per-click
# claim (shared/console/_interactions.py).
resource "google_cloud_run_v2_service_iam_member" "slack_actions_public" {
  count = var.slack_interactivity_enabled ? 1 : 0

  location = var.region
  name     = google_cloudfunctions2_function.fn["slack_actions"].service_config[0].service
  role     = "roles/run.invoker"
  member   = "allUsers"
}
