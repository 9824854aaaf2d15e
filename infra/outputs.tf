output "api_url" {
  description = "Base URL of the HTTP API (the api function)."
  value       = module.api_gateway.api_endpoint
}

output "stream_url" {
  description = "Function URL of the sse-relay function: event streams with response streaming."
  value       = aws_lambda_function_url.stream.function_url
}

output "state_machine_arn" {
  description = "ARN of the run state machine."
  value       = aws_sfn_state_machine.run.arn
}

output "state_machine_name" {
  description = "Name of the run state machine."
  value       = aws_sfn_state_machine.run.name
}

output "step_queue_url" {
  description = "URL of the step queue."
  value       = module.step_queue.url
}

output "step_dlq_url" {
  description = "URL of the step queue's dead-letter queue."
  value       = module.step_queue.dlq_url
}

output "finalize_queue_url" {
  description = "URL of the finalize queue."
  value       = module.finalize_queue.url
}

output "finalize_dlq_url" {
  description = "URL of the finalize queue's dead-letter queue."
  value       = module.finalize_queue.dlq_url
}

output "eventbridge_dlq_url" {
  description = "URL of the queue of EventBridge events and asynchronous finalize invocations that could not be handled."
  value       = aws_sqs_queue.eventbridge_dlq.url
}

output "hot_table" {
  description = "Name of the hot store table (HOT_TABLE)."
  value       = module.tables.hot_table_name
}

output "events_table" {
  description = "Name of the events table (EVENTS_TABLE)."
  value       = module.tables.events_table_name
}

output "api_function_name" {
  description = "Name of the api function."
  value       = module.api.function_name
}

output "step_function_name" {
  description = "Name of the step function."
  value       = module.step.function_name
}

output "finalize_function_name" {
  description = "Name of the finalize function (also runs the migrations)."
  value       = module.finalize.function_name
}

output "sse_relay_function_name" {
  description = "Name of the sse-relay function."
  value       = module.sse_relay.function_name
}

output "function_role_arns" {
  description = "Execution role ARN of each function."
  value = {
    api       = module.api.role_arn
    step      = module.step.role_arn
    finalize  = module.finalize.role_arn
    sse-relay = module.sse_relay.role_arn
  }
}

output "log_group_names" {
  description = "Log group of each function, of the state machine and of the API's access logs."
  value = {
    api           = module.api.log_group_name
    step          = module.step.log_group_name
    finalize      = module.finalize.log_group_name
    sse-relay     = module.sse_relay.log_group_name
    state_machine = aws_cloudwatch_log_group.state_machine.name
    api_access    = module.api_gateway.access_log_group_name
  }
}

output "admin_key_secret_arn" {
  description = "ARN of the secret holding the admin API key (null when the admin API is off)."
  value       = local.admin_key_secret_arn
}

output "alarm_arns" {
  description = "ARNs of the CloudWatch alarms, by alarm name."
  value       = module.alarms.alarm_arns
}
