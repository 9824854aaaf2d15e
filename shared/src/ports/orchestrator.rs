//! Starts and stops the stepping of runs (an in-process driver when embedded,
//! Step Functions in AWS).

use async_trait::async_trait;

use crate::domain::RunId;

#[derive(Debug, thiserror::Error)]
#[error("orchestrator unavailable: {0}")]
pub struct OrchestratorError(pub String);

#[async_trait]
pub trait Orchestrator: Send + Sync {
    /// Begins driving a created run; starting one already started is a no-op.
    async fn start(&self, run: RunId) -> Result<(), OrchestratorError>;

    /// Stops driving a run whose terminal state is already recorded.
    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError>;
}
