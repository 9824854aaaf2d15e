# agentrun with a PostgreSQL database you already have: its URL is in a
# Secrets Manager secret, and the functions reach it without a VPC.

module "agentrun" {
  source = "../.."

  name                         = var.name
  database_url_secret_arn      = var.database_url_secret_arn
  llm_api_key_secret_arn       = var.llm_api_key_secret_arn
  llm_base_url                 = var.llm_base_url
  anthropic_api_key_secret_arn = var.anthropic_api_key_secret_arn
  anthropic_base_url           = var.anthropic_base_url
  artifacts_dir                = var.artifacts_dir
  run_migrations               = var.run_migrations
  deletion_protection          = var.deletion_protection
  tags                         = var.tags
}
