//! Starts and stops the stepping of runs (an in-process driver when embedded,
//! Step Functions in AWS).

use async_trait::async_trait;

use crate::domain::RunId;

#[derive(Debug, thiserror::Error)]
#[error("orchestrator unavailable: {0}")]
pub struct OrchestratorError(pub String);

/// What asking to start a run found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartOutcome {
    /// Nothing drove the run; now something does.
    Started,
    /// Something already drives it (a driver, or a running execution).
    AlreadyStarted,
    /// Its execution already ended: nothing will ever drive it again.
    Ended,
}

#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Begins driving a created run. Idempotent: a run already driven is
    /// `AlreadyStarted`, never a second driver or execution.
    async fn start(&self, run: RunId) -> Result<StartOutcome, OrchestratorError>;

    /// Stops driving a run whose terminal state is already recorded.
    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError>;

    /// Goes on with a run parked for approval at `step_no` whose requests
    /// are all answered: wakes its driver, or answers the state machine's
    /// `Wait for input` task (`wait_token`; without one, the worker that
    /// keeps it answers).
    async fn resume(
        &self,
        run: RunId,
        step_no: i32,
        wait_token: Option<&str>,
    ) -> Result<(), OrchestratorError> {
        let _ = (step_no, wait_token);
        Err(OrchestratorError(format!(
            "this process cannot resume run {run}"
        )))
    }

    /// The longest `limits.timeout_seconds` it can honour, when it has a
    /// limit of its own (a state machine's execution timeout).
    fn max_run_timeout(&self) -> Option<std::time::Duration> {
        None
    }

    /// How long the step waiting longest to execute has waited, when this
    /// orchestrator queues steps itself (on AWS the step queue's
    /// `ApproximateAgeOfOldestMessage` tells it).
    fn oldest_queued_step(&self) -> Option<std::time::Duration> {
        None
    }
}
