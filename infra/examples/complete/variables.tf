variable "region" {
  description = "AWS region to deploy to."
  type        = string
  default     = "eu-west-1"
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "agentrun"
}

variable "llm_api_key_secret_arn" {
  description = "ARN of an existing Secrets Manager secret holding the LLM provider's API key; null when it needs none."
  type        = string
  default     = null
}

variable "llm_base_url" {
  description = "Base URL of the OpenAI-compatible LLM provider."
  type        = string
  default     = "https://api.openai.com/v1"
}

variable "anthropic_api_key_secret_arn" {
  description = "ARN of an existing Secrets Manager secret holding the Anthropic API key; null when Anthropic is not used."
  type        = string
  default     = null
}

variable "anthropic_base_url" {
  description = "Base URL of the Anthropic API; null means https://api.anthropic.com."
  type        = string
  default     = null
}

variable "artifacts_dir" {
  description = "Directory of the cargo lambda zips (<function>/bootstrap.zip); null means the repository's target/lambda."
  type        = string
  default     = null
}

variable "alarm_email" {
  description = "Address subscribed to the alarms topic (it must confirm the subscription); null subscribes nobody."
  type        = string
  default     = null
}

variable "database_max_capacity" {
  description = "Maximum Aurora capacity units of the database."
  type        = number
  default     = 4
}

variable "deletion_protection" {
  description = "Deletion protection of the database and the DynamoDB tables."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags of every resource."
  type        = map(string)
  default = {
    Project = "agentrun"
  }
}
