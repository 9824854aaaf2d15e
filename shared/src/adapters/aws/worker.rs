//! The step worker: one SQS message `{run_id, step_no, task_token}` → one
//! engine step → `SendTaskSuccess` with the small outcome, or
//! `SendTaskFailure` with `Retryable.*` / `Fatal.<stop_reason>`. It
//! heartbeats at receipt (a message whose task already closed is dropped)
//! and while the step runs (a task closed meanwhile stops the step's
//! spending), and keeps the step inside its task's time: LLM and tool calls
//! stop `answer_margin` before the task would time out, counted from when
//! the state machine sent the message. A redelivered message for a
//! committed step re-sends the stored outcome; a stale task token is logged
//! and dropped.

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value;
use tokio::time::Instant;
use tracing::Instrument;

use crate::adapters::aws::sfn::answer_wait;
use crate::domain::{RunId, StepNext, StepOutcome, StopReason, Terminal};
use crate::engine::{Engine, RunMemory, StepError};
use crate::ledger::WaitToken;
use crate::policy::{StepPolicy, LLM_REQUEST_TIMEOUT};

#[derive(Debug, Deserialize)]
struct StepMessage {
    run_id: RunId,
    step_no: i32,
    task_token: String,
    /// From `Wait for input`: keep the token for the approval answers
    /// rather than run the step.
    #[serde(default)]
    wait: bool,
}

/// Why a message should be delivered again (it is kept on the queue).
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("Step Functions unavailable: {0}")]
    Orchestrator(String),
    #[error(transparent)]
    Step(#[from] StepError),
}

pub struct StepWorker {
    engine: Engine,
    sfn: aws_sdk_sfn::Client,
    policy: StepPolicy,
}

/// What a heartbeat learned about the task.
enum Beat {
    Alive,
    /// Answered, timed out, or its execution ended: nobody waits for it.
    Closed,
    /// The token is not (or no longer) known.
    Invalid,
    /// Step Functions did not answer; the step goes on.
    Unknown,
}

/// Tries of the heartbeat at receipt while the token reads as invalid: a
/// token may be registered a moment after its message was sent (the
/// emulator does so), so "invalid" is believed only after about a second.
const RECEIPT_BEAT_TRIES: u32 = 4;

/// How the step went while the worker watched its task.
enum Watched {
    Finished(Result<StepOutcome, StepError>),
    /// The task closed while the step ran; the step was stopped.
    Abandoned,
}

impl StepWorker {
    /// The metrics its steps count (written as EMF after each batch).
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.engine.metrics
    }

    pub fn new(engine: Engine, sfn: aws_sdk_sfn::Client, policy: StepPolicy) -> Self {
        Self {
            engine,
            sfn,
            policy,
        }
    }

    /// Handles one message body, sent by the state machine at `sent_at`
    /// (SQS `SentTimestamp`; unknown means now). `Ok` means the message is
    /// done with (also when it was malformed or its task closed); `Err`
    /// means keep it.
    pub async fn handle(
        &self,
        body: &str,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<(), WorkerError> {
        let message: StepMessage = match serde_json::from_str(body) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, body, "dropping a malformed step message");
                return Ok(());
            }
        };
        let span =
            tracing::info_span!("step_task", run_id = %message.run_id, step_no = message.step_no);
        self.handle_message(message, sent_at).instrument(span).await
    }

    async fn handle_message(
        &self,
        message: StepMessage,
        sent_at: Option<DateTime<Utc>>,
    ) -> Result<(), WorkerError> {
        // The task's clock started when the state machine sent the message.
        let waited = sent_at
            .and_then(|sent| (Utc::now() - sent).to_std().ok())
            .unwrap_or_default();
        let task_started = Instant::now()
            .checked_sub(waited)
            .unwrap_or_else(Instant::now);
        // A wait's task has no heartbeat: its token is kept whatever
        // became of it (a closed task's token is never used).
        if message.wait {
            return self.keep_wait(&message).await;
        }
        if !self.heartbeat_at_receipt(&message.task_token).await {
            tracing::info!(
                ?waited,
                "the step's task closed before the message was handled; dropping it"
            );
            return Ok(());
        }
        let outcome = match self.step_watched(&message, task_started).await {
            Watched::Finished(outcome) => outcome,
            Watched::Abandoned => return Ok(()),
        };
        // The two answers have different error types with the same checks.
        macro_rules! classify {
            ($result:expr) => {
                $result.map(|_| ()).map_err(|e| {
                    let stale = e.as_service_error().is_some_and(|s| {
                        s.is_invalid_token() || s.is_task_does_not_exist() || s.is_task_timed_out()
                    });
                    stale_or_unavailable(
                        stale,
                        aws_sdk_sfn::error::DisplayErrorContext(&e).to_string(),
                    )
                })
            };
        }
        let token = &message.task_token;
        let sent = match &outcome {
            Ok(outcome) => {
                let output = serde_json::to_string(outcome).unwrap_or_default();
                classify!(
                    self.sfn
                        .send_task_success()
                        .task_token(token)
                        .output(output)
                        .send()
                        .await
                )
            }
            Err(error) => classify!(
                self.sfn
                    .send_task_failure()
                    .task_token(token)
                    .error(error.error_name())
                    .cause(error.to_string())
                    .send()
                    .await
            ),
        };
        match sent {
            Ok(()) | Err(Answer::Stale) => Ok(()),
            Err(Answer::Unavailable(detail)) => Err(WorkerError::Orchestrator(detail)),
        }
    }

    /// Keeps a `Wait for input` task's token in the ledger, where the
    /// approval answers find it. When they are all in already (or the run
    /// waits no more), answers the task itself: the next `Step` goes on
    /// from what the ledger says.
    async fn keep_wait(&self, message: &StepMessage) -> Result<(), WorkerError> {
        let kept = self
            .engine
            .ledger
            .keep_wait_token(message.run_id, message.step_no, &message.task_token)
            .await
            .map_err(StepError::from)?;
        if kept == (WaitToken::Kept { answered: false }) {
            tracing::info!("the run waits for approval; its task token is kept");
            return Ok(());
        }
        answer_wait(
            &self.sfn,
            &message.task_token,
            message.run_id,
            message.step_no,
        )
        .await
        .map_err(|e| WorkerError::Orchestrator(e.0))
    }

    /// The first heartbeat; false when the task is already closed.
    async fn heartbeat_at_receipt(&self, token: &str) -> bool {
        for attempt in 1..=RECEIPT_BEAT_TRIES {
            match self.heartbeat(token).await {
                Beat::Alive | Beat::Unknown => return true,
                Beat::Closed => return false,
                Beat::Invalid if attempt < RECEIPT_BEAT_TRIES => {
                    tokio::time::sleep(std::time::Duration::from_millis(150 * u64::from(attempt)))
                        .await;
                }
                Beat::Invalid => return false,
            }
        }
        false
    }

    async fn heartbeat(&self, token: &str) -> Beat {
        match self
            .sfn
            .send_task_heartbeat()
            .task_token(token)
            .send()
            .await
        {
            Ok(_) => Beat::Alive,
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_task_timed_out() || e.is_task_does_not_exist()) =>
            {
                Beat::Closed
            }
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_invalid_token()) =>
            {
                Beat::Invalid
            }
            Err(error) => {
                tracing::warn!(error = %aws_sdk_sfn::error::DisplayErrorContext(&error), "heartbeat failed");
                Beat::Unknown
            }
        }
    }

    /// Runs the step inside its task's time, heartbeating meanwhile; stops
    /// early when the run was cancelled or the task closed.
    async fn step_watched(&self, message: &StepMessage, task_started: Instant) -> Watched {
        let deadline = task_started + self.policy.step_budget();
        // A backstop for what the budget does not bound (a hung query): the
        // answer still goes out before the task times out.
        let cutoff = task_started + self.policy.step_timeout - self.policy.answer_margin / 2;
        let step = tokio::time::timeout_at(
            cutoff,
            self.steps_of_task(message.run_id, message.step_no, deadline),
        );
        tokio::pin!(step);
        let period = self.policy.heartbeat / 3;
        let mut beat = tokio::time::interval_at(Instant::now() + period, period);
        loop {
            tokio::select! {
                result = &mut step => {
                    return Watched::Finished(result.unwrap_or_else(|_| Err(StepError::OutOfTime(format!(
                        "step {} did not finish within its task's {:?}",
                        message.step_no, self.policy.step_timeout
                    )))));
                }
                _ = beat.tick() => {
                    if let Beat::Closed | Beat::Invalid = self.heartbeat(&message.task_token).await {
                        tracing::warn!("the step's task closed while it ran; stopping the step");
                        return Watched::Abandoned;
                    }
                    if let Ok(Some(reason)) = self.engine.hot.cancel_flag(message.run_id).await {
                        return Watched::Finished(Err(StepError::fatal(StopReason::Cancelled, reason)));
                    }
                }
            }
        }
    }
}

impl StepWorker {
    /// The task's step and, up to `steps_per_task`, the run's next ones
    /// while a whole step (an LLM request and the answer) still fits the
    /// task's time; each is committed on its own. The outcome of the last.
    async fn steps_of_task(
        &self,
        run_id: RunId,
        first: i32,
        deadline: Instant,
    ) -> Result<StepOutcome, StepError> {
        let steps = self.policy.steps_per_task.max(1);
        let mut memory = RunMemory::for_driver();
        let mut step_no = first;
        for done in 1..=steps {
            memory.runs_next(done < steps);
            let outcome = self
                .engine
                .execute_step_with(run_id, step_no, deadline, &mut memory)
                .await?;
            let room = deadline.saturating_duration_since(Instant::now())
                >= LLM_REQUEST_TIMEOUT + self.policy.answer_margin;
            if outcome.next != StepNext::Step || done == steps || !room {
                return Ok(outcome);
            }
            step_no = outcome.step_no;
        }
        Err(StepError::fatal(StopReason::Internal, "a task ran no step"))
    }
}

enum Answer {
    /// The task is gone (answered, timed out, or the execution ended).
    Stale,
    Unavailable(String),
}

fn stale_or_unavailable(stale: bool, detail: String) -> Answer {
    if stale {
        tracing::warn!(%detail, "dropping an answer for a stale task token");
        Answer::Stale
    } else {
        Answer::Unavailable(detail)
    }
}

/// Settles a run from the state machine's `Finalize` message: its state
/// (`{run_id, ..., error?: {Error, Cause}}`). Idempotent.
pub async fn finalize_message(engine: &Engine, body: &str) -> Result<(), WorkerError> {
    let state: Value = match serde_json::from_str(body) {
        Ok(state) => state,
        Err(error) => {
            tracing::error!(%error, body, "dropping a malformed finalize message");
            return Ok(());
        }
    };
    let Some(run) = state["run_id"]
        .as_str()
        .and_then(|id| id.parse::<RunId>().ok())
    else {
        tracing::error!(body, "dropping a finalize message without a run id");
        return Ok(());
    };
    let terminal = match state.get("error") {
        Some(error) => terminal_for_error(
            error["Error"].as_str().unwrap_or_default(),
            error["Cause"].as_str().unwrap_or_default(),
        ),
        None => Terminal::new(
            StopReason::Internal,
            "the state machine finished before the run did",
        ),
    };
    engine.finalize(run, terminal).await?;
    Ok(())
}

/// Settles a run whose execution ended outside the state machine's own
/// `Finalize` — timed out, stopped, or failed — from the EventBridge
/// "Step Functions Execution Status Change" event. Other statuses are
/// ignored; settling twice is harmless.
pub async fn finalize_status_change(engine: &Engine, event: &Value) -> Result<(), WorkerError> {
    let detail = &event["detail"];
    let Some(run) = detail["name"]
        .as_str()
        .and_then(|name| name.parse::<RunId>().ok())
    else {
        tracing::error!(%event, "dropping a status change without a run id as execution name");
        return Ok(());
    };
    let terminal = match detail["status"].as_str().unwrap_or_default() {
        "TIMED_OUT" => Terminal::new(StopReason::Timeout, "the run's execution timed out"),
        "ABORTED" => Terminal::new(StopReason::Cancelled, "the run's execution was stopped"),
        "FAILED" => Terminal::new(
            StopReason::Internal,
            format!(
                "the run's execution failed: {}",
                detail["cause"]
                    .as_str()
                    .or(detail["error"].as_str())
                    .unwrap_or("no cause given")
            ),
        ),
        _ => return Ok(()),
    };
    engine.finalize(run, terminal).await?;
    Ok(())
}

/// The terminal state for an error the state machine caught.
fn terminal_for_error(name: &str, cause: &str) -> Terminal {
    let reason = match name.strip_prefix("Fatal.") {
        Some(reason) => reason.parse().unwrap_or(StopReason::Internal),
        None if [
            StepError::LLM_UNAVAILABLE,
            StepError::RATE_LIMITED,
            StepError::CIRCUIT_OPEN,
        ]
        .contains(&name) =>
        {
            StopReason::LlmUnavailable
        }
        None => StopReason::Internal,
    };
    Terminal::new(reason, format!("{name}: {cause}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caught_errors_map_to_stop_reasons() {
        for (name, reason) in [
            ("Fatal.output_invalid", StopReason::OutputInvalid),
            ("Fatal.nonsense", StopReason::Internal),
            ("Retryable.RateLimited", StopReason::LlmUnavailable),
            ("Retryable.Store", StopReason::Internal),
            ("Retryable.StepTimeout", StopReason::Internal),
            ("Retryable.CircuitOpen", StopReason::LlmUnavailable),
            ("States.Timeout", StopReason::Internal),
        ] {
            assert_eq!(terminal_for_error(name, "x").reason, reason, "{name}");
        }
    }
}
