################################################################################
# What each function's code calls, on only its own resources. Logging, X-Ray
# and VPC permissions are added by modules/function.
#
# DynamoDB has no TransactWriteItems permission: IAM authorizes each item of a
# transaction as its own action (PutItem, UpdateItem, DeleteItem,
# ConditionCheckItem), so those are what the hot store's transactions need.
#
# states:SendTaskSuccess, SendTaskFailure and SendTaskHeartbeat have no
# resource type in the Service Authorization Reference (a task token is not an
# ARN): "*" is the narrowest resource IAM accepts for them.
################################################################################

data "aws_iam_policy_document" "api" {
  statement {
    sid       = "StartRunExecutions"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.run.arn]
  }

  statement {
    sid       = "DescribeAndStopRunExecutions"
    actions   = ["states:DescribeExecution", "states:StopExecution"]
    resources = [local.execution_arns]
  }

  statement {
    sid = "HotStore"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
      "dynamodb:ConditionCheckItem",
    ]
    resources = [module.tables.hot_table_arn]
  }

  statement {
    sid       = "EventsTable"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:Query"]
    resources = [module.tables.events_table_arn]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secrets_api
  }

  dynamic "statement" {
    for_each = local.kms_key_arns

    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "step" {
  statement {
    sid       = "AnswerStepTasks"
    actions   = ["states:SendTaskSuccess", "states:SendTaskFailure", "states:SendTaskHeartbeat"]
    resources = ["*"]
  }

  statement {
    sid = "HotStore"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
      "dynamodb:ConditionCheckItem",
    ]
    resources = [module.tables.hot_table_arn]
  }

  statement {
    sid       = "EventsTable"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:Query"]
    resources = [module.tables.events_table_arn]
  }

  statement {
    sid = "ConsumeStepQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [module.step_queue.arn]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secrets_all_functions
  }

  dynamic "statement" {
    for_each = local.kms_key_arns

    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "finalize" {
  statement {
    sid       = "StartRunExecutions"
    actions   = ["states:StartExecution"]
    resources = [aws_sfn_state_machine.run.arn]
  }

  statement {
    sid       = "DescribeAndStopRunExecutions"
    actions   = ["states:DescribeExecution", "states:StopExecution"]
    resources = [local.execution_arns]
  }

  statement {
    sid = "HotStore"
    actions = [
      "dynamodb:GetItem",
      "dynamodb:PutItem",
      "dynamodb:UpdateItem",
      "dynamodb:DeleteItem",
      "dynamodb:Query",
      "dynamodb:ConditionCheckItem",
    ]
    resources = [module.tables.hot_table_arn]
  }

  statement {
    sid       = "EventsTable"
    actions   = ["dynamodb:BatchWriteItem", "dynamodb:Query"]
    resources = [module.tables.events_table_arn]
  }

  statement {
    sid = "ConsumeFinalizeQueue"
    actions = [
      "sqs:ReceiveMessage",
      "sqs:DeleteMessage",
      "sqs:GetQueueAttributes",
      "sqs:ChangeMessageVisibility",
    ]
    resources = [module.finalize_queue.arn]
  }

  # Lambda sends failed asynchronous invocations (EventBridge events) to the
  # on-failure destination with the function's role.
  statement {
    sid       = "FailedEventsDestination"
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.eventbridge_dlq.arn]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secrets_all_functions
  }

  dynamic "statement" {
    for_each = local.kms_key_arns

    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

data "aws_iam_policy_document" "sse_relay" {
  statement {
    sid       = "HotStoreRead"
    actions   = ["dynamodb:GetItem", "dynamodb:Query"]
    resources = [module.tables.hot_table_arn]
  }

  statement {
    sid       = "EventsTableRead"
    actions   = ["dynamodb:Query"]
    resources = [module.tables.events_table_arn]
  }

  statement {
    sid       = "ReadSecrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = local.secrets_sse_relay
  }

  dynamic "statement" {
    for_each = local.kms_key_arns

    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:DescribeKey"]
      resources = [statement.value]
    }
  }
}

################################################################################
# State machine role
################################################################################

data "aws_iam_policy_document" "state_machine" {
  statement {
    sid       = "SendToWorkerQueues"
    actions   = ["sqs:SendMessage"]
    resources = [module.step_queue.arn, module.finalize_queue.arn]
  }

  # CloudWatch Logs delivery for Step Functions: these actions have no
  # resource-level permissions, so AWS documents them on "*".
  statement {
    sid = "LogDelivery"
    actions = [
      "logs:CreateLogDelivery",
      "logs:GetLogDelivery",
      "logs:UpdateLogDelivery",
      "logs:DeleteLogDelivery",
      "logs:ListLogDeliveries",
      "logs:PutResourcePolicy",
      "logs:DescribeResourcePolicies",
      "logs:DescribeLogGroups",
    ]
    resources = ["*"]
  }

  dynamic "statement" {
    for_each = var.tracing_enabled ? [1] : []

    content {
      sid       = "XRayWrite"
      actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
      resources = ["*"]
    }
  }

  dynamic "statement" {
    for_each = local.kms_key_arns

    content {
      sid       = "CustomerManagedKey"
      actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
      resources = [statement.value]
    }
  }
}
