# Test only: copied as examples/minimal/moto_override.tf into a scratch copy
# of infra/ by scripts/test-infra.sh apply, with MOTO_ENDPOINT replaced by the
# emulator's address. Credentials come from AWS_ACCESS_KEY_ID and
# AWS_SECRET_ACCESS_KEY (dummies). Terraform merges this over the example's
# provider and module blocks.

provider "aws" {
  region                      = "us-east-1"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  s3_use_path_style           = true

  endpoints {
    apigatewayv2   = "MOTO_ENDPOINT"
    cloudformation = "MOTO_ENDPOINT"
    cloudwatch     = "MOTO_ENDPOINT"
    dynamodb       = "MOTO_ENDPOINT"
    ec2            = "MOTO_ENDPOINT"
    events         = "MOTO_ENDPOINT"
    iam            = "MOTO_ENDPOINT"
    kms            = "MOTO_ENDPOINT"
    lambda         = "MOTO_ENDPOINT"
    logs           = "MOTO_ENDPOINT"
    secretsmanager = "MOTO_ENDPOINT"
    sfn            = "MOTO_ENDPOINT"
    sns            = "MOTO_ENDPOINT"
    sqs            = "MOTO_ENDPOINT"
    sts            = "MOTO_ENDPOINT"
  }
}
