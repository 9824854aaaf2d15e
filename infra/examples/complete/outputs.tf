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

output "admin_key_secret_arn" {
  description = "ARN of the secret holding the admin API key."
  value       = module.agentrun.admin_key_secret_arn
}

output "database_url_secret_arn" {
  description = "ARN of the secret holding the PostgreSQL URL (through RDS Proxy)."
  value       = module.database.database_url_secret_arn
}

output "database_proxy_endpoint" {
  description = "Endpoint of the RDS Proxy."
  value       = module.database.proxy_endpoint
}

output "nat_public_ips" {
  description = "Public addresses the functions reach the internet from."
  value       = module.network.nat_public_ips
}

output "kms_key_arn" {
  description = "ARN of the customer managed key."
  value       = aws_kms_key.this.arn
}

output "alarms_topic_arn" {
  description = "ARN of the SNS topic the alarms notify."
  value       = aws_sns_topic.alarms.arn
}
