# The hot store: slots, token reservations, cancel flags and other short-lived
# state keyed by pk/sk; items expire through expires_at.
resource "aws_dynamodb_table" "hot" {
  name                        = "${var.name}-hot"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "pk"
  range_key                   = "sk"
  deletion_protection_enabled = var.deletion_protection
  tags                        = var.tags

  attribute {
    name = "pk"
    type = "S"
  }

  attribute {
    name = "sk"
    type = "S"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}

# Run events in order (run_id, seq) for the event streams; the ledger in
# PostgreSQL stays the record, so items expire through expires_at.
resource "aws_dynamodb_table" "events" {
  name                        = "${var.name}-events"
  billing_mode                = "PAY_PER_REQUEST"
  hash_key                    = "run_id"
  range_key                   = "seq"
  deletion_protection_enabled = var.deletion_protection
  tags                        = var.tags

  attribute {
    name = "run_id"
    type = "S"
  }

  attribute {
    name = "seq"
    type = "N"
  }

  ttl {
    attribute_name = "expires_at"
    enabled        = true
  }

  point_in_time_recovery {
    enabled = true
  }

  server_side_encryption {
    enabled     = true
    kms_key_arn = var.kms_key_arn
  }
}
