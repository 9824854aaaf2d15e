variable "name" {
  description = "Prefix of the alarm names."
  type        = string
}

variable "sns_topic_arn" {
  description = "SNS topic notified on alarm and on return to OK; null creates the alarms without actions."
  type        = string
  default     = null
}

variable "dead_letter_queue_names" {
  description = "Dead-letter queues (key: short name used in the alarm name, value: queue name); any visible message alarms."
  type        = map(string)
}

variable "state_machine_arn" {
  description = "State machine whose failed and timed out executions alarm."
  type        = string
}

variable "function_names" {
  description = "Functions (key: short name used in the alarm name, value: function name) whose errors and throttles alarm."
  type        = map(string)
}

variable "step_queue_name" {
  description = "Step queue whose oldest message age alarms."
  type        = string
}

variable "step_queue_age_threshold_seconds" {
  description = "Age in seconds of the step queue's oldest message above which its alarm fires."
  type        = number
  default     = 300
}

variable "step_log_group_name" {
  description = "Log group of the step function, whose \"LLM circuit open\" errors are counted and alarmed on."
  type        = string
}

variable "metric_namespace" {
  description = "CloudWatch namespace of the metrics made from the functions' logs."
  type        = string
  default     = "agentrun"
}

variable "tags" {
  description = "Tags of the alarms."
  type        = map(string)
  default     = {}
}
