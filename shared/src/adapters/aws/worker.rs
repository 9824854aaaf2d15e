//! The step worker: one SQS message `{run_id, step_no, task_token}` → one
//! engine step → `SendTaskSuccess` with the small outcome, or
//! `SendTaskFailure` with `Retryable.*` / `Fatal.<stop_reason>`. Heartbeats
//! while the step runs. A redelivered message for a committed step re-sends
//! the stored outcome; a stale task token is logged and dropped.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tracing::Instrument;

use crate::domain::{RunId, StopReason, Terminal};
use crate::engine::{Engine, StepError};

#[derive(Debug, Deserialize)]
struct StepMessage {
    run_id: RunId,
    step_no: i32,
    task_token: String,
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
    heartbeat: Duration,
}

impl StepWorker {
    pub fn new(engine: Engine, config: &aws_config::SdkConfig, heartbeat: Duration) -> Self {
        Self {
            engine,
            sfn: aws_sdk_sfn::Client::new(config),
            heartbeat,
        }
    }

    /// Handles one message body. `Ok` means the message is done with (also
    /// when it was malformed or its token stale); `Err` means keep it.
    pub async fn handle(&self, body: &str) -> Result<(), WorkerError> {
        let message: StepMessage = match serde_json::from_str(body) {
            Ok(message) => message,
            Err(error) => {
                tracing::error!(%error, body, "dropping a malformed step message");
                return Ok(());
            }
        };
        let span =
            tracing::info_span!("step_task", run_id = %message.run_id, step_no = message.step_no);
        let outcome = self.step_with_heartbeats(&message).instrument(span).await;
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

    /// Runs the step, heartbeating meanwhile; stops early when the run was
    /// cancelled.
    async fn step_with_heartbeats(
        &self,
        message: &StepMessage,
    ) -> Result<crate::domain::StepOutcome, StepError> {
        let step = self.engine.execute_step(message.run_id, message.step_no);
        tokio::pin!(step);
        let mut beat = tokio::time::interval(self.heartbeat / 3);
        beat.tick().await;
        loop {
            tokio::select! {
                result = &mut step => return result,
                _ = beat.tick() => {
                    if let Err(error) = self.sfn.send_task_heartbeat().task_token(&message.task_token).send().await {
                        tracing::warn!(error = %aws_sdk_sfn::error::DisplayErrorContext(&error), "heartbeat failed");
                    }
                    if let Ok(Some(reason)) = self.engine.hot.cancel_flag(message.run_id).await {
                        return Err(StepError::fatal(StopReason::Cancelled, reason));
                    }
                }
            }
        }
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
        None if name == StepError::RETRYABLE_NAMES[0] || name == StepError::RETRYABLE_NAMES[1] => {
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
            ("States.Timeout", StopReason::Internal),
        ] {
            assert_eq!(terminal_for_error(name, "x").reason, reason, "{name}");
        }
    }
}
