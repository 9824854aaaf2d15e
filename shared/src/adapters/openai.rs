//! OpenAI-compatible Chat Completions client (`POST {base}/chat/completions`).

use crate::secret::Secret;
use std::time::Duration;

use async_trait::async_trait;
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;

use crate::domain::{ChatMessage, ToolCall};
use crate::policy::{full_jitter, LLM_REQUEST_TIMEOUT};

/// An attempt is not started with less time than this left in the step.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);
use crate::ports::{ChatRequest, ChatResponse, LlmClient, LlmError, Usage};

#[derive(Clone, Debug)]
pub struct OpenAiSettings {
    /// e.g. `https://api.openai.com/v1`
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// One request's limit (less when the step has less time left).
    pub request_timeout: Duration,
    /// Retries on 429, 5xx, connect errors and timeouts, within the step.
    pub max_retries: u32,
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    /// The longest `Retry-After` a step waits out itself; a provider asking
    /// for longer gets the step back to the orchestrator, which waits
    /// without a worker sleeping (`Retryable.RateLimited`).
    pub max_retry_after: Duration,
}

impl OpenAiSettings {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            request_timeout: LLM_REQUEST_TIMEOUT,
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(20),
        }
    }
}

pub struct OpenAiClient {
    http: reqwest::Client,
    settings: OpenAiSettings,
    url: String,
}

impl OpenAiClient {
    pub fn new(settings: OpenAiSettings) -> Result<Self, LlmError> {
        let http = reqwest::Client::builder()
            .timeout(settings.request_timeout)
            .connect_timeout(Duration::from_secs(5))
            .pool_max_idle_per_host(256)
            .build()
            .map_err(|e| LlmError::Rejected(format!("cannot build HTTP client: {e}")))?;
        let url = format!(
            "{}/chat/completions",
            settings.base_url.trim_end_matches('/')
        );
        Ok(Self {
            http,
            settings,
            url,
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
        let response = builder.send().await.map_err(|e| {
            LlmError::Unavailable(if e.is_timeout() {
                "request timed out".to_owned()
            } else {
                format!("request failed: {e}")
            })
        })?;
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(LlmError::RateLimited {
                retry_after: retry_after(response.headers()),
            });
        }
        if status.is_server_error() {
            return Err(LlmError::Unavailable(format!("provider answered {status}")));
        }
        let body = response
            .text()
            .await
            .map_err(|e| LlmError::Unavailable(format!("reading the response failed: {e}")))?;
        if !status.is_success() {
            return Err(LlmError::Rejected(format!(
                "{status}: {}",
                body.chars().take(500).collect::<String>()
            )));
        }
        parse_completion(&body)
    }
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
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
        let mut retry = 0;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining < MIN_ATTEMPT {
                return Err(LlmError::Unavailable(
                    "no time left in the step for an LLM call".to_owned(),
                ));
            }
            let timeout = self.settings.request_timeout.min(remaining);
            let error = match self.attempt(request, timeout).await {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let retryable = matches!(
                error,
                LlmError::RateLimited { .. } | LlmError::Unavailable(_)
            );
            if !retryable || retry >= self.settings.max_retries {
                return Err(error);
            }
            retry += 1;
            let backoff = full_jitter(
                self.settings.retry_base,
                self.settings.retry_max_delay,
                retry,
            );
            // Honor the provider's Retry-After when it asks for longer, but
            // not by sleeping past what this step may wait.
            let wait = match &error {
                LlmError::RateLimited {
                    retry_after: Some(after),
                } => {
                    if *after > self.settings.max_retry_after {
                        return Err(error);
                    }
                    (*after).max(backoff)
                }
                _ => backoff,
            };
            if Instant::now() + wait + MIN_ATTEMPT > deadline {
                return Err(error);
            }
            tracing::warn!(model = %request.model, retry, ?wait, %error, "LLM call failed; retrying");
            tokio::time::sleep(wait).await;
        }
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
