output "alarm_arns" {
  description = "ARNs of every alarm, by alarm name."
  value = merge(
    { for alarm in aws_cloudwatch_metric_alarm.dead_letters : alarm.alarm_name => alarm.arn },
    { for alarm in aws_cloudwatch_metric_alarm.executions : alarm.alarm_name => alarm.arn },
    { for alarm in aws_cloudwatch_metric_alarm.functions : alarm.alarm_name => alarm.arn },
    { (aws_cloudwatch_metric_alarm.step_queue_age.alarm_name) = aws_cloudwatch_metric_alarm.step_queue_age.arn },
    { (aws_cloudwatch_metric_alarm.llm_circuit_open.alarm_name) = aws_cloudwatch_metric_alarm.llm_circuit_open.arn },
  )
}

output "alarm_actions" {
  description = "Actions every alarm takes (empty without an SNS topic)."
  value       = local.actions
}

output "llm_circuit_log_group" {
  description = "Log group whose \"LLM circuit open\" errors the circuit alarm counts."
  value       = aws_cloudwatch_log_metric_filter.llm_circuit_open.log_group_name
}

output "llm_circuit_pattern" {
  description = "Filter pattern of the circuit alarm's metric."
  value       = aws_cloudwatch_log_metric_filter.llm_circuit_open.pattern
}
