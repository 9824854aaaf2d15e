variable "name" {
  description = "Prefix of the network resources' names."
  type        = string
}

variable "cidr_block" {
  description = "CIDR block of the VPC; split into one public and one private subnet per availability zone."
  type        = string
  default     = "10.42.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && try(tonumber(split("/", var.cidr_block)[1]) <= 20, false)
    error_message = "cidr_block must be an IPv4 CIDR block of /20 or larger."
  }
}

variable "availability_zones" {
  description = "Availability zones (names) to spread the subnets over; null takes the region's zones a and b."
  type        = list(string)
  default     = null

  validation {
    condition     = var.availability_zones == null || try(length(var.availability_zones) >= 2 && length(var.availability_zones) <= 8, false)
    error_message = "availability_zones must name between 2 and 8 zones."
  }
}

variable "single_nat_gateway" {
  description = "One NAT gateway for every zone (cheaper) instead of one per zone (survives a zone's loss)."
  type        = bool
  default     = true
}

variable "interface_endpoint_services" {
  description = "AWS services the functions reach through interface VPC endpoints instead of the NAT gateway (DynamoDB always has a gateway endpoint)."
  type        = list(string)
  default     = ["secretsmanager", "states"]
}

variable "function_egress_ports" {
  description = "TCP ports the functions may reach on the internet through the NAT gateway (the LLM provider on 443, agents' HTTP tools)."
  type        = list(number)
  default     = [80, 443]
}

variable "flow_log_retention_days" {
  description = "Retention of the VPC flow logs in days."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the flow log group; null uses CloudWatch Logs' own encryption."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of the network resources."
  type        = map(string)
  default     = {}
}
