output "alarm_arns" {
  description = "ARNs of every alarm, by alarm name."
  value = merge(
    { for alarm in aws_cloudwatch_metric_alarm.dead_letters : alarm.alarm_name => alarm.arn },
    { for alarm in aws_cloudwatch_metric_alarm.executions : alarm.alarm_name => alarm.arn },
    { for alarm in aws_cloudwatch_metric_alarm.functions : alarm.alarm_name => alarm.arn },
    { (aws_cloudwatch_metric_alarm.step_queue_age.alarm_name) = aws_cloudwatch_metric_alarm.step_queue_age.arn },
  )
}

output "alarm_actions" {
  description = "Actions every alarm takes (empty without an SNS topic)."
  value       = local.actions
}
