//! OpenAI-compatible Chat Completions client (`POST {base}/chat/completions`).

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use tokio::time::Instant;

use super::llm_http::{answer_body, http_client, unsent, with_retries, ProviderSettings};
use crate::domain::{ChatMessage, ToolCall};
use crate::ports::{ChatRequest, ChatResponse, LlmClient, LlmError, Usage};
use crate::secret::Secret;

pub struct OpenAiClient {
    http: reqwest::Client,
    settings: ProviderSettings,
    url: String,
}

impl OpenAiClient {
    pub fn new(settings: ProviderSettings) -> Result<Self, LlmError> {
        Ok(Self {
            http: http_client(&settings)?,
            url: settings.url("chat/completions"),
            settings,
        })
    }

    async fn attempt(
        &self,
        request: &ChatRequest,
        timeout: Duration,
    ) -> Result<ChatResponse, LlmError> {
        let mut builder = self.http.post(&self.url).json(request).timeout(timeout);
        if let Some(key) = self.settings.api_key.as_ref().map(Secret::expose) {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(unsent)?;
        parse_completion(&answer_body(response, &[429]).await?)
    }
}

#[derive(Deserialize)]
struct WireCompletion {
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<ToolCall>>,
}

fn parse_completion(body: &str) -> Result<ChatResponse, LlmError> {
    let wire: WireCompletion = serde_json::from_str(body)
        .map_err(|e| LlmError::InvalidResponse(format!("not a chat completion: {e}")))?;
    let choice = wire
        .choices
        .into_iter()
        .next()
        .ok_or_else(|| LlmError::InvalidResponse("no choices".to_owned()))?;
    Ok(ChatResponse {
        message: ChatMessage::Assistant {
            content: choice.message.content,
            tool_calls: choice.message.tool_calls.unwrap_or_default(),
        },
        usage: wire.usage.unwrap_or_default(),
    })
}

#[async_trait]
impl LlmClient for OpenAiClient {
    fn endpoint(&self) -> &str {
        &self.settings.base_url
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        deadline: Instant,
    ) -> Result<ChatResponse, LlmError> {
        with_retries(&self.settings, &request.model, deadline, |timeout| {
            self.attempt(request, timeout)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_parse_with_and_without_tool_calls() {
        let body = r#"{"choices":[{"message":{"role":"assistant","content":null,
            "tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]}}],
            "usage":{"prompt_tokens":12,"completion_tokens":3,"total_tokens":15}}"#;
        let parsed = parse_completion(body).unwrap();
        assert_eq!(parsed.usage.prompt_tokens, 12);
        match parsed.message {
            ChatMessage::Assistant { tool_calls, .. } => {
                assert_eq!(tool_calls[0].function.name, "f")
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_completion(r#"{"choices":[]}"#),
            Err(LlmError::InvalidResponse(_))
        ));
    }
}
