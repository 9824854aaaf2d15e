//! The starter: starts accepted runs that nothing drives — left `queued` by a
//! crash or timeout between the ledger insert and the start, or by an
//! orchestrator that did not answer. It runs every few seconds in the
//! embedded mode and in the scheduled reconciliation in AWS; the same
//! idempotent start serves admission and replays.

use std::time::Duration;

use crate::domain::{RunId, StopReason, Terminal};
use crate::engine::Engine;
use crate::ledger::StoreError;
use crate::ports::{Orchestrator, OrchestratorError, StartOutcome};

/// A run `queued` this long is presumed to have lost its start. Admission
/// starts a run within milliseconds; the margin covers a slow orchestrator.
pub const STARTER_GRACE: Duration = Duration::from_secs(2);

/// Queued runs looked at per pass.
const STARTER_BATCH: i64 = 500;

/// Starts `run` unless something drives it already. A run whose execution
/// already ended can never move again: it is ended `internal` here, which
/// also gives back its slot (settling twice is harmless).
pub async fn ensure_started(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    run: RunId,
) -> Result<StartOutcome, OrchestratorError> {
    let outcome = orchestrator.start(run).await?;
    if outcome == StartOutcome::Ended {
        let terminal = Terminal::new(
            StopReason::Internal,
            "the run's execution ended before the run started",
        );
        if let Err(error) = engine.finalize(run, terminal).await {
            tracing::warn!(run_id = %run, %error, "cannot end a run whose execution ended; will try again");
        }
    }
    Ok(outcome)
}

/// What one pass of the starter did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StarterPass {
    pub started: usize,
    /// Runs the orchestrator could not start this time (tried again next pass).
    pub failed: usize,
}

/// Starts every run `queued` for longer than `grace`.
pub async fn start_stale_runs(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    grace: Duration,
) -> Result<StarterPass, StoreError> {
    let mut pass = StarterPass::default();
    for run in engine
        .ledger
        .stale_queued_runs(grace, STARTER_BATCH)
        .await?
    {
        match ensure_started(engine, orchestrator, run).await {
            Ok(StartOutcome::Started) => {
                tracing::warn!(run_id = %run, "started a run whose start was lost");
                pass.started += 1;
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(run_id = %run, %error, "cannot start a queued run; will try again");
                pass.failed += 1;
            }
        }
    }
    Ok(pass)
}
