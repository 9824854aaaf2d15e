variable "function_name" {
  description = "Name of the Lambda function (also of its role and log group)."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9-_]{1,64}$", var.function_name))
    error_message = "function_name must be 1 to 64 letters, digits, hyphens or underscores."
  }
}

variable "description" {
  description = "Description of the function."
  type        = string
  default     = ""
}

variable "zip_path" {
  description = "Path of the deployment package (a zip holding the `bootstrap` executable)."
  type        = string
}

variable "memory_size" {
  description = "Memory of the function in MB."
  type        = number

  validation {
    condition     = var.memory_size >= 128 && var.memory_size <= 10240
    error_message = "memory_size must be between 128 and 10240 MB."
  }
}

variable "timeout" {
  description = "Timeout of the function in seconds."
  type        = number

  validation {
    condition     = var.timeout >= 1 && var.timeout <= 900
    error_message = "timeout must be between 1 and 900 seconds."
  }
}

variable "environment" {
  description = "Environment variables of the function (names and ARNs only: no secret values)."
  type        = map(string)
  default     = {}
}

variable "policy_json" {
  description = "IAM policy (JSON) of what the function's code calls; logging, tracing and VPC permissions are added by this module."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the function; empty runs it outside a VPC."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the function when subnet_ids is set."
  type        = list(string)
  default     = []
}

variable "tracing_enabled" {
  description = "Active X-Ray tracing (PassThrough otherwise)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the environment variables and the log group; null uses AWS managed keys."
  type        = string
  default     = null
}

variable "log_retention_days" {
  description = "Retention of the function's log group in days."
  type        = number
  default     = 30
}

variable "tags" {
  description = "Tags of the function, its role and its log group."
  type        = map(string)
  default     = {}
}
