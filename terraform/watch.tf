# sight-ops watches itself (issue 17; docs/observability.md lists every policy and its
# runbook). Like Sight's four policies (monitoring.tf), each notifies local.alert_channels
# (the Pub/Sub channel to monitoring-alerts, which notify posts to Slack), links its runbook,
# and sends open and close notifications. None is labelled auto_rollback: moving Sight's
# traffic fixes none of these.
#
# Two signals come from the functions' own log lines rather than Cloud Monitoring metrics:
# production writes metrics as log lines (METRICS_BACKEND=log), and the handler runtime
# writes one outcome line per delivery (shared/runtime/_handler.py, EventHandler._log) whose
# `logging.googleapis.com/labels` (consumer, outcome, event_type) Cloud Run's logging agent
# turns into the entry's `labels`. Log-based metrics count those lines.

locals {
  # A gen2 function runs as the Cloud Run service of its own name.
  function_service_names = { for fn in keys(local.functions) : fn => "sightops-${replace(fn, "_", "-")}" }
  own_services_filter    = "resource.label.service_name = starts_with(\"sightops-\")"
  function_log_filter    = "resource.type=\"cloud_run_revision\" AND resource.labels.service_name=~\"^sightops-\""

  push_subscriptions_filter = format(
    "resource.label.subscription_id = one_of(%s)",
    join(", ", [for s in sort(keys(local.subscriptions)) : "\"${s}\""]),
  )
  dead_letter_holds_filter = format(
    "resource.label.subscription_id = one_of(%s)",
    join(", ", [for s in sort(keys(local.subscriptions)) : "\"${s}--dead-letter\""]),
  )

  # Thresholds (the runbooks explain each).
  push_age_alert_s       = 600 # + 5 minutes' duration: as old as rollback's max event age (900 s)
  function_error_ratio   = 0.1 # 5xx (a `retry` answers 503) per function over 5-minute windows
  execution_time_pct     = 80  # p99 latency, as a percentage of the function's timeout_seconds
  canary_tick_absence_s  = 600 # ten ticks missed
  decision_overdue_align = "300s"
}

# --- dead letters -----------------------------------------------------------------------------

resource "google_monitoring_alert_policy" "dead_letter_backlog" {
  display_name = "sight-ops dead letters waiting"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "alert-dead-letter-backlog"
  }

  conditions {
    display_name = "Messages on a dead-letter hold subscription for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\" AND ${local.dead_letter_holds_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.subscription_id}"
    content   = <<-EOT
      Messages are waiting on **$${resource.label.subscription_id}**: a function failed
      on every one of its ${var.max_delivery_attempts} delivery attempts and Pub/Sub
      dead-lettered them. Nothing handles them until someone replays or discards them.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-dead-letter-backlog.md
    EOT
  }
}

# --- rejected messages ------------------------------------------------------------------------

# The `events` counter with outcome=rejected (shared/runtime/_handler.py) exists as a log line
# only at DEBUG; the outcome line itself (WARNING, or ERROR for a crash) is always written.
resource "google_logging_metric" "rejected_messages" {
  name        = "sightops-rejected-messages"
  description = "Deliveries a sight-ops function rejected (kept in ops.rejected_events): the runtime's outcome lines with labels.outcome=rejected."
  filter      = "${local.function_log_filter} AND labels.outcome=\"rejected\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "sight-ops rejected messages"

    labels {
      key         = "consumer"
      value_type  = "STRING"
      description = "The function that rejected the message."
    }
    labels {
      key         = "event_type"
      value_type  = "STRING"
      description = "The message's type attribute (or its topic)."
    }
  }

  label_extractors = {
    consumer   = "EXTRACT(labels.consumer)"
    event_type = "EXTRACT(labels.event_type)"
  }
}

resource "google_monitoring_alert_policy" "rejected_messages" {
  display_name = "sight-ops rejected messages"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook = "alert-rejected-messages"
  }

  conditions {
    display_name = "A function rejected a message in the last 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.rejected_messages.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "0s"
      # No line is no data: the incident closes instead of staying open on silence.
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.consumer"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${metric.label.consumer} rejected messages"
    content   = <<-EOT
      **$${metric.label.consumer}** rejected messages it can never handle (bad JSON, wrong
      schema, a parser crash, a data error). They were acknowledged and kept in
      `ops.rejected_events`; every one is a producer bug or a sight-ops bug.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-rejected-messages.md
    EOT
  }
}

# --- the functions: errors, execution time ----------------------------------------------------

# 5xx answers of the functions' Cloud Run services. An event-driven function answers 503 for
# `retry` (Pub/Sub redelivers) and 200 for everything else, so this is the retry rate there;
# for the HTTP functions (kpi, alert_intake, notify_flush) it is their error rate.
resource "google_monitoring_alert_policy" "function_errors" {
  display_name = "sight-ops function errors above 10%"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "alert-function-errors"
  }

  conditions {
    display_name = "5xx above 10% of a function's requests for 10 minutes"

    condition_threshold {
      filter             = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_count\" AND metric.label.response_code_class = \"5xx\" AND ${local.own_services_filter}"
      denominator_filter = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_count\" AND ${local.own_services_filter}"
      comparison         = "COMPARISON_GT"
      threshold_value    = local.function_error_ratio
      duration           = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      denominator_aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["resource.label.service_name"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.service_name} answering 5xx"
    content   = <<-EOT
      More than 10% of the requests to **$${resource.label.service_name}** answered 5xx
      for 10 minutes. For an event-driven function a 503 is a `retry`: Pub/Sub delivers
      again, and after ${var.max_delivery_attempts} attempts dead-letters the message.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-function-errors.md
    EOT
  }
}

# One policy per function: the threshold is a share of that function's own timeout (a
# migration may take minutes, a KPI request may not).
resource "google_monitoring_alert_policy" "function_execution_time" {
  for_each = local.functions

  display_name = "sight-ops ${each.key} execution time near its timeout"
  combiner     = "OR"
  severity     = "WARNING"
  user_labels = {
    runbook  = "alert-function-execution-time"
    function = replace(each.key, "_", "-")
  }

  conditions {
    display_name = "p99 request latency above ${local.execution_time_pct}% of ${each.value.timeout_seconds} s for 10 minutes"

    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"run.googleapis.com/request_latencies\" AND resource.label.service_name = \"${local.function_service_names[each.key]}\""
      comparison      = "COMPARISON_GT"
      threshold_value = each.value.timeout_seconds * 10 * local.execution_time_pct # milliseconds
      duration        = "600s"

      aggregations {
        alignment_period     = "300s"
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_PERCENTILE_99"
        group_by_fields      = ["resource.label.service_name"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] ${local.function_service_names[each.key]} p99 near ${each.value.timeout_seconds} s"
    content   = <<-EOT
      The 99th percentile execution time of **${local.function_service_names[each.key]}**
      stayed above ${local.execution_time_pct}% of its ${each.value.timeout_seconds} s
      timeout for 10 minutes. A delivery that reaches the timeout is cut off and delivered
      again.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-function-execution-time.md
    EOT
  }
}

# --- push subscriptions: how long the oldest message has waited ---------------------------------

resource "google_monitoring_alert_policy" "push_backlog_age" {
  display_name = "sight-ops oldest unacked message above 10 minutes"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "alert-push-backlog-age"
  }

  conditions {
    display_name = "Oldest unacked message on a push subscription older than ${local.push_age_alert_s} s for 5 minutes"

    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\" AND ${local.push_subscriptions_filter}"
      comparison      = "COMPARISON_GT"
      threshold_value = local.push_age_alert_s # seconds
      duration        = "300s"

      aggregations {
        alignment_period     = "60s"
        per_series_aligner   = "ALIGN_MAX"
        cross_series_reducer = "REDUCE_MAX"
        group_by_fields      = ["resource.label.subscription_id"]
      }
      trigger {
        count = 1
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${resource.label.subscription_id} is falling behind"
    content   = <<-EOT
      The oldest message on **$${resource.label.subscription_id}** has waited more than
      ${local.push_age_alert_s / 60} minutes for 5 minutes. Past 15 minutes rollback and the
      canary drop events as stale: they are never acted on.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-push-backlog-age.md
    EOT
  }
}

# --- rollback and canary: no decision within their bound -------------------------------------

# A rollback or canary delivery dropped as stale (older than ROLLBACK__MAX_EVENT_AGE_S /
# CANARY__MAX_EVENT_AGE_S, 15 minutes): the smoke failure, incident, canary request or tick
# it carried was never decided. The runtime writes `outcome=stale` at INFO.
resource "google_logging_metric" "decision_overdue" {
  name        = "sightops-decision-overdue"
  description = "rollback and canary deliveries dropped as stale: no decision within their maximum event age (labels.outcome=stale)."
  filter      = "${local.function_log_filter} AND labels.consumer=(\"rollback\" OR \"canary\") AND labels.outcome=\"stale\""

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "sight-ops undecided rollback and canary events"

    labels {
      key         = "consumer"
      value_type  = "STRING"
      description = "rollback or canary."
    }
    labels {
      key         = "event_type"
      value_type  = "STRING"
      description = "The dropped message's type attribute (or its topic, for an incident)."
    }
  }

  label_extractors = {
    consumer   = "EXTRACT(labels.consumer)"
    event_type = "EXTRACT(labels.event_type)"
  }
}

# Every tick the canary handled: their absence means running canaries are not analysed
# (the job is paused or gone, or every tick fails and is retried).
resource "google_logging_metric" "canary_ticks" {
  name        = "sightops-canary-ticks"
  description = "Scheduler ticks the canary function handled (labels.consumer=canary, event_type=sight.ops.canary.tick, outcome handled or skipped)."
  filter      = "${local.function_log_filter} AND labels.consumer=\"canary\" AND labels.event_type=\"sight.ops.canary.tick\" AND labels.outcome=(\"handled\" OR \"skipped\")"

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "sight-ops canary ticks handled"
  }
}

resource "google_monitoring_alert_policy" "decision_overdue" {
  display_name = "sight-ops rollback or canary made no decision in time"
  combiner     = "OR"
  severity     = "ERROR"
  user_labels = {
    runbook = "alert-decision-overdue"
  }

  conditions {
    display_name = "A rollback or canary event was dropped as stale"

    condition_threshold {
      filter                  = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.decision_overdue.name}\""
      comparison              = "COMPARISON_GT"
      threshold_value         = 0
      duration                = "0s"
      evaluation_missing_data = "EVALUATION_MISSING_DATA_INACTIVE"

      aggregations {
        alignment_period     = local.decision_overdue_align
        per_series_aligner   = "ALIGN_DELTA"
        cross_series_reducer = "REDUCE_SUM"
        group_by_fields      = ["metric.label.consumer", "metric.label.event_type"]
      }
      trigger {
        count = 1
      }
    }
  }

  # Only while canaries are enabled: without the tick job there are no ticks to miss.
  dynamic "conditions" {
    for_each = length(var.canary_services) > 0 ? [local.canary_tick_absence_s] : []
    content {
      display_name = "The canary handled no tick for ${conditions.value / 60} minutes"

      condition_absent {
        filter   = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.canary_ticks.name}\""
        duration = "${conditions.value}s"

        aggregations {
          alignment_period     = "300s"
          per_series_aligner   = "ALIGN_DELTA"
          cross_series_reducer = "REDUCE_SUM"
        }
        trigger {
          count = 1
        }
      }
    }
  }

  alert_strategy {
    auto_close           = "1800s"
    notification_prompts = ["OPENED", "CLOSED"]
  }

  notification_channels = local.alert_channels

  documentation {
    mime_type = "text/markdown"
    subject   = "[$${policy.display_name}] $${condition.display_name}"
    content   = <<-EOT
      rollback or the canary did not decide within its bound: an event it had to act on
      (a smoke failure, an auto-rollback incident, a canary request or tick) was dropped as
      older than its maximum age, or the canary has stopped handling its ticks. A bad
      revision may still be serving, or a canary may be stuck part-way.

      Runbook: ${local.runbook_base_url}/docs/runbooks/alert-decision-overdue.md
    EOT
  }
}
