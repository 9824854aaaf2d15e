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

variable "database_url_secret_arn" {
  description = "ARN of an existing Secrets Manager secret whose value is the PostgreSQL URL (for example postgres://user:password@host:5432/agentrun?sslmode=require)."
  type        = string
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

variable "run_migrations" {
  description = "Apply the database migrations through the finalize function at deploy time."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Deletion protection of the DynamoDB tables."
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
