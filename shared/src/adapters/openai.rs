//! OpenAI-compatible Chat Completions client (`POST {base}/chat/completions`),
//! plain or streamed (`stream: true`, usage in the last chunk).

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::llm_http::{
    answer_body, http_client, read_stream, unsent, with_retries, ProviderSettings,
};
use crate::domain::{ChatMessage, FunctionCall, ToolCall};
use crate::ports::{ChatRequest, ChatResponse, LlmClient, LlmError, TextDeltas, Usage};
use crate::secret::Secret;
use crate::sse_client::ParsedEvent;

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
        deltas: Option<&dyn TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        let mut builder = self.http.post(&self.url).timeout(timeout);
        builder = match deltas {
            Some(_) => builder.json(&Streamed {
                request,
                stream: true,
                stream_options: json!({"include_usage": true}),
            }),
            None => builder.json(request),
        };
        if let Some(key) = self.settings.api_key.as_ref().map(Secret::expose) {
            builder = builder.bearer_auth(key);
        }
        let response = builder.send().await.map_err(unsent)?;
        match deltas {
            Some(deltas) => {
                let mut answer = StreamedCompletion::default();
                match read_stream(response, &[429], deltas, |event| answer.apply(&event)).await? {
                    Some(whole) => parse_completion(&whole),
                    None => answer.finish(),
                }
            }
            None => parse_completion(&answer_body(response, &[429]).await?),
        }
    }
}

/// A request for a streamed answer.
#[derive(Serialize)]
struct Streamed<'a> {
    #[serde(flatten)]
    request: &'a ChatRequest,
    stream: bool,
    stream_options: Value,
}

/// A streamed completion as its chunks arrive: text, tool calls by
/// index (their arguments in pieces), and usage.
#[derive(Default)]
struct StreamedCompletion {
    content: Option<String>,
    calls: Vec<ToolCall>,
    usage: Option<Usage>,
    done: bool,
}

#[derive(Deserialize)]
struct WireChunk {
    #[serde(default)]
    choices: Vec<WireChunkChoice>,
    #[serde(default)]
    usage: Option<Usage>,
}

// Fields may be missing or null alike.
#[derive(Deserialize)]
struct WireChunkChoice {
    #[serde(default)]
    delta: Option<WireDelta>,
}

#[derive(Default, Deserialize)]
struct WireDelta {
    #[serde(default)]
    content: Option<String>,
    #[serde(default)]
    tool_calls: Option<Vec<WireCallPiece>>,
}

#[derive(Deserialize)]
struct WireCallPiece {
    #[serde(default)]
    index: usize,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    function: Option<WireFunctionPiece>,
}

#[derive(Deserialize)]
struct WireFunctionPiece {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    arguments: Option<String>,
}

impl StreamedCompletion {
    /// Takes one chunk in; returns the text it adds.
    fn apply(&mut self, event: &ParsedEvent) -> Result<Option<String>, LlmError> {
        if event.data.trim() == "[DONE]" {
            self.done = true;
            return Ok(None);
        }
        if let Ok(failure) = serde_json::from_str::<Value>(&event.data) {
            if let Some(error) = failure.get("error") {
                return Err(LlmError::Unavailable(format!(
                    "the provider broke off its answer: {error}"
                )));
            }
        }
        let chunk: WireChunk = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::InvalidResponse(format!("not a completion chunk: {e}")))?;
        if chunk.usage.is_some() {
            self.usage = chunk.usage;
        }
        let mut added = None;
        for delta in chunk.choices.into_iter().filter_map(|choice| choice.delta) {
            if let Some(text) = delta.content {
                self.content.get_or_insert_with(String::new).push_str(&text);
                added.get_or_insert_with(String::new).push_str(&text);
            }
            for piece in delta.tool_calls.unwrap_or_default() {
                if piece.index > self.calls.len() {
                    return Err(LlmError::InvalidResponse(format!(
                        "tool call {} streamed before call {}",
                        piece.index,
                        self.calls.len()
                    )));
                }
                if piece.index == self.calls.len() {
                    self.calls.push(ToolCall {
                        id: String::new(),
                        kind: "function".to_owned(),
                        function: FunctionCall {
                            name: String::new(),
                            arguments: String::new(),
                        },
                    });
                }
                let call = &mut self.calls[piece.index];
                if let Some(id) = piece.id {
                    call.id = id;
                }
                if let Some(function) = piece.function {
                    call.function
                        .name
                        .push_str(&function.name.unwrap_or_default());
                    call.function
                        .arguments
                        .push_str(&function.arguments.unwrap_or_default());
                }
            }
        }
        Ok(added)
    }

    fn finish(self) -> Result<ChatResponse, LlmError> {
        if !self.done {
            return Err(LlmError::Unavailable(
                "the streamed answer ended before [DONE]".to_owned(),
            ));
        }
        Ok(ChatResponse {
            message: ChatMessage::Assistant {
                content: self.content,
                tool_calls: self.calls,
            },
            usage: self.usage.unwrap_or_default(),
        })
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
        deltas: Option<&dyn TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        with_retries(&self.settings, &request.model, deadline, |timeout| {
            self.attempt(request, timeout, deltas)
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

    fn event(data: &str) -> ParsedEvent {
        ParsedEvent {
            id: None,
            event: "message".into(),
            data: data.into(),
        }
    }

    #[test]
    fn streamed_chunks_add_up_to_text_tool_calls_and_usage() {
        let mut answer = StreamedCompletion::default();
        let texts: Vec<Option<String>> = [
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"lo","tool_calls":null}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"c1","type":"function","function":{"name":"look","arguments":"{\"id\""}}]}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":":7}"}}]}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}"#,
        ]
        .iter()
        .map(|data| answer.apply(&event(data)).unwrap())
        .collect();
        assert_eq!(texts[..2], [Some("Hel".to_owned()), Some("lo".to_owned())]);
        assert!(texts[2..].iter().all(Option::is_none));
        let unfinished = StreamedCompletion {
            content: answer.content.clone(),
            ..StreamedCompletion::default()
        };
        assert!(matches!(unfinished.finish(), Err(LlmError::Unavailable(_))));
        answer.apply(&event("[DONE]")).unwrap();
        let done = answer.finish().unwrap();
        assert_eq!(done.usage.completion_tokens, 4);
        match done.message {
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                assert_eq!(content.as_deref(), Some("Hello"));
                assert_eq!(tool_calls[0].id, "c1");
                assert_eq!(tool_calls[0].function.arguments, r#"{"id":7}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut broken = StreamedCompletion::default();
        assert!(matches!(
            broken.apply(&event(r#"{"error":{"message":"overloaded"}}"#)),
            Err(LlmError::Unavailable(_))
        ));
    }
}
