//! The engine: one agent step (DESIGN §5) and the settlement of a run. The
//! same code runs in-process, in the step Lambda and in tests.

mod circuit;
mod context;
mod error;
mod output;
mod step;
mod summary;
mod tools;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use circuit::{CircuitSettings, Circuits, Gate};
pub use context::{build_prompt, Prompt};
pub use error::StepError;
pub use output::check_output;
pub use output::OutputSchemas;
pub use step::RunMemory;
pub use tools::{sign, ToolRunner};

use crate::domain::{Run, RunId, RunStatus, StopReason, Terminal};
use crate::ledger::Ledger;
use crate::metrics::{Metrics, COST, RUNS_ENDED, RUNS_STARTED};
use crate::ports::{EventFeed, HotStore, LlmClients};

/// Everything one step needs; built once per process and shared.
#[derive(Clone)]
pub struct Engine {
    pub ledger: Ledger,
    pub llm: LlmClients,
    pub hot: Arc<dyn HotStore>,
    pub feed: Arc<dyn EventFeed>,
    pub tools: ToolRunner,
    pub schemas: OutputSchemas,
    /// The LLM circuit breakers of this process.
    pub circuits: Circuits,
    /// This process's metrics.
    pub metrics: Metrics,
}

impl Engine {
    /// Ends a run for `terminal` unless it has ended already (first writer
    /// wins), tells stream readers, and releases the run's hot state.
    pub async fn finalize(&self, run: RunId, terminal: Terminal) -> Result<Option<Run>, StepError> {
        let settled = self.ledger.settle_run(run, &terminal).await?;
        if let Some(settled) = &settled {
            self.count_run_end(run, settled.stop_reason, settled.run_fee_micros)
                .await;
            self.feed.publish(run, settled.last_seq).await;
            tracing::info!(run_id = %run, status = %settled.status, stop_reason = %terminal.reason, "run ended");
            // The last committed step's reservation: its next step would
            // have settled it.
            let last = settled.next_step - 1;
            if last >= 1 {
                if let Ok(Some(tokens)) = self.ledger.step_tokens(run, last).await {
                    self.settle_last(run, last, tokens.max(0) as u64).await;
                }
            }
        }
        if let Err(error) = self.hot.release_run(run).await {
            // The run's outcome is durable; a leftover flag only costs space.
            tracing::warn!(run_id = %run, %error, "could not release hot state");
        }
        Ok(settled)
    }
}

impl Engine {
    /// Counts a run this process started.
    pub(crate) fn count_run_start(&self) {
        self.metrics.count(RUNS_STARTED, &[], 1);
    }

    /// Counts a run this process ended, and what it cost (read back from
    /// its usage, so the count is in before a Lambda flushes its metrics).
    pub(crate) async fn count_run_end(&self, id: RunId, reason: Option<StopReason>, fee: i64) {
        let status = reason.map_or(RunStatus::Failed, StopReason::status);
        let reason = reason.map_or("none", StopReason::as_str);
        self.metrics.count(
            RUNS_ENDED,
            &[("status", status.as_str()), ("stop_reason", reason)],
            1,
        );
        match self.ledger.run_usage(id).await {
            Ok(usage) => {
                let exact = usage.iter().map(|u| u.cost_exact).sum();
                let tokens = crate::domain::team::exact_to_micros(exact);
                self.metrics.count(COST, &[], (fee + tokens).max(0) as u64);
            }
            Err(error) => tracing::warn!(run_id = %id, %error, "the run's cost is not counted"),
        }
    }
}

/// First wait, and longest, between tries of a write the store could not
/// take (`persist`).
const PERSIST_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Runs a ledger or hot-store write again while the store cannot be
/// reached, with a capped exponential backoff, until `deadline`: what the
/// step holds in memory (the model's answer, a tool's result) is kept
/// through a database blip instead of being lost with the attempt, so the
/// step repeats no LLM call and no tool call.
pub(crate) async fn persist<T, E, F, Fut>(
    what: &str,
    deadline: Instant,
    mut write: F,
) -> Result<T, StepError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<StepError>,
{
    let mut attempt = 0;
    loop {
        let error: StepError = match write().await {
            Ok(value) => return Ok(value),
            Err(error) => error.into(),
        };
        attempt += 1;
        let wait = crate::policy::full_jitter(PERSIST_BACKOFF.0, PERSIST_BACKOFF.1, attempt)
            .max(PERSIST_BACKOFF.0);
        if !matches!(error, StepError::Store(_)) || Instant::now() + wait >= deadline {
            return Err(error);
        }
        if attempt == 1 {
            tracing::warn!(what, %error, "the store cannot be reached; keeping the step's work and trying again");
        }
        tokio::time::sleep(wait).await;
    }
}

/// Releases what `hot` holds for runs that are over in the ledger (or
/// were never created, `orphan_grace` after their slot was taken).
pub async fn release_finished(
    hot: &dyn HotStore,
    ledger: &Ledger,
    orphan_grace: std::time::Duration,
) -> Result<usize, StepError> {
    let holders = hot.slot_holders().await?;
    let ids: Vec<RunId> = holders.iter().map(|holder| holder.run).collect();
    let statuses = ledger.run_statuses(&ids).await?;
    let mut released = 0;
    for holder in holders {
        let stale = match statuses.get(&holder.run) {
            Some(status) => status.is_terminal(),
            None => {
                (chrono::Utc::now() - holder.since)
                    .to_std()
                    .unwrap_or_default()
                    > orphan_grace
            }
        };
        if stale {
            hot.release_run(holder.run).await?;
            released += 1;
        }
    }
    Ok(released)
}

/// A slot whose run is not in the ledger this long after it was taken
/// belongs to a request that died before creating the run.
pub const ORPHAN_SLOT_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

impl Engine {
    /// Releases the hot state of runs that are over in the ledger (or were
    /// never created) but still hold a concurrent-run slot — left by a
    /// crash between the ledger write and the release. Returns how many.
    pub async fn reconcile(&self, orphan_grace: std::time::Duration) -> Result<usize, StepError> {
        let released = release_finished(self.hot.as_ref(), &self.ledger, orphan_grace).await?;
        if released > 0 {
            tracing::info!(released, "released hot state of finished runs");
        }
        Ok(released)
    }
}
