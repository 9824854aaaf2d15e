################################################################################
# Naming
################################################################################

variable "name" {
  description = "Prefix of every resource name (functions, tables, queues, state machine, API, log groups, alarms)."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9-]{1,32}$", var.name))
    error_message = "name must be 1 to 32 characters of lowercase letters, digits and hyphens."
  }
}

variable "tags" {
  description = "Tags applied to every resource that takes tags."
  type        = map(string)
  default     = {}
}

################################################################################
# Artifacts and migrations
################################################################################

variable "artifacts_dir" {
  description = "Directory holding <function>/bootstrap.zip for agentrun-api, agentrun-step, agentrun-finalize and agentrun-sse-relay, as written by `cargo lambda build --release --arm64 --output-format zip`. Null means the repository's target/lambda."
  type        = string
  default     = null
}

variable "migrations_dir" {
  description = "Directory of the SQL migrations (*.sql) whose contents re-run the migrate invocation when they change. Null means the repository's migrations/."
  type        = string
  default     = null
}

variable "run_migrations" {
  description = "Invoke the finalize function with {\"action\":\"migrate\"} at deploy time, and again whenever a migration file changes. The handler is idempotent."
  type        = bool
  default     = true
}

################################################################################
# Secrets and settings passed to the functions
################################################################################

variable "database_url_secret_arn" {
  description = "ARN of the Secrets Manager secret whose value is the PostgreSQL URL the functions connect to (through RDS Proxy in AWS)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.database_url_secret_arn))
    error_message = "database_url_secret_arn must be a Secrets Manager secret ARN."
  }
}

variable "llm_api_key_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the LLM provider's API key; null when the provider needs no key."
  type        = string
  default     = null

  validation {
    condition     = var.llm_api_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.llm_api_key_secret_arn))
    error_message = "llm_api_key_secret_arn must be null or a Secrets Manager secret ARN."
  }
}

variable "anthropic_api_key_secret_arn" {
  description = "ARN of the Secrets Manager secret holding the Anthropic API key (ANTHROPIC_API_KEY_SECRET_ARN); null when Anthropic is not used."
  type        = string
  default     = null

  validation {
    condition     = var.anthropic_api_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.anthropic_api_key_secret_arn))
    error_message = "anthropic_api_key_secret_arn must be null or a Secrets Manager secret ARN."
  }
}

variable "enable_admin_api" {
  description = "Serve the admin API (teams, keys, switches). Its key is read from admin_key_secret_arn, or from a secret this module creates with a generated value."
  type        = bool
  default     = true
}

variable "admin_key_secret_arn" {
  description = "ARN of an existing Secrets Manager secret holding the admin API key. Null makes the module create one with a generated 48-character value."
  type        = string
  default     = null

  validation {
    condition     = var.admin_key_secret_arn == null || can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", var.admin_key_secret_arn))
    error_message = "admin_key_secret_arn must be null or a Secrets Manager secret ARN."
  }
}

variable "secret_recovery_window_days" {
  description = "Recovery window of the admin key secret the module creates (0 deletes it at once)."
  type        = number
  default     = 7

  validation {
    condition     = var.secret_recovery_window_days == 0 || (var.secret_recovery_window_days >= 7 && var.secret_recovery_window_days <= 30)
    error_message = "secret_recovery_window_days must be 0 or between 7 and 30."
  }
}

variable "llm_base_url" {
  description = "Base URL of the OpenAI-compatible LLM provider (OPENAI_BASE_URL)."
  type        = string
  default     = "https://api.openai.com/v1"

  validation {
    condition     = can(regex("^https?://[^\\s]+$", var.llm_base_url))
    error_message = "llm_base_url must be an http:// or https:// URL."
  }
}

variable "anthropic_base_url" {
  description = "Base URL of the Anthropic API (ANTHROPIC_BASE_URL); null leaves it unset, and the functions use https://api.anthropic.com."
  type        = string
  default     = null

  validation {
    condition     = var.anthropic_base_url == null || can(regex("^https?://[^\\s]+$", var.anthropic_base_url))
    error_message = "anthropic_base_url must be null or an http:// or https:// URL."
  }
}

variable "db_connections" {
  description = "PostgreSQL connections each function instance may open (AGENTRUN_DB_CONNECTIONS)."
  type        = number
  default     = 4

  validation {
    condition     = var.db_connections >= 1 && var.db_connections <= 100 && floor(var.db_connections) == var.db_connections
    error_message = "db_connections must be a whole number between 1 and 100."
  }
}

variable "db_statements" {
  description = "How the functions send SQL (AGENTRUN_DB_STATEMENTS): \"cached\" prepares each statement once per connection (named statements), \"unnamed\" leaves no statement in the session, so a pooler that shares server connections (RDS Proxy) need not pin each client connection to one. Use \"unnamed\" behind RDS Proxy."
  type        = string
  default     = "cached"

  validation {
    condition     = contains(["cached", "unnamed"], var.db_statements)
    error_message = "db_statements must be \"cached\" or \"unnamed\"."
  }
}

variable "outbound_allow" {
  description = "Operator allowlist of internal CIDRs and host names that HTTP tools and webhooks may reach (AGENTRUN_OUTBOUND_ALLOW, comma separated); empty refuses every internal destination."
  type        = string
  default     = ""
}

variable "stream_max_per_team" {
  description = "Open event streams one team may hold per relay instance (AGENTRUN_STREAM_MAX_PER_TEAM)."
  type        = number
  default     = 100

  validation {
    condition     = var.stream_max_per_team >= 1 && floor(var.stream_max_per_team) == var.stream_max_per_team
    error_message = "stream_max_per_team must be a positive whole number."
  }
}

variable "stream_max_total" {
  description = "Open event streams per relay instance, all teams together (AGENTRUN_STREAM_MAX_TOTAL)."
  type        = number
  default     = 2000

  validation {
    condition     = var.stream_max_total >= 1 && floor(var.stream_max_total) == var.stream_max_total
    error_message = "stream_max_total must be a positive whole number."
  }
}

variable "stream_max_seconds" {
  description = "Longest life of one event stream in seconds (AGENTRUN_STREAM_MAX_SECONDS); must be shorter than sse_relay_timeout so the relay closes the stream before Lambda cuts it."
  type        = number
  default     = 840

  validation {
    condition     = var.stream_max_seconds >= 1 && floor(var.stream_max_seconds) == var.stream_max_seconds
    error_message = "stream_max_seconds must be a positive whole number."
  }
}

variable "stream_max_idle_seconds" {
  description = "An event stream that has sent no event for this many seconds ends with a retry hint (AGENTRUN_STREAM_MAX_IDLE_SECONDS); the client resumes with Last-Event-ID. Bounds what a stream nobody reads any more costs."
  type        = number
  default     = 120

  validation {
    condition     = var.stream_max_idle_seconds >= 1 && floor(var.stream_max_idle_seconds) == var.stream_max_idle_seconds
    error_message = "stream_max_idle_seconds must be a positive whole number."
  }
}

################################################################################
# Functions
################################################################################

variable "api_memory_size" {
  description = "Memory (MB) of the api function."
  type        = number
  default     = 512

  validation {
    condition     = var.api_memory_size >= 128 && var.api_memory_size <= 10240
    error_message = "api_memory_size must be between 128 and 10240 MB."
  }
}

variable "api_timeout" {
  description = "Timeout (seconds) of the api function; the HTTP API integration gives up after 30 seconds."
  type        = number
  default     = 30

  validation {
    condition     = var.api_timeout >= 1 && var.api_timeout <= 30
    error_message = "api_timeout must be between 1 and 30 seconds (the HTTP API integration limit)."
  }
}

variable "step_memory_size" {
  description = "Memory (MB) of the step function. A step mostly waits for its LLM; 256 MB holds a batch of ten with room to spare."
  type        = number
  default     = 256

  validation {
    condition     = var.step_memory_size >= 128 && var.step_memory_size <= 10240
    error_message = "step_memory_size must be between 128 and 10240 MB."
  }
}

variable "finalize_memory_size" {
  description = "Memory (MB) of the finalize function."
  type        = number
  default     = 256

  validation {
    condition     = var.finalize_memory_size >= 128 && var.finalize_memory_size <= 10240
    error_message = "finalize_memory_size must be between 128 and 10240 MB."
  }
}

variable "finalize_timeout" {
  description = "Timeout (seconds) of the finalize function (also the migrate invocation's limit)."
  type        = number
  default     = 60

  validation {
    condition     = var.finalize_timeout >= 1 && var.finalize_timeout <= 900
    error_message = "finalize_timeout must be between 1 and 900 seconds."
  }
}

variable "sse_relay_memory_size" {
  description = "Memory (MB) of the sse-relay function."
  type        = number
  default     = 256

  validation {
    condition     = var.sse_relay_memory_size >= 128 && var.sse_relay_memory_size <= 10240
    error_message = "sse_relay_memory_size must be between 128 and 10240 MB."
  }
}

variable "sse_relay_timeout" {
  description = "Timeout (seconds) of the sse-relay function: the longest an event stream can stay open."
  type        = number
  default     = 900

  validation {
    condition     = var.sse_relay_timeout >= 1 && var.sse_relay_timeout <= 900
    error_message = "sse_relay_timeout must be between 1 and 900 seconds."
  }
}

variable "subnet_ids" {
  description = "Private subnets the functions run in; empty runs them outside a VPC. Give security_group_ids with them."
  type        = list(string)
  default     = []
}

variable "security_group_ids" {
  description = "Security groups of the functions when subnet_ids is set."
  type        = list(string)
  default     = []
}

variable "tracing_enabled" {
  description = "Active X-Ray tracing for the functions and the state machine (PassThrough otherwise)."
  type        = bool
  default     = false
}

variable "kms_key_arn" {
  description = "Customer managed KMS key for the secrets the module creates, the tables, the queues, the log groups, the functions' environment and the state machine; null uses AWS owned or managed keys. Its key policy must let CloudWatch Logs use it."
  type        = string
  default     = null

  validation {
    condition     = var.kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/.+$", var.kms_key_arn))
    error_message = "kms_key_arn must be null or a KMS key ARN."
  }
}

variable "log_retention_days" {
  description = "Retention of every log group (functions, state machine, API access logs)."
  type        = number
  default     = 30

  validation {
    condition     = contains([1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.log_retention_days)
    error_message = "log_retention_days must be a retention CloudWatch Logs accepts (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288 or 3653)."
  }
}

################################################################################
# Queues and event source mappings
################################################################################

variable "max_receive_count" {
  description = "Deliveries of a message before its queue moves it to the dead-letter queue."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000 && floor(var.max_receive_count) == var.max_receive_count
    error_message = "max_receive_count must be a whole number between 1 and 1000."
  }
}

variable "step_batch_size" {
  description = "Step messages per invocation. The messages of a batch run at once, each heartbeating from its receipt, so one invocation's billed wait for the LLM covers up to this many steps."
  type        = number
  default     = 10

  validation {
    condition     = var.step_batch_size >= 1 && var.step_batch_size <= 10 && floor(var.step_batch_size) == var.step_batch_size
    error_message = "step_batch_size must be a whole number between 1 and 10."
  }
}

variable "steps_per_task" {
  description = "Agent steps one Step task may run one after the other, each committed on its own, while a whole step still fits the task's time (AGENTRUN_STEPS_PER_TASK). More means fewer state transitions per run (the larger part of the cost) and a coarser execution history; 1 is one step per task."
  type        = number
  default     = 1

  validation {
    condition     = var.steps_per_task >= 1 && var.steps_per_task <= 50 && floor(var.steps_per_task) == var.steps_per_task
    error_message = "steps_per_task must be a whole number between 1 and 50."
  }
}

variable "step_maximum_concurrency" {
  description = "Most step function instances the step queue invokes at once (event source mapping maximum concurrency)."
  type        = number
  default     = 20

  validation {
    condition     = var.step_maximum_concurrency >= 2 && var.step_maximum_concurrency <= 1000 && floor(var.step_maximum_concurrency) == var.step_maximum_concurrency
    error_message = "step_maximum_concurrency must be a whole number between 2 and 1000."
  }
}

variable "finalize_batch_size" {
  description = "Finalize messages per invocation."
  type        = number
  default     = 10

  validation {
    condition     = var.finalize_batch_size >= 1 && var.finalize_batch_size <= 10 && floor(var.finalize_batch_size) == var.finalize_batch_size
    error_message = "finalize_batch_size must be a whole number between 1 and 10."
  }
}

variable "finalize_maximum_concurrency" {
  description = "Most finalize function instances the finalize queue invokes at once (event source mapping maximum concurrency)."
  type        = number
  default     = 5

  validation {
    condition     = var.finalize_maximum_concurrency >= 2 && var.finalize_maximum_concurrency <= 1000 && floor(var.finalize_maximum_concurrency) == var.finalize_maximum_concurrency
    error_message = "finalize_maximum_concurrency must be a whole number between 2 and 1000."
  }
}

################################################################################
# Tables
################################################################################

variable "deletion_protection" {
  description = "Deletion protection of the DynamoDB tables."
  type        = bool
  default     = true
}

################################################################################
# State machine, schedule, API
################################################################################

variable "state_machine_log_level" {
  description = "Execution history sent to CloudWatch Logs (ALL, ERROR, FATAL or OFF); execution data is never included."
  type        = string
  default     = "ERROR"

  validation {
    condition     = contains(["ALL", "ERROR", "FATAL", "OFF"], var.state_machine_log_level)
    error_message = "state_machine_log_level must be ALL, ERROR, FATAL or OFF."
  }
}

variable "reconcile_schedule_expression" {
  description = "Schedule of the reconciliation that releases stale hot state and starts accepted runs whose execution never started."
  type        = string
  default     = "rate(1 minute)"

  validation {
    condition     = can(regex("^(rate|cron)\\(.+\\)$", var.reconcile_schedule_expression))
    error_message = "reconcile_schedule_expression must be a rate(...) or cron(...) expression."
  }
}

variable "api_throttling_burst_limit" {
  description = "Burst limit of the HTTP API's default route."
  type        = number
  default     = 200

  validation {
    condition     = var.api_throttling_burst_limit >= 1
    error_message = "api_throttling_burst_limit must be positive."
  }
}

variable "api_throttling_rate_limit" {
  description = "Steady requests per second of the HTTP API's default route."
  type        = number
  default     = 100

  validation {
    condition     = var.api_throttling_rate_limit >= 1
    error_message = "api_throttling_rate_limit must be positive."
  }
}

variable "stream_url_invoke_permission" {
  description = "Add the resource policy statement (lambda:InvokeFunction on condition lambda:InvokedViaFunctionUrl) that function URLs created since October 2025 need beside lambda:InvokeFunctionUrl. hashicorp/aws has no argument for that condition before 6.29, so it is made by a one-resource CloudFormation stack."
  type        = bool
  default     = true
}

################################################################################
# Alarms
################################################################################

variable "alarm_sns_topic_arn" {
  description = "SNS topic notified by every alarm (and on return to OK); null creates the alarms without actions."
  type        = string
  default     = null

  validation {
    condition     = var.alarm_sns_topic_arn == null || can(regex("^arn:aws[a-z-]*:sns:[a-z0-9-]+:[0-9]{12}:.+$", var.alarm_sns_topic_arn))
    error_message = "alarm_sns_topic_arn must be null or an SNS topic ARN."
  }
}

variable "step_queue_age_alarm_seconds" {
  description = "Alarm when the oldest message of the step queue is older than this many seconds."
  type        = number
  default     = 300

  validation {
    condition     = var.step_queue_age_alarm_seconds >= 60
    error_message = "step_queue_age_alarm_seconds must be at least 60."
  }
}
