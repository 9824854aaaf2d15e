output "database_url_secret_arn" {
  description = "ARN of the secret holding the PostgreSQL URL through the proxy."
  value       = aws_secretsmanager_secret.database_url.arn
}

output "credentials_secret_arn" {
  description = "ARN of the secret holding the master user's name and password."
  value       = aws_secretsmanager_secret.credentials.arn
}

output "cluster_arn" {
  description = "ARN of the Aurora cluster."
  value       = aws_rds_cluster.this.arn
}

output "cluster_endpoint" {
  description = "Writer endpoint of the Aurora cluster (the functions use the proxy)."
  value       = aws_rds_cluster.this.endpoint
}

output "proxy_endpoint" {
  description = "Endpoint of the RDS Proxy."
  value       = aws_db_proxy.this.endpoint
}

output "proxy_security_group_id" {
  description = "Security group of the RDS Proxy."
  value       = aws_security_group.proxy.id
}
