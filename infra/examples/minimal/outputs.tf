output "api_url" {
  description = "Base URL of the HTTP API."
  value       = module.agentrun.api_url
}

output "stream_url" {
  description = "URL of the event streams (sse-relay function URL)."
  value       = module.agentrun.stream_url
}

output "state_machine_arn" {
  description = "ARN of the run state machine."
  value       = module.agentrun.state_machine_arn
}

output "step_queue_url" {
  description = "URL of the step queue."
  value       = module.agentrun.step_queue_url
}

output "finalize_queue_url" {
  description = "URL of the finalize queue."
  value       = module.agentrun.finalize_queue_url
}

output "step_dlq_url" {
  description = "URL of the step queue's dead-letter queue."
  value       = module.agentrun.step_dlq_url
}

output "finalize_dlq_url" {
  description = "URL of the finalize queue's dead-letter queue."
  value       = module.agentrun.finalize_dlq_url
}

output "hot_table" {
  description = "Name of the hot store table."
  value       = module.agentrun.hot_table
}

output "events_table" {
  description = "Name of the events table."
  value       = module.agentrun.events_table
}

output "api_function_name" {
  description = "Name of the api function."
  value       = module.agentrun.api_function_name
}

output "step_function_name" {
  description = "Name of the step function."
  value       = module.agentrun.step_function_name
}

output "finalize_function_name" {
  description = "Name of the finalize function."
  value       = module.agentrun.finalize_function_name
}

output "sse_relay_function_name" {
  description = "Name of the sse-relay function."
  value       = module.agentrun.sse_relay_function_name
}

output "admin_key_secret_arn" {
  description = "ARN of the secret holding the admin API key."
  value       = module.agentrun.admin_key_secret_arn
}
