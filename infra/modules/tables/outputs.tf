output "hot_table_name" {
  description = "Name of the hot store table."
  value       = aws_dynamodb_table.hot.name
}

output "hot_table_arn" {
  description = "ARN of the hot store table."
  value       = aws_dynamodb_table.hot.arn
}

output "hot_table_ttl" {
  description = "Time to live setting of the hot store table."
  value       = aws_dynamodb_table.hot.ttl
}

output "events_table_name" {
  description = "Name of the events table."
  value       = aws_dynamodb_table.events.name
}

output "events_table_arn" {
  description = "ARN of the events table."
  value       = aws_dynamodb_table.events.arn
}

output "events_table_ttl" {
  description = "Time to live setting of the events table."
  value       = aws_dynamodb_table.events.ttl
}
