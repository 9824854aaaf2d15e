output "vpc_id" {
  description = "ID of the VPC."
  value       = aws_vpc.this.id
}

output "cidr_block" {
  description = "CIDR block of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "IDs of the private subnets (functions, database, proxy, endpoints)."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "IDs of the public subnets (NAT gateways)."
  value       = aws_subnet.public[*].id
}

output "function_security_group_id" {
  description = "Security group of the functions."
  value       = aws_security_group.functions.id
}

output "nat_public_ips" {
  description = "Public addresses the functions reach the internet from (to allowlist at the LLM provider if needed)."
  value       = aws_eip.nat[*].public_ip
}
