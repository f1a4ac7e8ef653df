# What other stacks and operators need after an apply.

output "function_urls" {
  description = "HTTPS endpoint of each function (push subscriptions, the scheduler and kpi's callers use these)."
  value       = { for k, f in google_cloudfunctions2_function.fn : k => f.service_config[0].uri }
}

output "function_service_accounts" {
  description = "Runtime service account email of each function (the IAM matrix is in docs/deploy.md)."
  value       = { for k, sa in google_service_account.fn : k => sa.email }
}

output "topics" {
  description = "Full names of the topics sight-ops consumes and publishes (cloud-builds is where Cloud Build publishes)."
  value       = local.topic_ids
}

output "push_subscriptions" {
  description = "Push subscription of each (function, topic) pair, with its dead-letter topic."
  value = {
    for k, s in google_pubsub_subscription.push : k => {
      subscription      = s.id
      dead_letter_topic = google_pubsub_topic.dead_letter[k].id
    }
  }
}

output "dead_letter_subscriptions" {
  description = "Pull subscriptions holding dead-lettered messages for 7 days (see docs/runbooks/rejected-and-dead-lettered-messages.md)."
  value       = [for s in google_pubsub_subscription.dead_letter_hold : s.id]
}

output "secrets_to_fill" {
  description = "Secret IDs created empty; add a version to each before the functions can start (docs/deploy.md)."
  value       = concat([for s in google_secret_manager_secret.secret : s.secret_id], [for s in google_secret_manager_secret.slack_route : s.secret_id])
}

output "notification_channels" {
  description = "Notification channels every alert policy uses."
  value       = local.alert_channels
}

output "alert_policies" {
  description = "Alert policy names, by purpose."
  value = {
    error_rate_5xx = google_monitoring_alert_policy.error_rate_5xx.name
    latency_p95    = google_monitoring_alert_policy.latency_p95.name
    db_connections = google_monitoring_alert_policy.db_connections.name
    memory         = google_monitoring_alert_policy.memory.name
    # sight-ops itself (watch.tf)
    dead_letter_backlog = google_monitoring_alert_policy.dead_letter_backlog.name
    rejected_messages   = google_monitoring_alert_policy.rejected_messages.name
    function_errors     = google_monitoring_alert_policy.function_errors.name
    push_backlog_age    = google_monitoring_alert_policy.push_backlog_age.name
    decision_overdue    = google_monitoring_alert_policy.decision_overdue.name
    function_execution_time = {
      for fn, p in google_monitoring_alert_policy.function_execution_time : fn => p.name
    }
    # guardrails on Sight (guardrails.tf)
    redis_memory      = google_monitoring_alert_policy.redis_memory.name
    cloudsql_disk     = google_monitoring_alert_policy.cloudsql_disk.name
    db_connections_70 = google_monitoring_alert_policy.db_connections_70.name
  }
}

output "billing_budget" {
  description = "The monthly budget (guardrails.tf) and the topic its updates are published to for notify."
  value = {
    budget = google_billing_budget.monthly.name
    topic  = google_pubsub_topic.topic["billing-budget"].id
  }
}

output "canary_tick_job" {
  description = "Cloud Scheduler job waking the canary every minute; null when no service is opted in (canary_services empty)."
  value       = one(google_cloud_scheduler_job.canary_tick[*].id)
}

output "build_triggers" {
  description = "Cloud Build trigger IDs: CI on push and deploy on sight.ops.migration.succeeded."
  value = {
    ci     = google_cloudbuild_trigger.ci.trigger_id
    deploy = google_cloudbuild_trigger.deploy.trigger_id
  }
}

output "image_repository" {
  description = "Artifact Registry path CI pushes images to (the _IMAGE_REPO substitution)."
  value       = local.image_repo
}

output "source_bucket" {
  description = "Bucket holding the content-hashed function zips."
  value       = google_storage_bucket.sources.name
}
