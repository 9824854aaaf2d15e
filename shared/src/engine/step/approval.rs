//! Calls that wait for a person's yes. A turn with such calls is kept, the
//! run parks (`waiting`: requests, events, its slot given back) and its
//! driver stops. Once every request is answered, the same step runs again:
//! it takes a slot (or waits in line for one), reuses the kept turn, and
//! makes the approved calls — with the person's arguments when given — and
//! tells the model of the refused ones.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use uuid::Uuid;

use super::guards::{timed_out, Ready};
use super::turn::Turn;
use crate::domain::{
    Approval, ApprovalKind, ApprovalStatus, EventType, NewEvent, Run, StepNext, StepOutcome,
    StopReason, Terminal, ToolCall,
};
use crate::engine::{persist, Engine, StepError};
use crate::ledger::{AgentVersion, ApprovalRequest};

/// The turn's calls that need approval, with what they are.
pub(super) fn calls_needing_approval(
    agent: &AgentVersion,
    calls: &[ToolCall],
) -> Vec<(usize, ApprovalKind)> {
    calls
        .iter()
        .enumerate()
        .filter_map(|(index, call)| {
            if agent.spec.handoff_target(&call.function.name).is_some() {
                agent
                    .spec
                    .handoffs_require_approval
                    .then_some((index, ApprovalKind::Handoff))
            } else {
                agent
                    .spec
                    .tool(&call.function.name)
                    .filter(|tool| tool.needs_approval(&call.function.arguments))
                    .map(|_| (index, ApprovalKind::Tool))
            }
        })
        .collect()
}

/// What a person's answer makes of a call.
pub(super) enum Decision<'a> {
    /// Made, with these arguments (raw JSON text).
    Approved { arguments: String },
    /// Not made; the model reads this.
    Refused(&'a Approval),
}

/// The answer to call `index`, if it waited for one.
pub(super) fn decision<'a>(
    approvals: &'a [Approval],
    index: usize,
    call: &ToolCall,
) -> Option<Decision<'a>> {
    let approval = approvals.iter().find(|a| a.call_index == index as i32)?;
    Some(match approval.status {
        ApprovalStatus::Approved => Decision::Approved {
            arguments: approval
                .approved_arguments
                .as_ref()
                .map_or_else(|| call.function.arguments.clone(), Value::to_string),
        },
        ApprovalStatus::Rejected | ApprovalStatus::Pending => Decision::Refused(approval),
    })
}

/// What the model is told of a refused call.
pub(super) fn refusal(approval: &Approval) -> Value {
    let mut refused = json!({
        "error": format!("a person refused this {}", approval.kind.as_str()),
        "code": "approval_rejected",
    });
    if let Some(comment) = &approval.comment {
        refused["comment"] = json!(comment);
    }
    refused
}

/// Seconds until a wait must end: its requests' expiry or the run's
/// deadline, the earlier, rounded up (a wait that ends early is only
/// asked again); at least one.
fn wait_seconds(run: &Run, expires_at: DateTime<Utc>) -> u64 {
    let until = run.deadline.map_or(expires_at, |at| at.min(expires_at));
    let millis = (until - Utc::now()).num_milliseconds();
    (millis.max(0) as u64).div_ceil(1000).max(1)
}

/// The wait for the step's open requests, if any is still open.
pub(super) fn still_waiting(
    run: &Run,
    step_no: i32,
    approvals: &[Approval],
) -> Option<StepOutcome> {
    open_until(approvals)
        .map(|expires_at| StepOutcome::wait(run.id, step_no, wait_seconds(run, expires_at)))
}

/// When the first of the open requests expires, if any is open.
fn open_until(approvals: &[Approval]) -> Option<DateTime<Utc>> {
    approvals
        .iter()
        .filter(|a| a.status == ApprovalStatus::Pending)
        .map(|a| a.expires_at)
        .min()
}

/// How a wait that ran out ends the run: its deadline, when that came
/// first, or `approval_timeout`.
fn expired_wait(run: &Run) -> Terminal {
    timed_out(run).unwrap_or_else(|| {
        Terminal::new(
            StopReason::ApprovalTimeout,
            "no answer to the run's approval requests came in time",
        )
    })
}

/// What a waiting run's step comes to.
pub(super) enum Waiting {
    /// Still waiting, or queued for a slot, or ended now.
    Outcome(StepOutcome),
    /// Answered and holding a slot: the step goes on.
    Resumed(Box<Run>),
}

impl Engine {
    /// Parks the run for the turn's calls that need approval.
    pub(super) async fn park(
        &self,
        ready: &Ready,
        turn: &Turn,
        needed: &[(usize, ApprovalKind)],
    ) -> Result<StepOutcome, StepError> {
        let (run, step_no) = (&ready.run, ready.step_no);
        let expires_at = Utc::now()
            + chrono::Duration::seconds(i64::from(ready.agent.spec.approval_timeout_seconds));
        let requests: Vec<ApprovalRequest> = needed
            .iter()
            .map(|&(index, kind)| {
                let call = &turn.calls[index];
                let name = match kind {
                    ApprovalKind::Handoff => ready
                        .agent
                        .spec
                        .handoff_target(&call.function.name)
                        .map_or_else(|| call.function.name.clone(), |a| a.as_str().to_owned()),
                    ApprovalKind::Tool => call.function.name.clone(),
                };
                ApprovalRequest {
                    request_id: Uuid::new_v4(),
                    call_index: index as i32,
                    kind,
                    name,
                    arguments: serde_json::from_str(&call.function.arguments)
                        .unwrap_or_else(|_| json!(call.function.arguments)),
                }
            })
            .collect();
        let events: Vec<NewEvent> = requests
            .iter()
            .map(|request| {
                NewEvent::new(
                    EventType::ApprovalRequested,
                    Some(step_no),
                    json!({
                        "request_id": request.request_id,
                        "call_index": request.call_index,
                        "kind": request.kind,
                        "name": request.name,
                        "arguments": request.arguments,
                        "expires_at": expires_at,
                    }),
                )
            })
            .collect();
        let parked = persist("the approval requests", ready.deadline, || {
            self.ledger
                .park_for_approval(run.id, step_no, &requests, expires_at, &events)
        })
        .await?;
        let Some(last_seq) = parked else {
            return self.current_outcome(run.id, step_no).await;
        };
        self.feed.publish(run.id, last_seq).await;
        // The turn's tokens count now: its reservation goes with the slot.
        let tokens = (turn.turn.input_tokens + turn.turn.output_tokens).max(0) as u64;
        self.settle_last(run.id, step_no, tokens).await;
        self.release(run.id).await;
        tracing::info!(requests = requests.len(), "the run waits for approval");
        Ok(StepOutcome::wait(
            run.id,
            step_no,
            wait_seconds(run, expires_at),
        ))
    }

    /// A waiting run's step: still waiting (or run out), queued for a
    /// slot, or resumed.
    pub(super) async fn step_of_waiting(
        &self,
        run: Run,
        step_no: i32,
    ) -> Result<Waiting, StepError> {
        let approvals = self.ledger.step_approvals(run.id, step_no).await?;
        if let Some(expires_at) = open_until(&approvals) {
            if Utc::now() >= expires_at || timed_out(&run).is_some() {
                let outcome = self.stop(&run, expired_wait(&run)).await?;
                return Ok(Waiting::Outcome(outcome));
            }
            return Ok(Waiting::Outcome(StepOutcome::wait(
                run.id,
                step_no,
                wait_seconds(&run, expires_at),
            )));
        }
        if let Some(timeout) = timed_out(&run) {
            return Ok(Waiting::Outcome(self.stop(&run, timeout).await?));
        }
        let limit = self
            .ledger
            .admission_terms(run.team_id, &run.agent)
            .await?
            .map_or(0, |terms| terms.limits.max_concurrent_runs.max(0) as u32);
        if !self
            .hot
            .acquire_run_slot(run.team_id, run.id, limit)
            .await?
        {
            return Ok(Waiting::Outcome(StepOutcome::queued(run.id, step_no)));
        }
        match self.ledger.resume_from_wait(run.id, step_no).await? {
            Some(resumed) => {
                self.feed.publish(run.id, resumed.last_seq).await;
                tracing::info!("the run's approvals are answered; it goes on");
                Ok(Waiting::Resumed(Box::new(resumed)))
            }
            None => {
                // Ended meanwhile (a cancel): the slot just taken goes back.
                let outcome = self.current_outcome(run.id, step_no).await?;
                if outcome.next == StepNext::Finish {
                    self.release(run.id).await;
                }
                Ok(Waiting::Outcome(outcome))
            }
        }
    }
}
