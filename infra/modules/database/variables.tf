variable "name" {
  description = "Prefix of the database resources' names."
  type        = string
}

variable "vpc_id" {
  description = "VPC of the database and its proxy."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets of the database and its proxy (two zones at least)."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids needs subnets in two availability zones at least."
  }
}

variable "client_security_group_ids" {
  description = "Security groups allowed to connect to the proxy on 5432 (the functions')."
  type        = list(string)
}

variable "engine_version" {
  description = "Aurora PostgreSQL engine version."
  type        = string
  default     = "16.6"
}

variable "database_name" {
  description = "Name of the database agentrun uses."
  type        = string
  default     = "agentrun"
}

variable "master_username" {
  description = "Master user of the cluster, also the user agentrun connects as through the proxy."
  type        = string
  default     = "agentrun"
}

variable "min_capacity" {
  description = "Minimum Aurora capacity units of Serverless v2."
  type        = number
  default     = 0.5

  validation {
    condition     = var.min_capacity >= 0 && var.min_capacity <= 256
    error_message = "min_capacity must be between 0 and 256 ACUs."
  }
}

variable "max_capacity" {
  description = "Maximum Aurora capacity units of Serverless v2."
  type        = number
  default     = 4

  validation {
    condition     = var.max_capacity >= 1 && var.max_capacity <= 256
    error_message = "max_capacity must be between 1 and 256 ACUs."
  }
}

variable "instance_count" {
  description = "Serverless v2 instances (1 writer, the rest readers in other zones)."
  type        = number
  default     = 1

  validation {
    condition     = var.instance_count >= 1 && var.instance_count <= 15
    error_message = "instance_count must be between 1 and 15."
  }
}

variable "backup_retention_days" {
  description = "Days of automated backups."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "deletion_protection" {
  description = "Deletion protection of the cluster."
  type        = bool
  default     = true
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the storage, the Performance Insights data and the secrets; null uses AWS managed keys."
  type        = string
  default     = null
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the secrets this module creates."
  type        = number
  default     = 7
}

variable "tags" {
  description = "Tags of the database resources."
  type        = map(string)
  default     = {}
}
