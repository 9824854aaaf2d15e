//! One agent step, in phases: `guards` loads the run and checks every kill
//! switch before any spend, reserves the call's tokens and begins the
//! attempt; `turn` gets the LLM turn (reused from an earlier attempt, or
//! asked and kept); `tools` runs its tool calls; `decide` turns it all into
//! the step's one commit (a handoff, a final answer, a repair prompt or the
//! next step). Safe to run more than once for the same step.

mod approval;
mod decide;
mod deltas;
mod guards;
mod tools;
mod turn;

use tokio::time::Instant;
use tracing::Instrument;

use super::{persist, Engine, StepError};
use crate::domain::{ChatMessage, RunId, StepNext, StepOutcome, StopReason};
use crate::ledger::{CommitResult, StepCommit};
use crate::metrics::{Timer, STEPS_COMMITTED, STEP_SECONDS, TOKENS};

use guards::Opened;
use turn::Taken;

/// What a run's driver keeps between the steps it runs itself, so that a
/// step need not read again what the previous one has just written. The
/// ledger stays the truth: what does not match it is read from it again.
#[derive(Debug, Default)]
pub struct RunMemory {
    /// Whether its holder runs the run's next step itself, right after.
    driver: bool,
    /// The conversation, as the ledger holds it after the last commit.
    messages: Option<Vec<ChatMessage>>,
    /// The step whose first attempt the last commit began (`step.started`).
    begun: Option<i32>,
}

impl RunMemory {
    /// The memory of a driver that runs a run's steps one after the other
    /// (the embedded orchestrator): each commit also begins the next step.
    pub fn for_driver() -> Self {
        Self {
            driver: true,
            ..Self::default()
        }
    }

    /// Whether its holder runs the run's next step right after this one.
    pub fn runs_next(&mut self, yes: bool) {
        self.driver = yes;
    }
}

impl Engine {
    /// Executes step `step_no` of a run. If that step is already committed,
    /// returns the stored outcome without calling the LLM or any tool.
    /// LLM and tool calls stop by `deadline` (the attempt's time budget) or
    /// the run's own deadline, whichever comes first.
    pub async fn execute_step(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
    ) -> Result<StepOutcome, StepError> {
        self.execute_step_with(run_id, step_no, deadline, &mut RunMemory::default())
            .await
    }

    /// The same for a driver that keeps `memory` from one step to the next.
    pub async fn execute_step_with(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
        memory: &mut RunMemory,
    ) -> Result<StepOutcome, StepError> {
        let span =
            tracing::info_span!("step", run_id = %run_id, step_no, team_id = tracing::field::Empty);
        let mut timer = Timer::start(&self.metrics, STEP_SECONDS, &[]);
        let result = self
            .step_phases(run_id, step_no, deadline, memory)
            .instrument(span)
            .await;
        timer.finish(if result.is_ok() { "ok" } else { "error" });
        result
    }

    async fn step_phases(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
        memory: &mut RunMemory,
    ) -> Result<StepOutcome, StepError> {
        let ready = match self.open_step(run_id, step_no, deadline, memory).await? {
            Opened::Finished(outcome) => return Ok(outcome),
            Opened::Ready(ready) => ready,
        };
        let mut turn = match self.take_turn(&ready).await? {
            Taken::Finished(outcome) => return Ok(outcome),
            Taken::Turn(turn) => turn,
        };
        let needed = approval::calls_needing_approval(&ready.agent, &turn.calls);
        if !needed.is_empty() {
            let asked = self.ledger.step_approvals(run_id, step_no).await?;
            if asked.is_empty() {
                *memory = RunMemory {
                    driver: memory.driver,
                    ..RunMemory::default()
                };
                return self.park(&ready, &turn, &needed).await;
            }
            // Another attempt parked the run meanwhile: wait as it does.
            if let Some(waiting) = approval::still_waiting(&ready.run, step_no, &asked) {
                return Ok(waiting);
            }
            turn.approvals = asked;
        }
        let results = self.run_turn_tools(&ready, &turn).await?;
        let mut commit = self.decide(&ready, turn, results).await?;
        // A driver goes on with the next step at once: its first attempt
        // begins with this commit (one statement fewer per step).
        commit.begin_next = memory.driver
            && commit.terminal.is_none()
            && step_no < ready.run.limits.max_steps as i32;
        let committed = persist("the step's commit", ready.deadline, || {
            self.ledger.commit_step(&commit)
        })
        .await?;
        match committed {
            CommitResult::Committed { outcome, last_seq } => {
                self.feed.publish(run_id, last_seq).await;
                self.count_commit(&ready.run, &commit).await;
                let mut messages = ready.history;
                messages.extend(commit.messages);
                memory.messages = Some(messages);
                memory.begun = commit.begin_next.then_some(step_no + 1);
                if commit.terminal.is_some() {
                    let actual = (commit.input_tokens + commit.output_tokens).max(0) as u64;
                    self.settle_last(run_id, step_no, actual).await;
                    self.release(run_id).await;
                }
                tracing::debug!(next = ?outcome.next, "step committed");
                Ok(outcome)
            }
            CommitResult::AlreadyCommitted(outcome) | CommitResult::RunEnded(outcome) => {
                *memory = RunMemory {
                    driver: memory.driver,
                    ..RunMemory::default()
                };
                if outcome.next == StepNext::Finish {
                    self.release(run_id).await;
                }
                Ok(outcome)
            }
        }
    }

    async fn stop(
        &self,
        run: &crate::domain::Run,
        terminal: crate::domain::Terminal,
    ) -> Result<StepOutcome, StepError> {
        self.finalize(run.id, terminal).await?;
        self.current_outcome(run.id, run.next_step).await
    }

    /// The outcome for a step that this call did not commit.
    async fn current_outcome(&self, run_id: RunId, step_no: i32) -> Result<StepOutcome, StepError> {
        if let Some(outcome) = self.ledger.step_outcome(run_id, step_no).await? {
            return Ok(outcome);
        }
        let run = self
            .ledger
            .get_run(run_id)
            .await?
            .ok_or_else(|| StepError::fatal(StopReason::Internal, "run not found"))?;
        if run.status.is_terminal() {
            Ok(StepOutcome::finished(&run))
        } else {
            Err(StepError::Store(format!(
                "step {step_no} could not start: the run is {} at step {}",
                run.status, run.next_step
            )))
        }
    }

    /// Settles the reservation of a run's last step (the next step would
    /// have) before the run's hot state is released.
    pub(crate) async fn settle_last(&self, run_id: RunId, step_no: i32, actual: u64) {
        if let Err(error) = self.hot.settle_tokens(run_id, step_no, actual).await {
            tracing::warn!(%error, "could not settle the last step's tokens");
        }
    }

    /// Counts a committed step, its tokens and, when it ended the run, the end.
    async fn count_commit(&self, run: &crate::domain::Run, commit: &StepCommit) {
        self.metrics.count(STEPS_COMMITTED, &[], 1);
        for (kind, tokens) in [
            ("input", commit.input_tokens),
            ("output", commit.output_tokens),
        ] {
            let model = self.metrics.model_label(&commit.model);
            self.metrics.count(
                TOKENS,
                &[("model", model.as_str()), ("kind", kind)],
                tokens.max(0) as u64,
            );
        }
        if let Some(terminal) = &commit.terminal {
            self.count_run_end(run.id, Some(terminal.reason), run.run_fee_micros)
                .await;
        }
    }

    async fn release(&self, run_id: RunId) {
        if let Err(error) = self.hot.release_run(run_id).await {
            tracing::warn!(%error, "could not release hot state");
        }
    }
}
