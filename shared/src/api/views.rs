//! Typed response bodies: what the API answers, as structs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::parts::{prefix, TextPart};
use crate::domain::limits::{json_len, MAX_INLINE_OUTPUT_BYTES, MAX_LISTED_RESULT_BYTES};
use crate::domain::{Approval, Run, RunId, RunLimits, RunStatus, StopReason, TeamId, ThreadId};
use crate::ledger::{
    AgentVersion, DeliveryRecord, ModelUsage, RunCharge, StepRecord, Team, UsageTotals,
};

/// A list page: `{"data": [...], "next_cursor"}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Where a run's end is announced (never with its secret).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookView {
    pub url: String,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UsageView {
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub llm_calls: i32,
    /// On `GET /v1/runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_model: Option<Vec<ModelUsage>>,
}

/// What the run costs, on `GET /v1/runs/{id}` (micro-units).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct CostView {
    pub fee_micros: i64,
    pub token_cost_micros: i64,
    pub total_micros: i64,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RunLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub steps: String,
    pub events: String,
    pub cancel: String,
    pub output: String,
    pub webhooks: String,
    pub approvals: String,
}

/// What a `waiting` run waits for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum WaitingFor {
    /// Answers to its approval requests (`links.approvals`).
    Approval,
}

/// The run as the API shows it. An output too large to show inline (with
/// the raw output, over `MAX_INLINE_OUTPUT_BYTES`) is left out, with its
/// size, and read in parts from the `output` link.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Run)]
pub struct RunView {
    pub id: RunId,
    pub status: RunStatus,
    /// Set while the run is `waiting`.
    pub waiting_for: Option<WaitingFor>,
    pub agent: String,
    pub version: i32,
    pub active_agent: String,
    pub active_version: i32,
    pub stop_reason: Option<StopReason>,
    pub stop_detail: Option<String>,
    /// As it was given: text or any JSON value.
    pub input: Value,
    /// The final answer (JSON when the agent has an output schema), once
    /// the run has succeeded.
    pub output: Option<Value>,
    /// The model's answer as it wrote it.
    pub raw_output: Option<String>,
    /// False when the output and raw output together exceed 1 MiB: both
    /// are null here and read in parts from `links.output`.
    pub output_inline: bool,
    /// Size of the output as JSON.
    pub output_bytes: usize,
    pub raw_output_bytes: usize,
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// Where the run's end is announced (without its secret).
    pub webhook: Option<WebhookView>,
    pub limits: RunLimits,
    pub steps: i32,
    pub handoff_depth: i32,
    /// The run ended with its agent's final turn without tools, at
    /// `max_steps` or its token budget (graceful wind-down).
    pub wound_down: bool,
    /// The conversation the run belongs to (`GET /v1/threads/{id}`); its
    /// own id when it began one.
    pub thread_id: ThreadId,
    /// The run it continues, whose messages begin its prompt.
    pub previous_run_id: Option<RunId>,
    pub usage: UsageView,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub links: RunLinks,
    /// On `GET /v1/runs/{id}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<CostView>,
}

impl From<&Run> for RunView {
    fn from(run: &Run) -> Self {
        let base = format!("/v1/runs/{}", run.id);
        let output_bytes = run.output.as_ref().map_or(0, json_len);
        let raw_output_bytes = run.raw_output.as_ref().map_or(0, String::len);
        let inline = output_bytes + raw_output_bytes <= MAX_INLINE_OUTPUT_BYTES;
        Self {
            id: run.id,
            status: run.status,
            waiting_for: (run.status == RunStatus::Waiting).then_some(WaitingFor::Approval),
            agent: run.agent.clone(),
            version: run.version,
            active_agent: run.active_agent.clone(),
            active_version: run.active_version,
            stop_reason: run.stop_reason,
            stop_detail: run.stop_detail.clone(),
            input: run.input.clone(),
            output: run.output.clone().filter(|_| inline),
            raw_output: run.raw_output.clone().filter(|_| inline),
            output_inline: inline,
            output_bytes,
            raw_output_bytes,
            metadata: run.metadata.clone(),
            webhook: run.webhook_url.clone().map(|url| WebhookView { url }),
            limits: run.limits.clone(),
            steps: run.next_step - 1,
            handoff_depth: run.handoff_depth,
            wound_down: run.wound_down,
            thread_id: run.thread_id,
            previous_run_id: run.previous_run_id,
            usage: UsageView {
                input_tokens: run.input_tokens,
                output_tokens: run.output_tokens,
                total_tokens: run.input_tokens + run.output_tokens,
                llm_calls: run.llm_calls,
                by_model: None,
            },
            created_at: run.created_at,
            started_at: run.started_at,
            finished_at: run.finished_at,
            links: RunLinks {
                steps: format!("{base}/steps"),
                events: format!("{base}/events"),
                cancel: format!("{base}/cancel"),
                output: format!("{base}/output"),
                webhooks: format!("{base}/webhooks"),
                approvals: format!("{base}/approvals"),
                this: base,
            },
            cost: None,
        }
    }
}

/// `GET /v1/runs/{id}/webhooks`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookDeliveries {
    pub webhook: Option<WebhookView>,
    /// The run's deliveries: one per step that asked for approval, and
    /// its end's (queued when it ended).
    pub data: Vec<DeliveryRecord>,
}

/// The body a webhook delivery POSTs.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookBody {
    /// The delivery's id: the same on every attempt.
    pub id: uuid::Uuid,
    /// The run's terminal event (`run.succeeded`, ...), or
    /// `approval.requested`.
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub run: RunView,
    /// With `approval.requested`: the requests waiting for an answer.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<Vec<Approval>>,
}

/// `GET /v1/runs/{id}/approvals`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalList {
    /// Oldest first.
    pub data: Vec<Approval>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallLinks {
    pub result: String,
}

/// A tool call as the steps listing shows it: a result over
/// `MAX_LISTED_RESULT_BYTES` is cut there (`result_cut`, with its size) and
/// read whole in parts from `links.result`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ToolCallView {
    pub call_index: i32,
    pub tool_call_id: String,
    pub name: String,
    pub arguments: Value,
    /// Cut to 32 KiB when `result_cut`.
    pub result: String,
    pub result_cut: bool,
    pub result_bytes: usize,
    pub is_error: bool,
    pub truncated: bool,
    pub attempts: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub links: ToolCallLinks,
}

/// A committed step as `GET /v1/runs/{id}/steps` shows it: the step's
/// own fields, and its tool calls as the listing shows them.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Step)]
pub struct StepView {
    #[serde(flatten)]
    pub step: StepRecord,
    pub tool_calls: Vec<ToolCallView>,
}

impl StepView {
    pub fn new(run: RunId, mut step: StepRecord) -> Self {
        let tool_calls = std::mem::take(&mut step.tool_calls)
            .into_iter()
            .map(|call| {
                let result_bytes = call.result.len();
                let result_cut = result_bytes > MAX_LISTED_RESULT_BYTES;
                let result = if result_cut {
                    prefix(&call.result, MAX_LISTED_RESULT_BYTES).to_owned()
                } else {
                    call.result
                };
                ToolCallView {
                    links: ToolCallLinks {
                        result: format!(
                            "/v1/runs/{run}/steps/{}/tool_calls/{}/result",
                            step.step_no, call.call_index
                        ),
                    },
                    call_index: call.call_index,
                    tool_call_id: call.tool_call_id,
                    name: call.name,
                    arguments: call.arguments,
                    result,
                    result_cut,
                    result_bytes,
                    is_error: call.is_error,
                    truncated: call.truncated,
                    attempts: call.attempts,
                    started_at: call.started_at,
                    finished_at: call.finished_at,
                }
            })
            .collect();
        Self { step, tool_calls }
    }
}

/// An agent version as the API shows it: secrets are write-only (each
/// tool's and the webhook's `secret` shows as `"secret_set": true`).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = AgentVersion)]
pub struct AgentVersionView {
    pub name: String,
    pub version: i32,
    #[schema(value_type = crate::domain::AgentSpec)]
    pub spec: Value,
    pub created_at: DateTime<Utc>,
}

impl From<&AgentVersion> for AgentVersionView {
    fn from(version: &AgentVersion) -> Self {
        Self {
            name: version.name.clone(),
            version: version.version,
            spec: version.spec.redacted(),
            created_at: version.created_at,
        }
    }
}

/// Tokens of a team's UTC day in the hot store.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct TokensToday {
    pub day: chrono::NaiveDate,
    pub used: u64,
    pub reserved: u64,
    /// On `GET /v1/usage`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daily_budget: Option<i64>,
}

/// A team as the admin API shows it, with what it holds now.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Team)]
pub struct TeamView {
    #[serde(flatten)]
    pub team: Team,
    pub running_runs: u32,
    pub tokens_today: TokensToday,
}

/// A new key: its secret is shown only in this answer.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedKeyView {
    pub id: uuid::Uuid,
    pub team_id: TeamId,
    pub prefix: String,
    pub key: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub note: &'static str,
}

/// `POST /v1/admin/reconcile`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Reconciled {
    pub released_slots: usize,
}

/// A part of a run's output or raw output.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct OutputPart {
    pub run_id: RunId,
    /// `output` or `raw_output`.
    #[schema(schema_with = super::openapi::output_part_name)]
    pub part: &'static str,
    #[serde(flatten)]
    pub text: TextPart,
}

/// A part of one tool call's result.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ResultPart {
    pub run_id: RunId,
    pub step_no: i32,
    pub call_index: i32,
    #[serde(flatten)]
    pub text: TextPart,
}

/// `POST /v1/runs/{id}/stream-token`: a short-lived token to stream one
/// run's events without an Authorization header (a browser's EventSource).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StreamToken {
    /// Passed as `?token=` to the run's events: read-only, this run only.
    pub token: String,
    pub run_id: RunId,
    pub expires_at: DateTime<Utc>,
    /// The run's events with the token: a path on this server, or the
    /// relay's absolute URL where streams are served there (AWS).
    pub events_url: String,
}

/// `307` from `/v1/runs/{id}/events` where streams are served elsewhere.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StreamElsewhere {
    pub stream_url: String,
    pub message: &'static str,
}

/// `GET /healthz`.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `ok` or `degraded`.
    #[schema(schema_with = super::openapi::health_status)]
    pub status: &'static str,
    /// `unreachable` while the hot store cannot be reached: runs go on
    /// with answers from the ledger.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = super::openapi::hot_store_state)]
    pub hot_store: Option<&'static str>,
    /// Answers the ledger gave in the hot store's place.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hot_store_fallbacks: Option<u64>,
}

/// One UTC day of a team's usage.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct UsageDay {
    pub day: chrono::NaiveDate,
    #[serde(flatten)]
    pub usage: UsageTotals,
}

/// `GET /v1/usage`: one entry per day, the totals and today's tokens.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct DailyUsage {
    pub data: Vec<UsageDay>,
    pub totals: UsageTotals,
    pub money_unit: &'static str,
    pub tokens_today: TokensToday,
}

/// `GET /v1/usage/runs` (JSON): a page of the month's statement, with the
/// whole month's totals.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Statement {
    pub month: String,
    pub data: Vec<RunCharge>,
    pub totals: UsageTotals,
    pub money_unit: &'static str,
    pub next_cursor: Option<String>,
}
