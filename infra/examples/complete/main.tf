# agentrun in a VPC: the functions in private subnets reach Aurora Serverless
# v2 PostgreSQL through RDS Proxy (TLS required), AWS services through VPC
# endpoints, and the LLM provider through a NAT gateway. One customer managed
# key encrypts the secrets, tables, queues, logs and the database.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
}

################################################################################
# Customer managed key
################################################################################

data "aws_iam_policy_document" "key" {
  #checkov:skip=CKV_AWS_109:A key policy's resource "*" is the key itself; the account administers it (explicit actions, no kms:*).
  #checkov:skip=CKV_AWS_111:A key policy's resource "*" is the key itself; the account administers it (explicit actions, no kms:*).
  #checkov:skip=CKV_AWS_356:A key policy's resource "*" is the key itself, the only resource a key policy can name before the key exists.
  # The account administers the key, and IAM policies grant its use (the
  # functions' and the state machine's roles do so for this key only).
  statement {
    sid = "AccountAdministersAndDelegatesToIam"
    actions = [
      "kms:CancelKeyDeletion",
      "kms:CreateAlias",
      "kms:CreateGrant",
      "kms:Decrypt",
      "kms:DeleteAlias",
      "kms:DescribeKey",
      "kms:DisableKey",
      "kms:DisableKeyRotation",
      "kms:EnableKey",
      "kms:EnableKeyRotation",
      "kms:Encrypt",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:GetKeyPolicy",
      "kms:GetKeyRotationStatus",
      "kms:ListAliases",
      "kms:ListGrants",
      "kms:ListKeyPolicies",
      "kms:ListResourceTags",
      "kms:PutKeyPolicy",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:RetireGrant",
      "kms:RevokeGrant",
      "kms:ScheduleKeyDeletion",
      "kms:TagResource",
      "kms:UntagResource",
      "kms:UpdateAlias",
      "kms:UpdateKeyDescription",
    ]
    resources = ["*"]

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }

  statement {
    sid = "CloudWatchLogsEncryptsThisAccountsLogGroups"
    actions = [
      "kms:Encrypt",
      "kms:Decrypt",
      "kms:ReEncryptFrom",
      "kms:ReEncryptTo",
      "kms:GenerateDataKey",
      "kms:GenerateDataKeyWithoutPlaintext",
      "kms:DescribeKey",
    ]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["logs.${local.region}.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "kms:EncryptionContext:aws:logs:arn"
      values   = ["arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"]
    }
  }

  statement {
    sid       = "CloudWatchAlarmsPublishToTheEncryptedTopic"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = ["*"]

    principals {
      type        = "Service"
      identifiers = ["cloudwatch.amazonaws.com"]
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }
}

resource "aws_kms_key" "this" {
  description             = "${var.name}: secrets, tables, queues, logs and database"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.key.json
  tags                    = var.tags
}

resource "aws_kms_alias" "this" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.this.key_id
}

################################################################################
# Network and database
################################################################################

module "network" {
  source = "../../modules/network"

  name        = var.name
  kms_key_arn = aws_kms_key.this.arn
  tags        = var.tags
}

module "database" {
  source = "../../modules/database"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.network.function_security_group_id]
  max_capacity              = var.database_max_capacity
  deletion_protection       = var.deletion_protection
  kms_key_arn               = aws_kms_key.this.arn
  tags                      = var.tags
}

################################################################################
# Alarms topic
################################################################################

resource "aws_sns_topic" "alarms" {
  name              = "${var.name}-alarms"
  kms_master_key_id = aws_kms_key.this.arn
  tags              = var.tags
}

resource "aws_sns_topic_subscription" "alarm_email" {
  count = var.alarm_email == null ? 0 : 1

  topic_arn = aws_sns_topic.alarms.arn
  protocol  = "email"
  endpoint  = var.alarm_email
}

################################################################################
# agentrun
################################################################################

module "agentrun" {
  source = "../.."

  name                         = var.name
  database_url_secret_arn      = module.database.database_url_secret_arn
  llm_api_key_secret_arn       = var.llm_api_key_secret_arn
  llm_base_url                 = var.llm_base_url
  anthropic_api_key_secret_arn = var.anthropic_api_key_secret_arn
  anthropic_base_url           = var.anthropic_base_url
  artifacts_dir                = var.artifacts_dir

  subnet_ids         = module.network.private_subnet_ids
  security_group_ids = [module.network.function_security_group_id]

  # RDS Proxy pools connections: a few per function instance are enough,
  # and unnamed statements let it share server connections between them
  # (named ones would pin each client connection to one).
  db_connections = 4
  db_statements  = "unnamed"

  kms_key_arn         = aws_kms_key.this.arn
  tracing_enabled     = true
  deletion_protection = var.deletion_protection
  alarm_sns_topic_arn = aws_sns_topic.alarms.arn
  tags                = var.tags

  # The migrate invocation needs the proxy to reach the cluster.
  depends_on = [module.database]
}
