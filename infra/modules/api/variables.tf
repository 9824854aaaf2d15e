variable "name" {
  description = "Name of the HTTP API."
  type        = string
}

variable "function_name" {
  description = "Name of the Lambda function behind the API's default route."
  type        = string
}

variable "function_invoke_arn" {
  description = "Invoke ARN of the Lambda function behind the API's default route."
  type        = string
}

variable "integration_timeout_milliseconds" {
  description = "Integration timeout (at most 30000, the HTTP API limit)."
  type        = number
  default     = 30000

  validation {
    condition     = var.integration_timeout_milliseconds >= 50 && var.integration_timeout_milliseconds <= 30000
    error_message = "integration_timeout_milliseconds must be between 50 and 30000."
  }
}

variable "throttling_burst_limit" {
  description = "Burst limit of the default route."
  type        = number
  default     = 200
}

variable "throttling_rate_limit" {
  description = "Steady requests per second of the default route."
  type        = number
  default     = 100
}

variable "log_retention_days" {
  description = "Retention of the access log group in days."
  type        = number
  default     = 30
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of the access log group; null uses CloudWatch Logs' own encryption."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of the API, its stage and its log group."
  type        = map(string)
  default     = {}
}
