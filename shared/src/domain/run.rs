//! Runs, their statuses, stop reasons and step outcomes (DESIGN §4).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{RunId, RunLimits, TeamId, ThreadId};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Queued,
    Running,
    /// Parked until a person answers its approval requests; it holds no
    /// concurrent-run slot and nothing executes it meanwhile.
    Waiting,
    Succeeded,
    Failed,
    Cancelled,
    TimedOut,
}

impl RunStatus {
    pub const ALL: [RunStatus; 7] = [
        RunStatus::Queued,
        RunStatus::Running,
        RunStatus::Waiting,
        RunStatus::Succeeded,
        RunStatus::Failed,
        RunStatus::Cancelled,
        RunStatus::TimedOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Waiting => "waiting",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::TimedOut => "timed_out",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            RunStatus::Queued | RunStatus::Running | RunStatus::Waiting
        )
    }
}

impl FromStr for RunStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RunStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown run status {s:?}"))
    }
}

impl fmt::Display for RunStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a run ended (contract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Completed,
    MaxSteps,
    RunTokenBudget,
    TeamTokenBudget,
    HandoffDepth,
    Timeout,
    Cancelled,
    OutputInvalid,
    LlmUnavailable,
    ToolFailed,
    /// Its approval requests were not answered within the agent's
    /// `approval_timeout_seconds`.
    ApprovalTimeout,
    Internal,
}

impl StopReason {
    pub const ALL: [StopReason; 12] = [
        StopReason::Completed,
        StopReason::MaxSteps,
        StopReason::RunTokenBudget,
        StopReason::TeamTokenBudget,
        StopReason::HandoffDepth,
        StopReason::Timeout,
        StopReason::Cancelled,
        StopReason::OutputInvalid,
        StopReason::LlmUnavailable,
        StopReason::ToolFailed,
        StopReason::ApprovalTimeout,
        StopReason::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::Completed => "completed",
            StopReason::MaxSteps => "max_steps",
            StopReason::RunTokenBudget => "run_token_budget",
            StopReason::TeamTokenBudget => "team_token_budget",
            StopReason::HandoffDepth => "handoff_depth",
            StopReason::Timeout => "timeout",
            StopReason::Cancelled => "cancelled",
            StopReason::OutputInvalid => "output_invalid",
            StopReason::LlmUnavailable => "llm_unavailable",
            StopReason::ToolFailed => "tool_failed",
            StopReason::ApprovalTimeout => "approval_timeout",
            StopReason::Internal => "internal",
        }
    }

    /// The terminal status a run ends in for this reason.
    pub fn status(self) -> RunStatus {
        match self {
            StopReason::Completed => RunStatus::Succeeded,
            StopReason::Cancelled | StopReason::ApprovalTimeout => RunStatus::Cancelled,
            StopReason::Timeout => RunStatus::TimedOut,
            _ => RunStatus::Failed,
        }
    }
}

impl FromStr for StopReason {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StopReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| format!("unknown stop reason {s:?}"))
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a run ends: written once, by whoever gets there first.
#[derive(Clone, Debug, PartialEq)]
pub struct Terminal {
    pub reason: StopReason,
    pub detail: Option<String>,
    pub output: Option<Value>,
    pub raw_output: Option<String>,
}

impl Terminal {
    pub fn new(reason: StopReason, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: Some(detail.into()),
            output: None,
            raw_output: None,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub id: RunId,
    pub team_id: TeamId,
    pub agent: String,
    pub version: i32,
    pub active_agent: String,
    pub active_version: i32,
    pub status: RunStatus,
    pub stop_reason: Option<StopReason>,
    pub stop_detail: Option<String>,
    pub input: Value,
    pub output: Option<Value>,
    pub raw_output: Option<String>,
    pub metadata: Value,
    pub limits: RunLimits,
    pub next_step: i32,
    pub handoff_depth: i32,
    pub repairs_used: i32,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: i32,
    pub last_seq: i64,
    /// The plan's fee for this run, fixed at acceptance (micro-units).
    pub run_fee_micros: i64,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub deadline: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Where the run's end is announced, if anywhere.
    pub webhook_url: Option<String>,
    /// It ended with its agent's final turn without tools (wind-down).
    pub wound_down: bool,
    /// The conversation it belongs to (its own id when it began one).
    pub thread_id: ThreadId,
    /// The run it continues, whose messages begin its own.
    pub previous_run_id: Option<RunId>,
}

impl Run {
    pub fn tokens_used(&self) -> u64 {
        (self.input_tokens + self.output_tokens).max(0) as u64
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepNext {
    Step,
    Finish,
    /// The run waits for answers to its approval requests (at most
    /// `wait_seconds`); the same step goes on once they are in.
    Wait,
    /// Its approvals are answered, but the team has no free concurrent-run
    /// slot: the same step is tried again in a moment.
    Queued,
}

/// What a step hands back to the orchestrator (contract; small on purpose:
/// conversation state stays in the ledger).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepOutcome {
    pub run_id: RunId,
    /// The step to run next (or that would run next, when finished).
    pub step_no: i32,
    pub next: StepNext,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<RunStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    /// With `Wait`: how long the wait may last (the state machine's timeout
    /// for its `Wait for input` state).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_seconds: Option<u64>,
}

impl StepOutcome {
    pub fn next_step(run_id: RunId, step_no: i32) -> Self {
        Self {
            run_id,
            step_no,
            next: StepNext::Step,
            status: None,
            stop_reason: None,
            wait_seconds: None,
        }
    }

    /// The run waits at `step_no` for at most `wait_seconds`.
    pub fn wait(run_id: RunId, step_no: i32, wait_seconds: u64) -> Self {
        Self {
            next: StepNext::Wait,
            wait_seconds: Some(wait_seconds),
            ..Self::next_step(run_id, step_no)
        }
    }

    /// The run's step `step_no` waits for a concurrent-run slot.
    pub fn queued(run_id: RunId, step_no: i32) -> Self {
        Self {
            next: StepNext::Queued,
            ..Self::next_step(run_id, step_no)
        }
    }

    pub fn finished(run: &Run) -> Self {
        Self {
            run_id: run.id,
            step_no: run.next_step,
            next: StepNext::Finish,
            status: Some(run.status),
            stop_reason: run.stop_reason,
            wait_seconds: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for reason in StopReason::ALL {
            assert_eq!(reason.as_str().parse::<StopReason>().unwrap(), reason);
            let json = serde_json::to_value(reason).unwrap();
            assert_eq!(json, reason.as_str());
        }
        for status in RunStatus::ALL {
            assert_eq!(status.as_str().parse::<RunStatus>().unwrap(), status);
        }
    }

    #[test]
    fn stop_reasons_map_to_terminal_statuses() {
        assert_eq!(StopReason::Completed.status(), RunStatus::Succeeded);
        assert_eq!(StopReason::Timeout.status(), RunStatus::TimedOut);
        assert_eq!(StopReason::Cancelled.status(), RunStatus::Cancelled);
        assert_eq!(StopReason::MaxSteps.status(), RunStatus::Failed);
        assert!(StopReason::ALL.iter().all(|r| r.status().is_terminal()));
    }
}
