//! The turn's tool calls, run concurrently (handoffs are decided, not run);
//! those an earlier attempt finished are not made again.

use crate::metrics::TOOL_SECONDS;
use chrono::Utc;
use futures_util::future::join_all;
use serde_json::json;

use super::approval::{decision, refusal, Decision};
use super::guards::Ready;
use super::turn::Turn;
use crate::domain::{Approval, EventType, NewEvent, ToolCall, ToolKind};
use crate::engine::tools::CallRef;
use crate::engine::{persist, Engine, StepError};
use crate::ledger::{AgentVersion, ToolCallRecord};

impl Engine {
    /// Runs the turn's pending calls; an HTTP call's result is kept the
    /// moment it returns, so a retried step never makes it again (built-ins
    /// have no outside effects: they are simply run again and kept with the
    /// step).
    pub(super) async fn run_turn_tools(
        &self,
        ready: &Ready,
        turn: &Turn,
    ) -> Result<Vec<ToolCallRecord>, StepError> {
        let (run_id, step_no, agent) = (ready.run.id, ready.step_no, &ready.agent);
        let done = if turn.reused {
            let done = self.ledger.tool_calls(run_id, step_no).await?;
            let restarts = tool_started_events(agent, step_no, &turn.calls, &done, ready.attempt);
            if !restarts.is_empty() {
                let appended = persist("the restarted tool events", ready.deadline, || {
                    self.ledger.append_run_events(run_id, &restarts)
                })
                .await?;
                if let Some(seq) = appended {
                    self.feed.publish(run_id, seq).await;
                }
            }
            done
        } else {
            Vec::new()
        };
        let pending = pending_calls(agent, &turn.calls, &done);
        let futures = pending.into_iter().map(|(index, call)| async move {
            let call_ref = CallRef {
                run_id,
                step_no,
                call_index: index as i32,
            };
            let spec = agent.spec.tool(&call.function.name);
            let arguments = match decision(&turn.approvals, index, call) {
                Some(Decision::Refused(approval)) => {
                    return Ok(refused_call(call_ref, call, approval));
                }
                Some(Decision::Approved { arguments }) => arguments,
                None => call.function.arguments.clone(),
            };
            let record = match spec {
                Some(spec) => {
                    let started = std::time::Instant::now();
                    let record = self
                        .tools
                        .run(spec, call_ref, &call.id, &arguments, ready.deadline)
                        .await;
                    let kind = match spec.kind {
                        ToolKind::Http { .. } => "http",
                        ToolKind::Builtin { .. } => "builtin",
                    };
                    let outcome = if record.is_error { "error" } else { "ok" };
                    self.metrics.observe(
                        TOOL_SECONDS,
                        &[("kind", kind), ("outcome", outcome)],
                        started.elapsed(),
                    );
                    record
                }
                None => unknown_tool(call_ref, call),
            };
            if spec.is_some_and(|s| matches!(s.kind, ToolKind::Http { .. })) {
                persist("a tool call's result", ready.deadline, || {
                    self.ledger.save_tool_call(run_id, step_no, &record)
                })
                .await?;
            }
            Ok::<_, StepError>(record)
        });
        let mut records = done;
        for result in join_all(futures).await {
            records.push(result?);
        }
        records.sort_by_key(|r| r.call_index);
        Ok(records)
    }
}

/// Tool calls (not handoffs) that have no result yet, with their index.
fn pending_calls<'a>(
    agent: &AgentVersion,
    calls: &'a [ToolCall],
    done: &[ToolCallRecord],
) -> Vec<(usize, &'a ToolCall)> {
    calls
        .iter()
        .enumerate()
        .filter(|(index, call)| {
            agent.spec.handoff_target(&call.function.name).is_none()
                && !done.iter().any(|d| d.call_index == *index as i32)
        })
        .collect()
}

/// `tool.started` for each tool call not finished yet.
pub(super) fn tool_started_events(
    agent: &AgentVersion,
    step_no: i32,
    calls: &[ToolCall],
    done: &[ToolCallRecord],
    attempt: i32,
) -> Vec<NewEvent> {
    pending_calls(agent, calls, done)
        .into_iter()
        .map(|(index, call)| {
            NewEvent::new(
                EventType::ToolStarted,
                Some(step_no),
                json!({"call_index": index, "tool": call.function.name, "attempt": attempt}),
            )
        })
        .collect()
}

/// A call a person refused: not made, and kept with the step (the model
/// reads why).
fn refused_call(call_ref: CallRef, call: &ToolCall, approval: &Approval) -> ToolCallRecord {
    let now = Utc::now();
    ToolCallRecord {
        call_index: call_ref.call_index,
        tool_call_id: call.id.clone(),
        name: call.function.name.clone(),
        arguments: approval.arguments.clone(),
        result: refusal(approval).to_string(),
        is_error: true,
        truncated: false,
        attempts: 0,
        started_at: now,
        finished_at: now,
    }
}

fn unknown_tool(call_ref: CallRef, call: &ToolCall) -> ToolCallRecord {
    let now = Utc::now();
    ToolCallRecord {
        call_index: call_ref.call_index,
        tool_call_id: call.id.clone(),
        name: call.function.name.clone(),
        arguments: serde_json::from_str(&call.function.arguments)
            .unwrap_or_else(|_| json!(call.function.arguments)),
        result: json!({"error": format!("no tool named {:?}", call.function.name)}).to_string(),
        is_error: true,
        truncated: false,
        attempts: 0,
        started_at: now,
        finished_at: now,
    }
}
