//! The LLM provider port (OpenAI-compatible Chat Completions semantics).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use std::sync::Arc;

use crate::domain::{ChatMessage, Provider};

#[derive(Clone, Debug, Serialize)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<ToolDefinition>,
    pub max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f32>,
    /// `Some("none")`: the tools are shown (the conversation refers to
    /// them) but may not be called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_choice: Option<&'static str>,
}

/// A tool as the provider sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ToolDefinition {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDefinition,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FunctionDefinition {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

impl ToolDefinition {
    pub fn function(name: &str, description: &str, parameters: Value) -> Self {
        Self {
            kind: "function".to_owned(),
            function: FunctionDefinition {
                name: name.to_owned(),
                description: description.to_owned(),
                parameters,
            },
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
}

#[derive(Clone, Debug)]
pub struct ChatResponse {
    /// Always `ChatMessage::Assistant`.
    pub message: ChatMessage,
    pub usage: Usage,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// 429 after the client's own retries, or with a `Retry-After` longer
    /// than a step waits by itself.
    #[error("rate limited by the provider (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// 5xx, connect failure or timeout after the client's own retries.
    #[error("provider unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request (4xx other than 429); retrying won't help.
    #[error("provider rejected the request: {0}")]
    Rejected(String),
    #[error("provider sent an unreadable response: {0}")]
    InvalidResponse(String),
}

/// One client per provider; an agent names its provider.
#[derive(Clone)]
pub struct LlmClients {
    pub openai: Arc<dyn LlmClient>,
    pub anthropic: Arc<dyn LlmClient>,
}

impl LlmClients {
    pub fn of(&self, provider: Provider) -> &dyn LlmClient {
        match provider {
            Provider::Openai => self.openai.as_ref(),
            Provider::Anthropic => self.anthropic.as_ref(),
        }
    }
}

/// Where a streamed call's text goes while the model writes it.
#[async_trait]
pub trait TextDeltas: Send + Sync {
    /// The next piece of the answer's text: called for every event of the
    /// stream, with an empty text for one that adds none (a chance to
    /// publish what waits).
    async fn write(&self, text: &str);
    /// An attempt begins: what it writes starts the text over.
    fn restart(&self);
}

#[async_trait]
pub trait LlmClient: Send + Sync {
    /// The provider's endpoint, which names its circuit breakers.
    fn endpoint(&self) -> &str;

    /// One completion, retried inside the call only while `deadline` (the
    /// step's) leaves time for it; a wait longer than the client's own limit
    /// is left to the orchestrator (`RateLimited` with the wait). With
    /// `deltas`, the provider is asked to stream its answer, and its text
    /// goes there as it arrives.
    async fn complete(
        &self,
        request: &ChatRequest,
        deadline: tokio::time::Instant,
        deltas: Option<&dyn TextDeltas>,
    ) -> Result<ChatResponse, LlmError>;
}
