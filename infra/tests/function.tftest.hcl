# modules/function on its own: the parts the root module's tests cannot see.

mock_provider "aws" {
  source = "./tests/mocks"
}

variables {
  function_name = "agentrun-test-step"
  zip_path      = "./tests/fixtures/lambda/agentrun-step/bootstrap.zip"
  memory_size   = 512
  timeout       = 330
  policy_json   = "{\"Version\":\"2012-10-17\",\"Statement\":[]}"
}

run "outside_a_vpc" {
  command = apply

  module {
    source = "./modules/function"
  }

  assert {
    condition     = aws_lambda_function.this.architectures == tolist(["arm64"]) && aws_lambda_function.this.runtime == "provided.al2023" && aws_lambda_function.this.handler == "bootstrap"
    error_message = "A function is arm64, provided.al2023, handler bootstrap."
  }

  assert {
    condition     = aws_lambda_function.this.logging_config[0].log_format == "JSON" && aws_lambda_function.this.logging_config[0].log_group == aws_cloudwatch_log_group.this.name
    error_message = "A function logs JSON to its own log group."
  }

  assert {
    condition     = aws_cloudwatch_log_group.this.name == "/aws/lambda/agentrun-test-step" && aws_cloudwatch_log_group.this.retention_in_days == 30
    error_message = "The log group is /aws/lambda/NAME with 30 days of retention by default."
  }

  assert {
    condition     = length(aws_lambda_function.this.vpc_config) == 0 && length(aws_iam_role_policy.vpc) == 0
    error_message = "Outside a VPC the role gets no network interface permissions."
  }

  assert {
    condition     = aws_lambda_function.this.tracing_config[0].mode == "PassThrough" && length(aws_iam_role_policy.tracing) == 0
    error_message = "Without tracing: PassThrough and no X-Ray permissions."
  }
}

run "in_a_vpc_with_tracing" {
  command = apply

  module {
    source = "./modules/function"
  }

  variables {
    subnet_ids         = ["subnet-0123456789abcdef0"]
    security_group_ids = ["sg-0123456789abcdef0"]
    tracing_enabled    = true
  }

  assert {
    condition     = aws_lambda_function.this.vpc_config[0].subnet_ids == toset(["subnet-0123456789abcdef0"])
    error_message = "The function runs in the given subnets."
  }

  assert {
    condition     = length(aws_iam_role_policy.vpc) == 1 && length(aws_iam_role_policy.tracing) == 1
    error_message = "In a VPC the role may manage network interfaces; with tracing it may write traces."
  }

  assert {
    condition     = aws_lambda_function.this.tracing_config[0].mode == "Active"
    error_message = "Tracing is Active when enabled."
  }
}

run "refuses_subnets_without_security_groups" {
  command = plan

  module {
    source = "./modules/function"
  }

  variables {
    subnet_ids = ["subnet-0123456789abcdef0"]
  }

  expect_failures = [aws_lambda_function.this]
}

run "refuses_a_missing_package" {
  command = plan

  module {
    source = "./modules/function"
  }

  variables {
    zip_path = "./tests/fixtures/lambda/agentrun-nothing/bootstrap.zip"
  }

  expect_failures = [aws_lambda_function.this]
}
