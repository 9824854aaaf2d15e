data "aws_partition" "current" {}
data "aws_region" "current" {}
data "aws_caller_identity" "current" {}

locals {
  in_vpc = length(var.subnet_ids) > 0
  # arn:PARTITION:ec2:REGION:ACCOUNT: of this function's network resources.
  ec2_arn_prefix = "arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}"
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/aws/lambda/${var.function_name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
  tags              = var.tags
}

################################################################################
# Execution role: the caller's policy, plus logging, tracing and VPC access
################################################################################

data "aws_iam_policy_document" "assume" {
  statement {
    sid     = "LambdaAssumesRole"
    actions = ["sts:AssumeRole"]

    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "this" {
  name               = var.function_name
  description        = "Execution role of ${var.function_name}"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = var.tags
}

resource "aws_iam_role_policy" "code" {
  name   = "code"
  role   = aws_iam_role.this.id
  policy = var.policy_json
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "OwnLogGroup"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
}

resource "aws_iam_role_policy" "logs" {
  name   = "logs"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.logs.json
}

# What AWSXRayDaemonWriteAccess grants a function, limited to writing traces.
# X-Ray has no resource-level permissions for these actions.
data "aws_iam_policy_document" "tracing" {
  count = var.tracing_enabled ? 1 : 0

  statement {
    sid       = "XRayWrite"
    actions   = ["xray:PutTraceSegments", "xray:PutTelemetryRecords", "xray:GetSamplingRules", "xray:GetSamplingTargets"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "tracing" {
  count = var.tracing_enabled ? 1 : 0

  name   = "tracing"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.tracing[0].json
}

# The actions of AWSLambdaVPCAccessExecutionRole: Lambda manages the
# function's network interfaces with the execution role. The Describe actions
# have no resource-level permissions; the others are limited to this region
# and account's network interfaces, subnets and security groups.
data "aws_iam_policy_document" "vpc" {
  count = local.in_vpc ? 1 : 0

  statement {
    sid       = "DescribeNetwork"
    actions   = ["ec2:DescribeNetworkInterfaces", "ec2:DescribeSubnets"]
    resources = ["*"]
  }

  statement {
    sid = "ManageNetworkInterfaces"
    actions = [
      "ec2:CreateNetworkInterface",
      "ec2:DeleteNetworkInterface",
      "ec2:AssignPrivateIpAddresses",
      "ec2:UnassignPrivateIpAddresses",
    ]
    resources = [
      "${local.ec2_arn_prefix}:network-interface/*",
      "${local.ec2_arn_prefix}:subnet/*",
      "${local.ec2_arn_prefix}:security-group/*",
    ]
  }
}

resource "aws_iam_role_policy" "vpc" {
  count = local.in_vpc ? 1 : 0

  name   = "vpc"
  role   = aws_iam_role.this.id
  policy = data.aws_iam_policy_document.vpc[0].json
}

################################################################################
# Function
################################################################################

resource "aws_lambda_function" "this" {
  function_name    = var.function_name
  description      = var.description
  role             = aws_iam_role.this.arn
  filename         = var.zip_path
  source_code_hash = fileexists(var.zip_path) ? filebase64sha256(var.zip_path) : null
  runtime          = "provided.al2023"
  handler          = "bootstrap"
  architectures    = ["arm64"]
  memory_size      = var.memory_size
  timeout          = var.timeout
  kms_key_arn      = var.kms_key_arn
  tags             = var.tags

  environment {
    variables = var.environment
  }

  logging_config {
    log_format = "JSON"
    log_group  = aws_cloudwatch_log_group.this.name
  }

  tracing_config {
    mode = var.tracing_enabled ? "Active" : "PassThrough"
  }

  dynamic "vpc_config" {
    for_each = local.in_vpc ? [1] : []

    content {
      subnet_ids         = var.subnet_ids
      security_group_ids = var.security_group_ids
    }
  }

  lifecycle {
    precondition {
      condition     = length(var.subnet_ids) == 0 || length(var.security_group_ids) > 0
      error_message = "A function in subnets needs at least one security group (security_group_ids)."
    }

    precondition {
      condition     = fileexists(var.zip_path)
      error_message = "Deployment package ${var.zip_path} is missing: build it with `cargo lambda build --release --arm64 --output-format zip`."
    }
  }

  # The role must be able to write logs, and to manage network interfaces in
  # a VPC, before the function is created.
  depends_on = [
    aws_iam_role_policy.code,
    aws_iam_role_policy.logs,
    aws_iam_role_policy.tracing,
    aws_iam_role_policy.vpc,
  ]
}
