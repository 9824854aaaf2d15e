locals {
  actions = var.sns_topic_arn == null ? [] : [var.sns_topic_arn]

  function_metrics = merge([
    for key, function_name in var.function_names : {
      for metric in ["Errors", "Throttles"] : "${key}-${lower(metric)}" => {
        function_name = function_name
        metric        = metric
      }
    }
  ]...)
}

resource "aws_cloudwatch_metric_alarm" "dead_letters" {
  for_each = var.dead_letter_queue_names

  alarm_name          = "${var.name}-${each.key}-dead-letters"
  alarm_description   = "Messages are waiting in ${each.value}: look at them, fix the cause, then redrive or delete them."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateNumberOfMessagesVisible"
  dimensions          = { QueueName = each.value }
  statistic           = "Maximum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "executions" {
  for_each = toset(["ExecutionsFailed", "ExecutionsTimedOut"])

  alarm_name          = "${var.name}-run-${lower(trimprefix(each.key, "Executions"))}"
  alarm_description   = "Run executions ${lower(trimprefix(each.key, "Executions"))}: the finalize function settles them; look for the cause in the state machine's log group."
  namespace           = "AWS/States"
  metric_name         = each.key
  dimensions          = { StateMachineArn = var.state_machine_arn }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "functions" {
  for_each = local.function_metrics

  alarm_name          = "${var.name}-${each.key}"
  alarm_description   = "${each.value.metric} of ${each.value.function_name}."
  namespace           = "AWS/Lambda"
  metric_name         = each.value.metric
  dimensions          = { FunctionName = each.value.function_name }
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

resource "aws_cloudwatch_metric_alarm" "step_queue_age" {
  alarm_name          = "${var.name}-step-queue-age"
  alarm_description   = "Step messages wait longer than ${var.step_queue_age_threshold_seconds} s: the step function cannot keep up (concurrency, throttles or errors)."
  namespace           = "AWS/SQS"
  metric_name         = "ApproximateAgeOfOldestMessage"
  dimensions          = { QueueName = var.step_queue_name }
  statistic           = "Maximum"
  period              = 60
  evaluation_periods  = 5
  comparison_operator = "GreaterThanThreshold"
  threshold           = var.step_queue_age_threshold_seconds
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}

# The step function logs an error each time an LLM circuit opens (a
# provider failed five calls in a row): counted, and alarmed on.
resource "aws_cloudwatch_log_metric_filter" "llm_circuit_open" {
  name           = "${var.name}-llm-circuit-open"
  log_group_name = var.step_log_group_name
  pattern        = "\"LLM circuit open\""

  metric_transformation {
    name          = "LlmCircuitOpened"
    namespace     = var.metric_namespace
    value         = "1"
    default_value = "0"
  }
}

resource "aws_cloudwatch_metric_alarm" "llm_circuit_open" {
  alarm_name          = "${var.name}-llm-circuit-open"
  alarm_description   = "An LLM provider failed five calls in a row and its circuit opened: steps wait instead of calling it. Look at the provider's status and the step function's log."
  namespace           = var.metric_namespace
  metric_name         = aws_cloudwatch_log_metric_filter.llm_circuit_open.metric_transformation[0].name
  statistic           = "Sum"
  period              = 300
  evaluation_periods  = 1
  comparison_operator = "GreaterThanThreshold"
  threshold           = 0
  treat_missing_data  = "notBreaching"
  alarm_actions       = local.actions
  ok_actions          = local.actions
  tags                = var.tags
}
