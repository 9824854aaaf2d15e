//! Run events, as streamed over SSE (DESIGN §7).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use serde_json::json;

use super::{Run, RunId, RunStatus};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum EventType {
    #[serde(rename = "run.queued")]
    RunQueued,
    #[serde(rename = "run.started")]
    RunStarted,
    #[serde(rename = "step.started")]
    StepStarted,
    #[serde(rename = "llm.completed")]
    LlmCompleted,
    #[serde(rename = "llm.circuit_open")]
    LlmCircuitOpen,
    #[serde(rename = "context.summarized")]
    ContextSummarized,
    #[serde(rename = "tool.started")]
    ToolStarted,
    #[serde(rename = "tool.completed")]
    ToolCompleted,
    #[serde(rename = "handoff")]
    Handoff,
    #[serde(rename = "output.invalid")]
    OutputInvalid,
    #[serde(rename = "step.completed")]
    StepCompleted,
    #[serde(rename = "approval.requested")]
    ApprovalRequested,
    #[serde(rename = "approval.answered")]
    ApprovalAnswered,
    #[serde(rename = "run.resumed")]
    RunResumed,
    #[serde(rename = "run.succeeded")]
    RunSucceeded,
    #[serde(rename = "run.failed")]
    RunFailed,
    #[serde(rename = "run.cancelled")]
    RunCancelled,
    #[serde(rename = "run.timed_out")]
    RunTimedOut,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::RunQueued => "run.queued",
            EventType::RunStarted => "run.started",
            EventType::StepStarted => "step.started",
            EventType::LlmCompleted => "llm.completed",
            EventType::LlmCircuitOpen => "llm.circuit_open",
            EventType::ContextSummarized => "context.summarized",
            EventType::ToolStarted => "tool.started",
            EventType::ToolCompleted => "tool.completed",
            EventType::Handoff => "handoff",
            EventType::OutputInvalid => "output.invalid",
            EventType::StepCompleted => "step.completed",
            EventType::ApprovalRequested => "approval.requested",
            EventType::ApprovalAnswered => "approval.answered",
            EventType::RunResumed => "run.resumed",
            EventType::RunSucceeded => "run.succeeded",
            EventType::RunFailed => "run.failed",
            EventType::RunCancelled => "run.cancelled",
            EventType::RunTimedOut => "run.timed_out",
        }
    }

    /// The event that closes a run ending in `status`.
    pub fn terminal_for(status: RunStatus) -> Option<EventType> {
        match status {
            RunStatus::Succeeded => Some(EventType::RunSucceeded),
            RunStatus::Failed => Some(EventType::RunFailed),
            RunStatus::Cancelled => Some(EventType::RunCancelled),
            RunStatus::TimedOut => Some(EventType::RunTimedOut),
            RunStatus::Queued | RunStatus::Running | RunStatus::Waiting => None,
        }
    }
}

/// Whether an event type name (as stored) ends a stream.
pub fn is_terminal_event(type_name: &str) -> bool {
    matches!(
        type_name,
        "run.succeeded" | "run.failed" | "run.cancelled" | "run.timed_out"
    )
}

/// An event about to be appended; the ledger gives it its `seq`.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub kind: EventType,
    pub step_no: Option<i32>,
    pub data: Value,
}

impl NewEvent {
    pub fn new(kind: EventType, step_no: Option<i32>, data: Value) -> Self {
        Self {
            kind,
            step_no,
            data,
        }
    }
}

/// An event as stored and streamed.
#[derive(Clone, Debug, Serialize)]
pub struct RunEvent {
    pub run_id: RunId,
    pub seq: i64,
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_no: Option<i32>,
    pub data: Value,
    pub created_at: DateTime<Utc>,
}

impl RunEvent {
    pub fn is_terminal(&self) -> bool {
        is_terminal_event(&self.kind)
    }
}

/// The closing event of a run in a terminal status.
pub fn terminal_event(run: &Run, step_no: Option<i32>) -> NewEvent {
    let kind = EventType::terminal_for(run.status).unwrap_or(EventType::RunFailed);
    let mut data = json!({
        "status": run.status,
        "stop_reason": run.stop_reason,
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "total_tokens": run.input_tokens + run.output_tokens,
            "llm_calls": run.llm_calls,
        },
    });
    if let Some(detail) = &run.stop_detail {
        data["detail"] = json!(detail);
    }
    if run.wound_down {
        data["wound_down"] = json!(true);
    }
    if let Some(output) = &run.output {
        data["output"] = output.clone();
    }
    if run.status != RunStatus::Succeeded {
        if let Some(raw) = &run.raw_output {
            data["raw_output"] = json!(raw);
        }
    }
    NewEvent::new(kind, step_no, data)
}

/// The SSE event name of text deltas.
pub const LLM_DELTA: &str = "llm.delta";

/// A piece of the text a model is writing, sent to stream subscribers while
/// it writes (`llm.delta`). Ephemeral: no seq, never in the ledger, never
/// replayed; the step's `llm.completed` and the stored turn are the record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextDelta {
    pub run_id: RunId,
    pub step_no: i32,
    /// Where `text` starts in the turn's text, in characters. A call the
    /// provider client tries again writes its text from 0 again.
    pub offset: usize,
    pub text: String,
}
