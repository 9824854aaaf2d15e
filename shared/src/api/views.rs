//! Typed response bodies: what the API answers, as structs (runs, steps,
//! webhooks and agents; the rest still builds its bodies with `json!`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::parts::prefix;
use crate::domain::limits::{json_len, MAX_INLINE_OUTPUT_BYTES, MAX_LISTED_RESULT_BYTES};
use crate::domain::{Run, RunId, RunLimits, RunStatus, StopReason};
use crate::ledger::{AgentVersion, DeliveryRecord, ModelUsage, StepRecord};

/// A list page: `{"data": [...], "next_cursor"}`.
#[derive(Debug, Serialize)]
pub struct Page<T> {
    pub data: Vec<T>,
    pub next_cursor: Option<String>,
}

/// Where a run's end is announced (never with its secret).
#[derive(Clone, Debug, Serialize)]
pub struct WebhookView {
    pub url: String,
}

#[derive(Clone, Debug, Serialize)]
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
#[derive(Clone, Debug, Serialize)]
pub struct CostView {
    pub fee_micros: i64,
    pub token_cost_micros: i64,
    pub total_micros: i64,
}

#[derive(Clone, Debug, Serialize)]
pub struct RunLinks {
    #[serde(rename = "self")]
    pub this: String,
    pub steps: String,
    pub events: String,
    pub cancel: String,
    pub output: String,
    pub webhooks: String,
}

/// The run as the API shows it. An output too large to show inline (with
/// the raw output, over `MAX_INLINE_OUTPUT_BYTES`) is left out, with its
/// size, and read in parts from the `output` link.
#[derive(Clone, Debug, Serialize)]
pub struct RunView {
    pub id: RunId,
    pub status: RunStatus,
    pub agent: String,
    pub version: i32,
    pub active_agent: String,
    pub active_version: i32,
    pub stop_reason: Option<StopReason>,
    pub stop_detail: Option<String>,
    pub input: Value,
    pub output: Option<Value>,
    pub raw_output: Option<String>,
    pub output_inline: bool,
    pub output_bytes: usize,
    pub raw_output_bytes: usize,
    pub metadata: Value,
    pub webhook: Option<WebhookView>,
    pub limits: RunLimits,
    pub steps: i32,
    pub handoff_depth: i32,
    pub usage: UsageView,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub links: RunLinks,
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
                this: base,
            },
            cost: None,
        }
    }
}

/// `GET /v1/runs/{id}/webhooks`.
#[derive(Debug, Serialize)]
pub struct WebhookDeliveries {
    pub webhook: Option<WebhookView>,
    pub data: Vec<DeliveryRecord>,
}

/// The body a webhook delivery POSTs.
#[derive(Debug, Serialize)]
pub struct WebhookBody {
    /// The delivery's id: the same on every attempt.
    pub id: uuid::Uuid,
    /// The run's terminal event (`run.succeeded`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: DateTime<Utc>,
    pub run: RunView,
}

#[derive(Clone, Debug, Serialize)]
pub struct ToolCallLinks {
    pub result: String,
}

/// A tool call as the steps listing shows it: a result over
/// `MAX_LISTED_RESULT_BYTES` is cut there (`result_cut`, with its size) and
/// read whole in parts from `links.result`.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCallView {
    pub call_index: i32,
    pub tool_call_id: String,
    pub name: String,
    pub arguments: Value,
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

/// A committed step as `GET /v1/runs/{id}/steps` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StepView {
    pub step_no: i32,
    pub agent: String,
    pub agent_version: i32,
    pub attempt: i32,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub context_trimmed: i32,
    pub outcome: Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_calls: Vec<ToolCallView>,
}

impl StepView {
    pub fn new(run: RunId, step: &StepRecord) -> Self {
        let tool_calls = step
            .tool_calls
            .iter()
            .map(|call| {
                let cut = call.result.len() > MAX_LISTED_RESULT_BYTES;
                ToolCallView {
                    call_index: call.call_index,
                    tool_call_id: call.tool_call_id.clone(),
                    name: call.name.clone(),
                    arguments: call.arguments.clone(),
                    result: if cut {
                        prefix(&call.result, MAX_LISTED_RESULT_BYTES).to_owned()
                    } else {
                        call.result.clone()
                    },
                    result_cut: cut,
                    result_bytes: call.result.len(),
                    is_error: call.is_error,
                    truncated: call.truncated,
                    attempts: call.attempts,
                    started_at: call.started_at,
                    finished_at: call.finished_at,
                    links: ToolCallLinks {
                        result: format!(
                            "/v1/runs/{run}/steps/{}/tool_calls/{}/result",
                            step.step_no, call.call_index
                        ),
                    },
                }
            })
            .collect();
        Self {
            step_no: step.step_no,
            agent: step.agent.clone(),
            agent_version: step.agent_version,
            attempt: step.attempt,
            model: step.model.clone(),
            input_tokens: step.input_tokens,
            output_tokens: step.output_tokens,
            context_trimmed: step.context_trimmed,
            outcome: step.outcome.clone(),
            started_at: step.started_at,
            finished_at: step.finished_at,
            tool_calls,
        }
    }
}

/// An agent version as the API shows it: secrets are write-only (each
/// tool's and the webhook's `secret` shows as `"secret_set": true`).
#[derive(Clone, Debug, Serialize)]
pub struct AgentVersionView {
    pub name: String,
    pub version: i32,
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
