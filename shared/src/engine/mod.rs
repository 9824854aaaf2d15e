//! The engine: one agent step (DESIGN §5) and the settlement of a run. The
//! same code runs in-process, in the step Lambda and in tests.

mod context;
mod error;
mod output;
mod step;
mod tools;

use std::sync::Arc;

pub use context::{build_prompt, Prompt};
pub use error::StepError;
pub use output::check_output;
pub use output::OutputSchemas;
pub use tools::ToolRunner;

use crate::domain::{Run, RunId, Terminal};
use crate::ledger::Ledger;
use crate::ports::{EventFeed, HotStore, LlmClient};

/// Everything one step needs; built once per process and shared.
#[derive(Clone)]
pub struct Engine {
    pub ledger: Ledger,
    pub llm: Arc<dyn LlmClient>,
    pub hot: Arc<dyn HotStore>,
    pub feed: Arc<dyn EventFeed>,
    pub tools: ToolRunner,
    pub schemas: OutputSchemas,
}

impl Engine {
    /// Ends a run for `terminal` unless it has ended already (first writer
    /// wins), tells stream readers, and releases the run's hot state.
    pub async fn finalize(&self, run: RunId, terminal: Terminal) -> Result<Option<Run>, StepError> {
        let settled = self.ledger.settle_run(run, &terminal).await?;
        if let Some(settled) = &settled {
            self.feed.publish(run, settled.last_seq).await;
            tracing::info!(run_id = %run, status = %settled.status, stop_reason = %terminal.reason, "run ended");
        }
        if let Err(error) = self.hot.release_run(run).await {
            // The run's outcome is durable; a leftover flag only costs space.
            tracing::warn!(run_id = %run, %error, "could not release hot state");
        }
        Ok(settled)
    }
}

/// A slot whose run is not in the ledger this long after it was taken
/// belongs to a request that died before creating the run.
pub const ORPHAN_SLOT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Releases the hot state of runs that are over in the ledger (or were
    /// never created) but still hold a concurrent-run slot — left by a
    /// crash between the ledger write and the release. Returns how many.
    pub async fn reconcile(&self, orphan_grace: std::time::Duration) -> Result<usize, StepError> {
        let mut released = 0;
        for holder in self.hot.slot_holders().await? {
            let stale = match self.ledger.get_run(holder.run).await? {
                Some(run) => run.status.is_terminal(),
                None => {
                    (chrono::Utc::now() - holder.since)
                        .to_std()
                        .unwrap_or_default()
                        > orphan_grace
                }
            };
            if stale {
                self.hot.release_run(holder.run).await?;
                released += 1;
            }
        }
        if released > 0 {
            tracing::info!(released, "released hot state of finished runs");
        }
        Ok(released)
    }
}
