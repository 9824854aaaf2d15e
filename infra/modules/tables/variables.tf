variable "name" {
  description = "Prefix of the table names: NAME-hot and NAME-events."
  type        = string
}

variable "kms_key_arn" {
  description = "Customer managed KMS key of both tables; null uses the AWS managed key (aws/dynamodb)."
  type        = string
  default     = null
}

variable "deletion_protection" {
  description = "Deletion protection of both tables."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags of both tables."
  type        = map(string)
  default     = {}
}
