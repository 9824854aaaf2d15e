data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  artifacts_dir  = var.artifacts_dir != null ? var.artifacts_dir : "${path.module}/../target/lambda"
  migrations_dir = var.migrations_dir != null ? var.migrations_dir : "${path.module}/../migrations"

  # Written by `agentrun asl --write`; its ${step_queue_url} and
  # ${finalize_queue_url} placeholders are filled in below.
  state_machine_definition_path = "${path.module}/statemachine/run.asl.json"
  state_machine_name            = "${var.name}-run"

  # The step timings, written beside it from the same StepPolicy: the step
  # function's timeout is the Step task's, and the worker stops its LLM and
  # tool calls well before either ends.
  step_policy = jsondecode(file("${path.module}/statemachine/policy.json"))

  # DescribeExecution and StopExecution act on executions, whose ARNs are the
  # state machine's with :execution: for :stateMachine: and the run id after.
  execution_arns = "${replace(aws_sfn_state_machine.run.arn, ":stateMachine:", ":execution:")}:*"

  create_admin_key     = var.enable_admin_api && var.admin_key_secret_arn == null
  admin_key_secret_arn = var.enable_admin_api ? (var.admin_key_secret_arn != null ? var.admin_key_secret_arn : one(aws_secretsmanager_secret.admin_key[*].arn)) : null

  # Secrets each function reads, by ARN (none of their values is ever put in
  # an environment variable).
  secrets_all_functions = compact([var.database_url_secret_arn, var.llm_api_key_secret_arn, var.anthropic_api_key_secret_arn])
  secrets_api           = compact([var.database_url_secret_arn, var.llm_api_key_secret_arn, var.anthropic_api_key_secret_arn, local.admin_key_secret_arn])
  secrets_sse_relay     = [var.database_url_secret_arn]

  kms_key_arns = var.kms_key_arn == null ? [] : [var.kms_key_arn]

  ##############################################################################
  # The environment contract with the functions' code
  ##############################################################################

  environment_common = merge(
    {
      DATABASE_URL_SECRET_ARN = var.database_url_secret_arn
      OPENAI_BASE_URL         = var.llm_base_url
      AGENTRUN_DB_CONNECTIONS = tostring(var.db_connections)
      AGENTRUN_DB_STATEMENTS  = var.db_statements
      HOT_TABLE               = module.tables.hot_table_name
      EVENTS_TABLE            = module.tables.events_table_name
      AGENTRUN_OUTBOUND_ALLOW = var.outbound_allow
    },
    # The Anthropic provider: the code uses https://api.anthropic.com when
    # ANTHROPIC_BASE_URL is unset.
    var.anthropic_base_url == null ? {} : {
      ANTHROPIC_BASE_URL = var.anthropic_base_url
    },
  )

  # The LLM keys' secrets, for api, step and finalize only. The code reads
  # every <NAME>_SECRET_ARN in its environment at cold start and fails if it
  # cannot: sse-relay, which never calls an LLM and whose role may read only
  # the database secret (local.secrets_sse_relay), must not get them.
  environment_llm_keys = merge(
    var.llm_api_key_secret_arn == null ? {} : {
      OPENAI_API_KEY_SECRET_ARN = var.llm_api_key_secret_arn
    },
    var.anthropic_api_key_secret_arn == null ? {} : {
      ANTHROPIC_API_KEY_SECRET_ARN = var.anthropic_api_key_secret_arn
    },
  )

  environment_api = merge(
    local.environment_common,
    local.environment_llm_keys,
    {
      STATE_MACHINE_ARN = aws_sfn_state_machine.run.arn
      # Behind API Gateway the api function cannot hold a stream open: it
      # points /v1/runs/{id}/events at the relay.
      AGENTRUN_STREAM_URL = trimsuffix(aws_lambda_function_url.stream.function_url, "/")
      # GET /v1/runs/{id}?wait= answers before the function times out.
      AGENTRUN_MAX_WAIT_SECONDS = tostring(max(0, var.api_timeout - 5))
    },
    var.enable_admin_api ? {
      AGENTRUN_ADMIN_KEY_SECRET_ARN = local.admin_key_secret_arn
    } : {},
  )

  environment_step = merge(
    local.environment_common,
    local.environment_llm_keys,
    {
      AGENTRUN_STEPS_PER_TASK = tostring(var.steps_per_task)
    },
  )

  environment_finalize = merge(
    local.environment_common,
    local.environment_llm_keys,
    {
      STATE_MACHINE_ARN = aws_sfn_state_machine.run.arn
    },
  )

  environment_sse_relay = merge(
    local.environment_common,
    {
      AGENTRUN_STREAM_MAX_PER_TEAM     = tostring(var.stream_max_per_team)
      AGENTRUN_STREAM_MAX_TOTAL        = tostring(var.stream_max_total)
      AGENTRUN_STREAM_MAX_SECONDS      = tostring(var.stream_max_seconds)
      AGENTRUN_STREAM_MAX_IDLE_SECONDS = tostring(var.stream_max_idle_seconds)
    },
  )
}

################################################################################
# Tables
################################################################################

module "tables" {
  source = "./modules/tables"

  name                = var.name
  kms_key_arn         = var.kms_key_arn
  deletion_protection = var.deletion_protection
  tags                = var.tags
}

################################################################################
# Queues: visibility timeout six times the consumer's timeout, as Lambda
# recommends for SQS event sources, so a message is not delivered again while
# a retried invocation may still be handling it.
################################################################################

module "step_queue" {
  source = "./modules/queue"

  name                       = "${var.name}-step"
  visibility_timeout_seconds = local.step_policy.step_queue_visibility_timeout_seconds
  max_receive_count          = var.max_receive_count
  kms_key_arn                = var.kms_key_arn
  tags                       = var.tags
}

module "finalize_queue" {
  source = "./modules/queue"

  name                       = "${var.name}-finalize"
  visibility_timeout_seconds = 6 * var.finalize_timeout
  max_receive_count          = var.max_receive_count
  kms_key_arn                = var.kms_key_arn
  tags                       = var.tags
}

# Events EventBridge could not deliver to the finalize function, and
# asynchronous finalize invocations that failed every retry. SQS managed
# encryption, so EventBridge and Lambda need no key grant to write here.
resource "aws_sqs_queue" "eventbridge_dlq" {
  name                      = "${var.name}-eventbridge-dlq"
  message_retention_seconds = 1209600
  sqs_managed_sse_enabled   = true
  tags                      = var.tags
}

data "aws_iam_policy_document" "eventbridge_dlq" {
  statement {
    sid       = "EventBridgeRulesDeadLetters"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.eventbridge_dlq.arn]

    principals {
      type        = "Service"
      identifiers = ["events.amazonaws.com"]
    }

    condition {
      test     = "ArnEquals"
      variable = "aws:SourceArn"
      values   = [aws_cloudwatch_event_rule.execution_ended.arn, aws_cloudwatch_event_rule.reconcile.arn]
    }
  }
}

resource "aws_sqs_queue_policy" "eventbridge_dlq" {
  queue_url = aws_sqs_queue.eventbridge_dlq.id
  policy    = data.aws_iam_policy_document.eventbridge_dlq.json
}

################################################################################
# Admin API key
################################################################################

data "aws_secretsmanager_random_password" "admin_key" {
  count = local.create_admin_key ? 1 : 0

  password_length     = 48
  exclude_punctuation = true
}

resource "aws_secretsmanager_secret" "admin_key" {
  count = local.create_admin_key ? 1 : 0

  name                    = "${var.name}-admin-key"
  description             = "Key of the agentrun admin API (Bearer token)."
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.secret_recovery_window_days
  tags                    = var.tags
}

resource "aws_secretsmanager_secret_version" "admin_key" {
  count = local.create_admin_key ? 1 : 0

  secret_id     = aws_secretsmanager_secret.admin_key[0].id
  secret_string = data.aws_secretsmanager_random_password.admin_key[0].random_password

  # The generator answers a new value on every read: keep the first one.
  # Rotate by putting a new value in the secret.
  lifecycle {
    ignore_changes = [secret_string]
  }
}

################################################################################
# Functions
################################################################################

module "api" {
  source = "./modules/function"

  function_name      = "${var.name}-api"
  description        = "agentrun HTTP API"
  zip_path           = "${local.artifacts_dir}/agentrun-api/bootstrap.zip"
  memory_size        = var.api_memory_size
  timeout            = var.api_timeout
  environment        = local.environment_api
  policy_json        = data.aws_iam_policy_document.api.json
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  tracing_enabled    = var.tracing_enabled
  kms_key_arn        = var.kms_key_arn
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

module "step" {
  source = "./modules/function"

  function_name      = "${var.name}-step"
  description        = "agentrun step worker (step queue)"
  zip_path           = "${local.artifacts_dir}/agentrun-step/bootstrap.zip"
  memory_size        = var.step_memory_size
  timeout            = local.step_policy.step_function_timeout_seconds
  environment        = local.environment_step
  policy_json        = data.aws_iam_policy_document.step.json
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  tracing_enabled    = var.tracing_enabled
  kms_key_arn        = var.kms_key_arn
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

module "finalize" {
  source = "./modules/function"

  function_name      = "${var.name}-finalize"
  description        = "agentrun finalize worker (finalize queue, execution status changes, reconciliation, migrations)"
  zip_path           = "${local.artifacts_dir}/agentrun-finalize/bootstrap.zip"
  memory_size        = var.finalize_memory_size
  timeout            = var.finalize_timeout
  environment        = local.environment_finalize
  policy_json        = data.aws_iam_policy_document.finalize.json
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  tracing_enabled    = var.tracing_enabled
  kms_key_arn        = var.kms_key_arn
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

module "sse_relay" {
  source = "./modules/function"

  function_name      = "${var.name}-sse-relay"
  description        = "agentrun event streams (Server-Sent Events, response streaming)"
  zip_path           = "${local.artifacts_dir}/agentrun-sse-relay/bootstrap.zip"
  memory_size        = var.sse_relay_memory_size
  timeout            = var.sse_relay_timeout
  environment        = local.environment_sse_relay
  policy_json        = data.aws_iam_policy_document.sse_relay.json
  subnet_ids         = var.subnet_ids
  security_group_ids = var.security_group_ids
  tracing_enabled    = var.tracing_enabled
  kms_key_arn        = var.kms_key_arn
  log_retention_days = var.log_retention_days
  tags               = var.tags
}

################################################################################
# Event source mappings: failed messages come back one by one
# (ReportBatchItemFailures), never the whole batch.
################################################################################

resource "aws_lambda_event_source_mapping" "step" {
  event_source_arn        = module.step_queue.arn
  function_name           = module.step.function_arn
  batch_size              = var.step_batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.step_maximum_concurrency
  }

  lifecycle {
    precondition {
      condition     = local.step_policy.step_function_timeout_seconds >= jsondecode(file(local.state_machine_definition_path)).States.Step.TimeoutSeconds
      error_message = "statemachine/policy.json and run.asl.json disagree: regenerate both with `agentrun asl --write`."
    }
  }
}

resource "aws_lambda_event_source_mapping" "finalize" {
  event_source_arn        = module.finalize_queue.arn
  function_name           = module.finalize.function_arn
  batch_size              = var.finalize_batch_size
  function_response_types = ["ReportBatchItemFailures"]

  scaling_config {
    maximum_concurrency = var.finalize_maximum_concurrency
  }
}

################################################################################
# State machine
################################################################################

resource "aws_cloudwatch_log_group" "state_machine" {
  name              = "/aws/vendedlogs/states/${local.state_machine_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

data "aws_iam_policy_document" "state_machine_assume" {
  statement {
    sid     = "StepFunctionsAssumesRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["states.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [data.aws_caller_identity.current.account_id]
    }
  }
}

resource "aws_iam_role" "state_machine" {
  name               = local.state_machine_name
  description        = "Role of the ${local.state_machine_name} state machine"
  assume_role_policy = data.aws_iam_policy_document.state_machine_assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "state_machine" {
  name   = "state-machine"
  role   = aws_iam_role.state_machine.id
  policy = data.aws_iam_policy_document.state_machine.json
}

resource "aws_sfn_state_machine" "run" {
  #checkov:skip=CKV_AWS_284:X-Ray is optional (tracing_enabled, default false; on in examples/complete).
  #checkov:skip=CKV_AWS_285:Execution data (prompts, model answers, tool results) stays out of the logs: include_execution_data = false on purpose.
  name     = local.state_machine_name
  role_arn = aws_iam_role.state_machine.arn
  type     = "STANDARD"
  tags     = var.tags

  definition = templatefile(local.state_machine_definition_path, {
    step_queue_url     = module.step_queue.url
    finalize_queue_url = module.finalize_queue.url
  })

  logging_configuration {
    log_destination        = "${aws_cloudwatch_log_group.state_machine.arn}:*"
    include_execution_data = false
    level                  = var.state_machine_log_level
  }

  tracing_configuration {
    enabled = var.tracing_enabled
  }

  dynamic "encryption_configuration" {
    for_each = local.kms_key_arns

    content {
      type                              = "CUSTOMER_MANAGED_KMS_KEY"
      kms_key_id                        = encryption_configuration.value
      kms_data_key_reuse_period_seconds = 300
    }
  }

  depends_on = [aws_iam_role_policy.state_machine]
}

################################################################################
# EventBridge: executions that ended without reaching Finalize, and the
# reconciliation schedule, both to the finalize function
################################################################################

resource "aws_cloudwatch_event_rule" "execution_ended" {
  name        = "${var.name}-run-ended"
  description = "Run executions that timed out, were stopped or failed: the finalize function settles them."
  tags        = var.tags

  event_pattern = jsonencode({
    source        = ["aws.states"]
    "detail-type" = ["Step Functions Execution Status Change"]
    detail = {
      status          = ["TIMED_OUT", "ABORTED", "FAILED"]
      stateMachineArn = [aws_sfn_state_machine.run.arn]
    }
  })
}

resource "aws_cloudwatch_event_target" "execution_ended" {
  rule = aws_cloudwatch_event_rule.execution_ended.name
  arn  = module.finalize.function_arn

  retry_policy {
    maximum_event_age_in_seconds = 86400
    maximum_retry_attempts       = 185
  }

  dead_letter_config {
    arn = aws_sqs_queue.eventbridge_dlq.arn
  }
}

resource "aws_lambda_permission" "execution_ended" {
  statement_id  = "AllowRunEndedRule"
  action        = "lambda:InvokeFunction"
  function_name = module.finalize.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.execution_ended.arn
}

# A classic scheduled rule (not EventBridge Scheduler): the finalize function
# recognises its payload's "detail-type": "Scheduled Event".
resource "aws_cloudwatch_event_rule" "reconcile" {
  name                = "${var.name}-reconcile"
  description         = "Releases stale hot state and starts accepted runs whose execution never started."
  schedule_expression = var.reconcile_schedule_expression
  tags                = var.tags
}

resource "aws_cloudwatch_event_target" "reconcile" {
  rule = aws_cloudwatch_event_rule.reconcile.name
  arn  = module.finalize.function_arn

  # The next tick does the same work: no point retrying for long.
  retry_policy {
    maximum_event_age_in_seconds = 60
    maximum_retry_attempts       = 0
  }

  dead_letter_config {
    arn = aws_sqs_queue.eventbridge_dlq.arn
  }
}

resource "aws_lambda_permission" "reconcile" {
  statement_id  = "AllowReconcileSchedule"
  action        = "lambda:InvokeFunction"
  function_name = module.finalize.function_name
  principal     = "events.amazonaws.com"
  source_arn    = aws_cloudwatch_event_rule.reconcile.arn
}

# EventBridge invokes the finalize function asynchronously: an event whose
# invocation still fails after Lambda's retries lands in the dead-letter queue.
resource "aws_lambda_function_event_invoke_config" "finalize" {
  function_name                = module.finalize.function_name
  maximum_event_age_in_seconds = 21600
  maximum_retry_attempts       = 2

  destination_config {
    on_failure {
      destination = aws_sqs_queue.eventbridge_dlq.arn
    }
  }
}

################################################################################
# HTTP API → api function
################################################################################

module "api_gateway" {
  source = "./modules/api"

  name                             = "${var.name}-api"
  function_name                    = module.api.function_name
  function_invoke_arn              = module.api.invoke_arn
  integration_timeout_milliseconds = min(30000, var.api_timeout * 1000)
  throttling_burst_limit           = var.api_throttling_burst_limit
  throttling_rate_limit            = var.api_throttling_rate_limit
  log_retention_days               = var.log_retention_days
  kms_key_arn                      = var.kms_key_arn
  tags                             = var.tags
}

################################################################################
# Event streams: function URL with response streaming → sse-relay function
################################################################################

# No IAM authorization: browsers and SDKs cannot sign requests with SigV4.
# The relay authenticates every request itself with the team's Bearer key
# before it streams anything.
resource "aws_lambda_function_url" "stream" {
  #checkov:skip=CKV_AWS_258:The relay authenticates every request with the team's Bearer key before streaming; clients cannot SigV4-sign.
  function_name      = module.sse_relay.function_name
  authorization_type = "NONE"
  invoke_mode        = "RESPONSE_STREAM"

  lifecycle {
    precondition {
      condition     = var.stream_max_seconds < var.sse_relay_timeout
      error_message = "stream_max_seconds (${var.stream_max_seconds}) must be shorter than sse_relay_timeout (${var.sse_relay_timeout}): the relay closes a stream before Lambda ends the invocation."
    }
  }
}

resource "aws_lambda_permission" "stream_url" {
  #checkov:skip=CKV_AWS_301:Public only through the function URL (function_url_auth_type NONE); the relay authenticates each request itself.
  statement_id           = "AllowPublicFunctionUrl"
  action                 = "lambda:InvokeFunctionUrl"
  function_name          = module.sse_relay.function_name
  principal              = "*"
  function_url_auth_type = "NONE"
}

# Function URLs created since October 2025 also need lambda:InvokeFunction,
# limited to invocations through the URL (lambda:InvokedViaFunctionUrl).
# aws_lambda_permission gained that condition in hashicorp/aws 6.29; with 5.x
# only CloudFormation can add it.
resource "aws_cloudformation_stack" "stream_url_invoke" {
  #checkov:skip=CKV_AWS_124:A one-resource stack holding a single permission statement; nothing to notify about.
  count = var.stream_url_invoke_permission ? 1 : 0

  name = "${var.name}-stream-url-invoke"
  tags = var.tags

  template_body = jsonencode({
    Description = "lambda:InvokeFunction through the function URL of ${module.sse_relay.function_name}"
    Resources = {
      InvokeViaFunctionUrl = {
        Type = "AWS::Lambda::Permission"
        Properties = {
          Action                = "lambda:InvokeFunction"
          FunctionName          = module.sse_relay.function_name
          Principal             = "*"
          InvokedViaFunctionUrl = true
        }
      }
    }
  })
}

################################################################################
# Migrations at deploy time
################################################################################

# The finalize function applies the SQL migrations embedded in its binary; the
# trigger re-runs it whenever a migration file changes (the function is
# updated first: this depends on the whole module).
resource "aws_lambda_invocation" "migrate" {
  count = var.run_migrations ? 1 : 0

  function_name = module.finalize.function_name
  input         = jsonencode({ action = "migrate" })

  triggers = {
    migrations = sha256(join("\n", [
      for file in sort(fileset(local.migrations_dir, "*.sql")) : "${file} ${filesha256("${local.migrations_dir}/${file}")}"
    ]))
  }

  depends_on = [module.finalize]
}

################################################################################
# Alarms
################################################################################

module "alarms" {
  source = "./modules/alarms"

  name          = var.name
  sns_topic_arn = var.alarm_sns_topic_arn

  dead_letter_queue_names = {
    step        = module.step_queue.dlq_name
    finalize    = module.finalize_queue.dlq_name
    eventbridge = aws_sqs_queue.eventbridge_dlq.name
  }

  state_machine_arn = aws_sfn_state_machine.run.arn

  function_names = {
    api       = module.api.function_name
    step      = module.step.function_name
    finalize  = module.finalize.function_name
    sse-relay = module.sse_relay.function_name
  }

  step_queue_name                  = module.step_queue.name
  step_log_group_name              = module.step.log_group_name
  step_queue_age_threshold_seconds = var.step_queue_age_alarm_seconds
  tags                             = var.tags
}
