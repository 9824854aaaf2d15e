# The root module on a mock AWS provider: what it would create, without AWS.

mock_provider "aws" {
  source = "./tests/mocks"
}

# Distinct ARNs and URLs where the assertions tell resources of one type apart.
override_resource {
  target = module.step_queue.aws_sqs_queue.this
  values = {
    arn = "arn:aws:sqs:eu-west-1:123456789012:agentrun-test-step"
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/agentrun-test-step"
  }
}

override_resource {
  target = module.step_queue.aws_sqs_queue.dlq
  values = {
    arn = "arn:aws:sqs:eu-west-1:123456789012:agentrun-test-step-dlq"
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/agentrun-test-step-dlq"
  }
}

override_resource {
  target = module.finalize_queue.aws_sqs_queue.this
  values = {
    arn = "arn:aws:sqs:eu-west-1:123456789012:agentrun-test-finalize"
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/agentrun-test-finalize"
  }
}

override_resource {
  target = module.finalize_queue.aws_sqs_queue.dlq
  values = {
    arn = "arn:aws:sqs:eu-west-1:123456789012:agentrun-test-finalize-dlq"
    url = "https://sqs.eu-west-1.amazonaws.com/123456789012/agentrun-test-finalize-dlq"
  }
}

override_resource {
  target = module.api.aws_lambda_function.this
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-api"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-api/invocations"
  }
}

override_resource {
  target = module.step.aws_lambda_function.this
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-step"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-step/invocations"
  }
}

override_resource {
  target = module.finalize.aws_lambda_function.this
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-finalize"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-finalize/invocations"
  }
}

override_resource {
  target = module.sse_relay.aws_lambda_function.this
  values = {
    arn        = "arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-sse-relay"
    invoke_arn = "arn:aws:apigateway:eu-west-1:lambda:path/2015-03-31/functions/arn:aws:lambda:eu-west-1:123456789012:function:agentrun-test-sse-relay/invocations"
  }
}

override_resource {
  target = module.tables.aws_dynamodb_table.hot
  values = {
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/agentrun-test-hot"
  }
}

override_resource {
  target = module.tables.aws_dynamodb_table.events
  values = {
    arn = "arn:aws:dynamodb:eu-west-1:123456789012:table/agentrun-test-events"
  }
}

override_resource {
  target = aws_cloudwatch_event_rule.execution_ended
  values = {
    arn = "arn:aws:events:eu-west-1:123456789012:rule/agentrun-test-execution_ended"
  }
}

override_resource {
  target = aws_cloudwatch_event_rule.reconcile
  values = {
    arn = "arn:aws:events:eu-west-1:123456789012:rule/agentrun-test-reconcile"
  }
}

variables {
  name                    = "agentrun-test"
  database_url_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:agentrun-database-url-AbCdEf"
  artifacts_dir           = "./tests/fixtures/lambda"
}

run "state_machine_is_the_committed_definition" {
  command = apply

  assert {
    condition     = aws_sfn_state_machine.run.type == "STANDARD"
    error_message = "The run state machine must be STANDARD (executions last up to 600 s and wait for task tokens)."
  }

  assert {
    condition = jsondecode(aws_sfn_state_machine.run.definition) == jsondecode(replace(replace(
      file("./statemachine/run.asl.json"),
      "$${step_queue_url}", module.step_queue.url),
    "$${finalize_queue_url}", module.finalize_queue.url))
    error_message = "The definition must be statemachine/run.asl.json with only the queue URLs filled in."
  }

  assert {
    condition     = jsondecode(aws_sfn_state_machine.run.definition).States.Step.Parameters.QueueUrl == module.step_queue.url
    error_message = "The Step task must send to the step queue."
  }

  assert {
    condition     = jsondecode(aws_sfn_state_machine.run.definition).States.Finalize.Parameters.QueueUrl == module.finalize_queue.url
    error_message = "The Finalize task must send to the finalize queue."
  }

  assert {
    condition     = endswith(jsondecode(aws_sfn_state_machine.run.definition).States.Step.Resource, ".waitForTaskToken")
    error_message = "The Step task must wait for the worker's task token."
  }

  assert {
    condition     = aws_sfn_state_machine.run.logging_configuration[0].level == "ERROR" && aws_sfn_state_machine.run.logging_configuration[0].include_execution_data == false
    error_message = "State machine logs: level ERROR by default, never the execution data."
  }
}

run "queues_event_sources_and_functions" {
  command = apply

  assert {
    condition     = contains(aws_lambda_event_source_mapping.step.function_response_types, "ReportBatchItemFailures")
    error_message = "The step event source mapping must report batch item failures."
  }

  assert {
    condition     = contains(aws_lambda_event_source_mapping.finalize.function_response_types, "ReportBatchItemFailures")
    error_message = "The finalize event source mapping must report batch item failures."
  }

  assert {
    condition     = aws_lambda_event_source_mapping.step.batch_size == 10
    error_message = "Step messages are handled ten per invocation (at once) by default."
  }

  assert {
    condition     = aws_lambda_event_source_mapping.step.event_source_arn == module.step_queue.arn && aws_lambda_event_source_mapping.step.function_name == module.step.function_arn
    error_message = "The step queue must feed the step function."
  }

  assert {
    condition     = aws_lambda_event_source_mapping.finalize.event_source_arn == module.finalize_queue.arn && aws_lambda_event_source_mapping.finalize.function_name == module.finalize.function_arn
    error_message = "The finalize queue must feed the finalize function."
  }

  assert {
    condition     = module.step_queue.visibility_timeout_seconds >= 6 * module.step.timeout
    error_message = "The step queue's visibility timeout must be at least 6 times the step function's timeout."
  }

  assert {
    condition     = module.step.timeout == jsondecode(file("${path.module}/statemachine/run.asl.json")).States.Step.TimeoutSeconds
    error_message = "The step function's timeout must be the Step task's TimeoutSeconds (both from StepPolicy)."
  }

  assert {
    condition     = module.finalize_queue.visibility_timeout_seconds >= 6 * module.finalize.timeout
    error_message = "The finalize queue's visibility timeout must be at least 6 times the finalize function's timeout."
  }

  assert {
    condition = (
      jsondecode(module.step_queue.redrive_policy).deadLetterTargetArn == module.step_queue.dlq_arn &&
      jsondecode(module.step_queue.redrive_policy).maxReceiveCount == 5
    )
    error_message = "The step queue must redrive to its dead-letter queue after 5 receives."
  }

  assert {
    condition = (
      jsondecode(module.finalize_queue.redrive_policy).deadLetterTargetArn == module.finalize_queue.dlq_arn &&
      jsondecode(module.finalize_queue.redrive_policy).maxReceiveCount == 5
    )
    error_message = "The finalize queue must redrive to its dead-letter queue after 5 receives."
  }

  assert {
    condition = alltrue([
      for f in [module.api, module.step, module.finalize, module.sse_relay] :
      f.architectures == tolist(["arm64"]) && f.runtime == "provided.al2023"
    ])
    error_message = "Every function must be arm64 on provided.al2023."
  }

  assert {
    condition     = [module.api.timeout, module.step.timeout, module.finalize.timeout, module.sse_relay.timeout] == [30, 300, 60, 900]
    error_message = "Default timeouts: api 30 s, step 300 s (the Step task's, from StepPolicy), finalize 60 s, sse-relay 900 s."
  }

  assert {
    condition     = aws_lambda_function_url.stream.invoke_mode == "RESPONSE_STREAM" && aws_lambda_function_url.stream.authorization_type == "NONE"
    error_message = "The stream URL must stream responses; the relay authenticates requests itself."
  }

  assert {
    condition     = aws_lambda_function_url.stream.function_name == module.sse_relay.function_name
    error_message = "The stream URL must belong to the sse-relay function."
  }
}

run "tables" {
  command = apply

  assert {
    condition     = module.tables.hot_table_ttl[0].attribute_name == "expires_at" && module.tables.hot_table_ttl[0].enabled
    error_message = "The hot table must expire items through expires_at."
  }

  assert {
    condition     = module.tables.events_table_ttl[0].attribute_name == "expires_at" && module.tables.events_table_ttl[0].enabled
    error_message = "The events table must expire items through expires_at."
  }

  assert {
    condition     = module.tables.hot_table_name == "agentrun-test-hot" && module.tables.events_table_name == "agentrun-test-events"
    error_message = "Table names are NAME-hot and NAME-events."
  }
}

run "environment_contract" {
  command = apply

  assert {
    condition = keys(module.step.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "AGENTRUN_STEPS_PER_TASK",
    ])
    error_message = "The step function gets the common settings and its steps per task (no LLM key secret and no Anthropic setting unless one is given)."
  }

  assert {
    condition = keys(module.api.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "STATE_MACHINE_ARN", "AGENTRUN_ADMIN_KEY_SECRET_ARN", "AGENTRUN_STREAM_URL", "AGENTRUN_MAX_WAIT_SECONDS",
    ])
    error_message = "The api function also gets the state machine, the admin key secret, the relay's URL and the longest wait."
  }

  assert {
    condition = keys(module.finalize.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "STATE_MACHINE_ARN",
    ])
    error_message = "The finalize function also gets the state machine."
  }

  assert {
    condition = keys(module.sse_relay.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "AGENTRUN_STREAM_MAX_PER_TEAM", "AGENTRUN_STREAM_MAX_TOTAL", "AGENTRUN_STREAM_MAX_SECONDS", "AGENTRUN_STREAM_MAX_IDLE_SECONDS",
    ])
    error_message = "The sse-relay function also gets the stream limits."
  }

  assert {
    condition = (
      module.api.environment.STATE_MACHINE_ARN == aws_sfn_state_machine.run.arn &&
      module.api.environment.AGENTRUN_ADMIN_KEY_SECRET_ARN == aws_secretsmanager_secret.admin_key[0].arn &&
      module.step.environment.HOT_TABLE == module.tables.hot_table_name &&
      module.step.environment.EVENTS_TABLE == module.tables.events_table_name &&
      module.step.environment.DATABASE_URL_SECRET_ARN == var.database_url_secret_arn &&
      module.step.environment.OPENAI_BASE_URL == "https://api.openai.com/v1" &&
      module.step.environment.AGENTRUN_DB_CONNECTIONS == "4" &&
      module.step.environment.AGENTRUN_DB_STATEMENTS == "cached" &&
      module.step.environment.AGENTRUN_OUTBOUND_ALLOW == "" &&
      module.sse_relay.environment.AGENTRUN_STREAM_MAX_PER_TEAM == "100" &&
      module.sse_relay.environment.AGENTRUN_STREAM_MAX_TOTAL == "2000" &&
      module.sse_relay.environment.AGENTRUN_STREAM_MAX_SECONDS == "840" &&
      module.sse_relay.environment.AGENTRUN_STREAM_MAX_IDLE_SECONDS == "120" &&
      module.api.environment.AGENTRUN_STREAM_URL == trimsuffix(aws_lambda_function_url.stream.function_url, "/") &&
      module.api.environment.AGENTRUN_MAX_WAIT_SECONDS == "25"
    )
    error_message = "Environment values must follow the variables' defaults and the created resources."
  }

  assert {
    condition     = length(aws_lambda_invocation.migrate) == 1 && jsondecode(aws_lambda_invocation.migrate[0].input).action == "migrate" && aws_lambda_invocation.migrate[0].function_name == module.finalize.function_name
    error_message = "The finalize function must be invoked with {\"action\":\"migrate\"} at deploy time."
  }

  assert {
    condition     = length(aws_lambda_invocation.migrate[0].triggers.migrations) == 64
    error_message = "The migrate invocation must be triggered by a hash of the migration files."
  }
}

run "eventbridge_and_alarms" {
  command = apply

  assert {
    condition = (
      module.alarms.llm_circuit_log_group == module.step.log_group_name &&
      strcontains(module.alarms.llm_circuit_pattern, "LLM circuit open")
    )
    error_message = "The step function's \"LLM circuit open\" errors must be counted from its log group and alarmed on."
  }

  assert {
    condition = jsondecode(aws_cloudwatch_event_rule.execution_ended.event_pattern) == {
      source        = ["aws.states"]
      "detail-type" = ["Step Functions Execution Status Change"]
      detail = {
        status          = ["TIMED_OUT", "ABORTED", "FAILED"]
        stateMachineArn = [aws_sfn_state_machine.run.arn]
      }
    }
    error_message = "Executions of this state machine that timed out, were stopped or failed must reach the finalize function."
  }

  assert {
    condition     = aws_cloudwatch_event_target.execution_ended.arn == module.finalize.function_arn && aws_cloudwatch_event_target.reconcile.arn == module.finalize.function_arn
    error_message = "Both rules must target the finalize function."
  }

  assert {
    condition     = aws_cloudwatch_event_rule.reconcile.schedule_expression == "rate(1 minute)"
    error_message = "The reconciliation runs every minute by default."
  }

  assert {
    condition     = aws_lambda_permission.execution_ended.source_arn == aws_cloudwatch_event_rule.execution_ended.arn && aws_lambda_permission.reconcile.source_arn == aws_cloudwatch_event_rule.reconcile.arn
    error_message = "EventBridge may invoke the finalize function only from our two rules."
  }

  assert {
    condition     = length(module.alarms.alarm_arns) == 15
    error_message = "3 dead-letter queues + 2 execution metrics + 4 functions x (errors, throttles) + step queue age + LLM circuit open = 15 alarms."
  }

  assert {
    condition     = length(module.alarms.alarm_actions) == 0
    error_message = "Without an SNS topic the alarms have no actions."
  }
}

run "optional_llm_key_no_admin_api_and_alarm_topic" {
  command = plan

  variables {
    llm_api_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-key-AbCdEf"
    enable_admin_api       = false
    alarm_sns_topic_arn    = "arn:aws:sns:eu-west-1:123456789012:alarms"
    run_migrations         = false
  }

  assert {
    condition = alltrue([
      for env in [module.api.environment, module.step.environment, module.finalize.environment] :
      env.OPENAI_API_KEY_SECRET_ARN == var.llm_api_key_secret_arn
    ])
    error_message = "The api, step and finalize functions get the LLM key secret's ARN when one is given."
  }

  assert {
    condition     = !contains(keys(module.sse_relay.environment), "OPENAI_API_KEY_SECRET_ARN")
    error_message = "The sse-relay function never gets the LLM key secret's ARN: it calls no LLM and its role may read only the database secret."
  }

  assert {
    condition = alltrue(flatten([
      for function in [
        { env = module.api.environment, policy = data.aws_iam_policy_document.api },
        { env = module.step.environment, policy = data.aws_iam_policy_document.step },
        { env = module.finalize.environment, policy = data.aws_iam_policy_document.finalize },
        { env = module.sse_relay.environment, policy = data.aws_iam_policy_document.sse_relay },
        ] : [
        for name, arn in function.env : anytrue([
          for statement in function.policy.statement :
          statement.effect != "Deny" && contains(statement.actions, "secretsmanager:GetSecretValue") && contains(statement.resources, arn)
        ]) if endswith(name, "_SECRET_ARN")
      ]
    ]))
    error_message = "Every <NAME>_SECRET_ARN in a function's environment must be a secret its role may read: the code reads them all at cold start and fails on AccessDenied."
  }

  assert {
    condition     = !contains(keys(module.api.environment), "AGENTRUN_ADMIN_KEY_SECRET_ARN") && length(aws_secretsmanager_secret.admin_key) == 0
    error_message = "Without the admin API there is no admin key secret."
  }

  assert {
    condition     = module.alarms.alarm_actions == tolist(["arn:aws:sns:eu-west-1:123456789012:alarms"])
    error_message = "Alarms notify the SNS topic when one is given."
  }

  assert {
    condition     = length(aws_lambda_invocation.migrate) == 0
    error_message = "run_migrations = false invokes nothing."
  }
}

run "anthropic_provider_beside_openai" {
  command = apply

  variables {
    llm_api_key_secret_arn       = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:openai-key-AbCdEf"
    anthropic_api_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:anthropic-key-AbCdEf"
    anthropic_base_url           = "https://anthropic.internal.example.com"
  }

  assert {
    condition = keys(module.step.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "OPENAI_API_KEY_SECRET_ARN", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY_SECRET_ARN",
      "AGENTRUN_STEPS_PER_TASK",
    ])
    error_message = "With both providers' settings given, the step function gets both keys' secret ARNs and the Anthropic base URL."
  }

  assert {
    condition = keys(module.api.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "OPENAI_API_KEY_SECRET_ARN", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY_SECRET_ARN",
      "STATE_MACHINE_ARN", "AGENTRUN_ADMIN_KEY_SECRET_ARN", "AGENTRUN_STREAM_URL", "AGENTRUN_MAX_WAIT_SECONDS",
    ])
    error_message = "With both providers' settings given, the api function gets both keys' secret ARNs and the Anthropic base URL."
  }

  assert {
    condition = keys(module.finalize.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "OPENAI_API_KEY_SECRET_ARN", "ANTHROPIC_BASE_URL", "ANTHROPIC_API_KEY_SECRET_ARN",
      "STATE_MACHINE_ARN",
    ])
    error_message = "With both providers' settings given, the finalize function gets both keys' secret ARNs and the Anthropic base URL."
  }

  assert {
    condition = keys(module.sse_relay.environment) == sort([
      "DATABASE_URL_SECRET_ARN", "OPENAI_BASE_URL", "AGENTRUN_DB_CONNECTIONS", "AGENTRUN_DB_STATEMENTS", "HOT_TABLE", "EVENTS_TABLE", "AGENTRUN_OUTBOUND_ALLOW",
      "ANTHROPIC_BASE_URL",
      "AGENTRUN_STREAM_MAX_PER_TEAM", "AGENTRUN_STREAM_MAX_TOTAL", "AGENTRUN_STREAM_MAX_SECONDS", "AGENTRUN_STREAM_MAX_IDLE_SECONDS",
    ])
    error_message = "With both providers' settings given, the sse-relay function gets the Anthropic base URL but neither key's secret ARN (it calls no LLM; its role may read only the database secret)."
  }

  assert {
    condition = alltrue([
      for env in [module.api.environment, module.step.environment, module.finalize.environment] :
      env.ANTHROPIC_API_KEY_SECRET_ARN == var.anthropic_api_key_secret_arn &&
      env.ANTHROPIC_BASE_URL == var.anthropic_base_url &&
      env.OPENAI_API_KEY_SECRET_ARN == var.llm_api_key_secret_arn
    ])
    error_message = "The api, step and finalize functions get the Anthropic key secret's ARN and base URL when they are given, beside the OpenAI key secret's ARN."
  }

  assert {
    condition = (
      module.sse_relay.environment.ANTHROPIC_BASE_URL == var.anthropic_base_url &&
      !contains(keys(module.sse_relay.environment), "ANTHROPIC_API_KEY_SECRET_ARN") &&
      !contains(keys(module.sse_relay.environment), "OPENAI_API_KEY_SECRET_ARN")
    )
    error_message = "The sse-relay function gets the Anthropic base URL but never an LLM key secret's ARN."
  }

  assert {
    condition = alltrue(flatten([
      for function in [
        { env = module.api.environment, policy = data.aws_iam_policy_document.api },
        { env = module.step.environment, policy = data.aws_iam_policy_document.step },
        { env = module.finalize.environment, policy = data.aws_iam_policy_document.finalize },
        { env = module.sse_relay.environment, policy = data.aws_iam_policy_document.sse_relay },
        ] : [
        for name, arn in function.env : anytrue([
          for statement in function.policy.statement :
          statement.effect != "Deny" && contains(statement.actions, "secretsmanager:GetSecretValue") && contains(statement.resources, arn)
        ]) if endswith(name, "_SECRET_ARN")
      ]
    ]))
    error_message = "Every <NAME>_SECRET_ARN in a function's environment must be a secret its role may read: the code reads them all at cold start and fails on AccessDenied."
  }

  assert {
    condition = alltrue([
      for policy in [data.aws_iam_policy_document.api, data.aws_iam_policy_document.step, data.aws_iam_policy_document.finalize] :
      anytrue([
        for statement in policy.statement :
        contains(statement.actions, "secretsmanager:GetSecretValue") && contains(statement.resources, var.anthropic_api_key_secret_arn)
      ])
    ])
    error_message = "The api, step and finalize roles may read the Anthropic key secret (secretsmanager:GetSecretValue on its ARN)."
  }

  assert {
    condition = alltrue([
      for policy in [data.aws_iam_policy_document.api, data.aws_iam_policy_document.step, data.aws_iam_policy_document.finalize] :
      anytrue([
        for statement in policy.statement :
        contains(statement.actions, "secretsmanager:GetSecretValue") && contains(statement.resources, var.llm_api_key_secret_arn)
      ])
    ])
    error_message = "The api, step and finalize roles may still read the OpenAI key secret beside the Anthropic one."
  }
}

run "anthropic_key_without_base_url" {
  command = plan

  variables {
    anthropic_api_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:anthropic-key-AbCdEf"
    enable_admin_api             = false
    run_migrations               = false
  }

  assert {
    condition = alltrue([
      for env in [module.api.environment, module.step.environment, module.finalize.environment] :
      env.ANTHROPIC_API_KEY_SECRET_ARN == var.anthropic_api_key_secret_arn &&
      !contains(keys(env), "ANTHROPIC_BASE_URL") &&
      !contains(keys(env), "OPENAI_API_KEY_SECRET_ARN")
    ])
    error_message = "Each Anthropic setting is set on its own: the key secret's ARN without ANTHROPIC_BASE_URL (the code then uses https://api.anthropic.com) and without the OpenAI key."
  }

  assert {
    condition = (
      !contains(keys(module.sse_relay.environment), "ANTHROPIC_API_KEY_SECRET_ARN") &&
      !contains(keys(module.sse_relay.environment), "ANTHROPIC_BASE_URL") &&
      !contains(keys(module.sse_relay.environment), "OPENAI_API_KEY_SECRET_ARN")
    )
    error_message = "The sse-relay function never gets the Anthropic key secret's ARN."
  }

  assert {
    condition = alltrue([
      for policy in [data.aws_iam_policy_document.api, data.aws_iam_policy_document.step, data.aws_iam_policy_document.finalize] :
      anytrue([
        for statement in policy.statement :
        contains(statement.actions, "secretsmanager:GetSecretValue") && contains(statement.resources, var.anthropic_api_key_secret_arn)
      ])
    ])
    error_message = "The api, step and finalize roles may read the Anthropic key secret when it is the only LLM key."
  }
}

run "existing_admin_key_secret" {
  command = plan

  variables {
    admin_key_secret_arn = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:admin-key-AbCdEf"
  }

  assert {
    condition     = module.api.environment.AGENTRUN_ADMIN_KEY_SECRET_ARN == var.admin_key_secret_arn && length(aws_secretsmanager_secret.admin_key) == 0
    error_message = "A given admin key secret is used as it is."
  }
}

run "in_a_vpc_with_a_customer_key" {
  command = plan

  variables {
    subnet_ids         = ["subnet-0123456789abcdef0", "subnet-0123456789abcdef1"]
    security_group_ids = ["sg-0123456789abcdef0"]
    kms_key_arn        = "arn:aws:kms:eu-west-1:123456789012:key/11111111-2222-3333-4444-555555555555"
    tracing_enabled    = true
  }

  assert {
    condition     = aws_sfn_state_machine.run.tracing_configuration[0].enabled && aws_sfn_state_machine.run.encryption_configuration[0].kms_key_id == var.kms_key_arn
    error_message = "The state machine is traced and encrypted with the customer key when asked."
  }

  assert {
    condition     = aws_cloudwatch_log_group.state_machine.kms_key_id == var.kms_key_arn
    error_message = "The state machine's log group uses the customer key."
  }
}

################################################################################
# Refused settings
################################################################################

run "refuses_a_bad_name" {
  command = plan

  variables {
    name = "Agent_Run"
  }

  expect_failures = [var.name]
}

run "refuses_a_name_longer_than_32" {
  command = plan

  variables {
    name = "agentrun-abcdefghijklmnopqrstuvwx"
  }

  expect_failures = [var.name]
}

run "refuses_streams_outliving_the_relay" {
  command = plan

  variables {
    stream_max_seconds = 900
  }

  expect_failures = [aws_lambda_function_url.stream]
}

run "refuses_a_non_positive_batch_size" {
  command = plan

  variables {
    step_batch_size     = 0
    finalize_batch_size = -1
  }

  expect_failures = [var.step_batch_size, var.finalize_batch_size]
}

run "refuses_a_concurrency_below_two" {
  command = plan

  variables {
    step_maximum_concurrency = 1
  }

  expect_failures = [var.step_maximum_concurrency]
}

run "refuses_an_api_timeout_beyond_the_http_api_limit" {
  command = plan

  variables {
    api_timeout = 31
  }

  expect_failures = [var.api_timeout]
}

run "refuses_a_database_url_secret_that_is_not_an_arn" {
  command = plan

  variables {
    database_url_secret_arn = "postgres://agentrun:secret@db:5432/agentrun"
  }

  expect_failures = [var.database_url_secret_arn]
}

run "refuses_bad_anthropic_settings" {
  command = plan

  variables {
    anthropic_base_url           = "api.anthropic.com"
    anthropic_api_key_secret_arn = "sk-ant-not-an-arn"
  }

  expect_failures = [var.anthropic_base_url, var.anthropic_api_key_secret_arn]
}

run "refuses_unknown_log_settings" {
  command = plan

  variables {
    log_retention_days      = 31
    state_machine_log_level = "DEBUG"
  }

  expect_failures = [var.log_retention_days, var.state_machine_log_level]
}
