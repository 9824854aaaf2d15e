variable "name" {
  description = "Name of the queue; its dead-letter queue is named NAME-dlq."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,76}$", var.name))
    error_message = "name must be 1 to 76 letters, digits, hyphens or underscores (the -dlq suffix takes the rest of SQS's 80)."
  }
}

variable "visibility_timeout_seconds" {
  description = "Visibility timeout of the queue: at least six times the consuming function's timeout, as Lambda recommends for SQS event sources."
  type        = number

  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be between 0 and 43200."
  }
}

variable "max_receive_count" {
  description = "Deliveries of a message before it moves to the dead-letter queue."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "message_retention_seconds" {
  description = "Retention of messages in the queue."
  type        = number
  default     = 345600
}

variable "dlq_message_retention_seconds" {
  description = "Retention of messages in the dead-letter queue (the SQS maximum by default, to leave time to look at them)."
  type        = number
  default     = 1209600
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of both queues; null uses SQS managed encryption (SSE-SQS)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags of both queues."
  type        = map(string)
  default     = {}
}
