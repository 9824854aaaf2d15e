use async_trait::async_trait;
use aws_sdk_sfn::types::ExecutionStatus;
use serde_json::json;

use crate::domain::{RunId, StepOutcome};
use crate::policy::StepPolicy;
use crate::ports::{Orchestrator, OrchestratorError, StartOutcome};

/// Runs executions of the run state machine (`infra/statemachine/run.asl.json`).
/// The execution's name is the run id, so a retried start cannot make a
/// second execution.
pub struct StepFunctionsOrchestrator {
    client: aws_sdk_sfn::Client,
    state_machine_arn: String,
    /// What the state machine was generated from (its execution timeout).
    policy: StepPolicy,
}

impl StepFunctionsOrchestrator {
    /// Executions of a state machine generated from the default policy.
    pub fn new(config: &aws_config::SdkConfig, state_machine_arn: impl Into<String>) -> Self {
        Self::for_policy(config, state_machine_arn, StepPolicy::default())
    }

    /// Executions of a state machine generated from `policy`.
    pub fn for_policy(
        config: &aws_config::SdkConfig,
        state_machine_arn: impl Into<String>,
        policy: StepPolicy,
    ) -> Self {
        Self {
            client: aws_sdk_sfn::Client::new(config),
            state_machine_arn: state_machine_arn.into(),
            policy,
        }
    }

    /// Whether the run's existing execution is still going.
    async fn existing_execution(&self, run: RunId) -> Result<StartOutcome, OrchestratorError> {
        let described = self
            .client
            .describe_execution()
            .execution_arn(self.execution_arn(run))
            .send()
            .await
            .map_err(|error| {
                OrchestratorError(format!(
                    "cannot describe the execution: {}",
                    aws_sdk_sfn::error::DisplayErrorContext(&error)
                ))
            })?;
        Ok(match described.status() {
            ExecutionStatus::Running | ExecutionStatus::PendingRedrive => {
                StartOutcome::AlreadyStarted
            }
            _ => StartOutcome::Ended,
        })
    }

    /// `arn:…:stateMachine:NAME` → `arn:…:execution:NAME:RUN`.
    pub fn execution_arn(&self, run: RunId) -> String {
        format!(
            "{}:{run}",
            self.state_machine_arn
                .replacen(":stateMachine:", ":execution:", 1)
        )
    }
}

#[async_trait]
impl Orchestrator for StepFunctionsOrchestrator {
    async fn start(&self, run: RunId) -> Result<StartOutcome, OrchestratorError> {
        let input = json!({"run_id": run, "step_no": 1}).to_string();
        match self
            .client
            .start_execution()
            .state_machine_arn(&self.state_machine_arn)
            .name(run.to_string())
            .input(input)
            .send()
            .await
        {
            Ok(_) => Ok(StartOutcome::Started),
            // The name is taken: an execution for this run exists, or existed.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_execution_already_exists()) =>
            {
                self.existing_execution(run).await
            }
            Err(error) => Err(OrchestratorError(format!(
                "cannot start the execution: {}",
                aws_sdk_sfn::error::DisplayErrorContext(&error)
            ))),
        }
    }

    fn max_run_timeout(&self) -> Option<std::time::Duration> {
        Some(self.policy.max_run_timeout())
    }

    async fn resume(
        &self,
        run: RunId,
        step_no: i32,
        wait_token: Option<&str>,
    ) -> Result<(), OrchestratorError> {
        let Some(token) = wait_token else {
            // The worker keeping the wait's token sees the answers and
            // answers the task itself.
            return Ok(());
        };
        answer_wait(&self.client, token, run, step_no).await
    }

    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError> {
        match self
            .client
            .stop_execution()
            .execution_arn(self.execution_arn(run))
            .cause("the run was stopped")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_execution_does_not_exist()) =>
            {
                Ok(())
            }
            Err(error) => Err(OrchestratorError(format!(
                "cannot stop the execution: {}",
                aws_sdk_sfn::error::DisplayErrorContext(&error)
            ))),
        }
    }
}

/// Answers a `Wait for input` task: the run goes on at `step_no`. A task
/// already answered or gone (timed out, its execution stopped) is left be.
pub async fn answer_wait(
    client: &aws_sdk_sfn::Client,
    token: &str,
    run: RunId,
    step_no: i32,
) -> Result<(), OrchestratorError> {
    let output = serde_json::to_string(&StepOutcome::next_step(run, step_no)).unwrap_or_default();
    match client
        .send_task_success()
        .task_token(token)
        .output(output)
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(error)
            if error.as_service_error().is_some_and(|e| {
                e.is_invalid_token() || e.is_task_does_not_exist() || e.is_task_timed_out()
            }) =>
        {
            tracing::info!(run_id = %run, "the run's wait had already ended");
            Ok(())
        }
        Err(error) => Err(OrchestratorError(format!(
            "cannot resume the execution: {}",
            aws_sdk_sfn::error::DisplayErrorContext(&error)
        ))),
    }
}
