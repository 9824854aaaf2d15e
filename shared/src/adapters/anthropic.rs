//! Anthropic Messages API client (`POST {base}/v1/messages`). The ledger's
//! conversation (Chat Completions form) is translated on the way out: system
//! messages become `system`, tool results become `tool_result` blocks of a
//! user turn, and consecutive turns of one role are merged, as the API
//! wants roles to alternate. 429 and 529 (overloaded) are "slow down", with
//! their `retry-after`. A streamed answer (`stream: true`) is put together
//! from its `content_block_*` events, with usage from `message_start` and
//! `message_delta`.

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

/// The API version the client speaks (`anthropic-version`).
pub const API_VERSION: &str = "2023-06-01";

/// Where the API is when no base URL is given.
pub const DEFAULT_BASE_URL: &str = "https://api.anthropic.com";

/// "Slow down": rate limited, or overloaded.
const BUSY: &[u16] = &[429, 529];

pub struct AnthropicClient {
    http: reqwest::Client,
    settings: ProviderSettings,
    url: String,
}

impl AnthropicClient {
    pub fn new(settings: ProviderSettings) -> Result<Self, LlmError> {
        Ok(Self {
            http: http_client(&settings)?,
            url: settings.url("v1/messages"),
            settings,
        })
    }

    async fn attempt(
        &self,
        body: &Value,
        timeout: Duration,
        deltas: Option<&dyn TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        let mut builder = self
            .http
            .post(&self.url)
            .header("anthropic-version", API_VERSION)
            .json(body)
            .timeout(timeout);
        if let Some(key) = self.settings.api_key.as_ref().map(Secret::expose) {
            builder = builder.header("x-api-key", key);
        }
        let response = builder.send().await.map_err(unsent)?;
        match deltas {
            Some(deltas) => {
                let mut answer = StreamedMessage::default();
                match read_stream(response, BUSY, deltas, |event| answer.apply(&event)).await? {
                    Some(whole) => parse_message(&whole),
                    None => answer.finish(),
                }
            }
            None => parse_message(&answer_body(response, BUSY).await?),
        }
    }
}

#[async_trait]
impl LlmClient for AnthropicClient {
    fn endpoint(&self) -> &str {
        &self.settings.base_url
    }

    async fn complete(
        &self,
        request: &ChatRequest,
        deadline: Instant,
        deltas: Option<&dyn TextDeltas>,
    ) -> Result<ChatResponse, LlmError> {
        let mut body = messages_request(request)?;
        if deltas.is_some() {
            body["stream"] = Value::Bool(true);
        }
        with_retries(&self.settings, &request.model, deadline, |timeout| {
            self.attempt(&body, timeout, deltas)
        })
        .await
    }
}

/// One turn of the Messages API.
#[derive(Debug, PartialEq, Serialize)]
pub struct Turn {
    pub role: &'static str,
    pub content: Vec<Value>,
}

/// The system prompt and the alternating turns of a conversation. Without
/// `tools` defined (an agent without tools continuing a conversation that
/// had some), tool calls and results are shown as text: the API refuses
/// tool blocks without tools.
pub fn turns(messages: &[ChatMessage], tools: bool) -> Result<(String, Vec<Turn>), LlmError> {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        let (role, blocks) = match message {
            ChatMessage::System { content } | ChatMessage::Summary { content, .. } => {
                system.push(content.as_str());
                continue;
            }
            ChatMessage::User { content } => ("user", vec![text_block(content)]),
            ChatMessage::Tool {
                tool_call_id,
                content,
            } if tools => (
                "user",
                vec![
                    json!({"type": "tool_result", "tool_use_id": tool_call_id, "content": content}),
                ],
            ),
            ChatMessage::Tool {
                tool_call_id,
                content,
            } => (
                "user",
                vec![text_block(&format!(
                    "[result of tool call {tool_call_id}]\n{content}"
                ))],
            ),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut blocks = Vec::new();
                if let Some(text) = content.as_deref().filter(|t| !t.is_empty()) {
                    blocks.push(json!({"type": "text", "text": text}));
                }
                for call in tool_calls {
                    let input: Value =
                        serde_json::from_str(&call.function.arguments).map_err(|e| {
                            LlmError::Rejected(format!(
                                "the arguments of tool call {} are not JSON: {e}",
                                call.id
                            ))
                        })?;
                    blocks.push(if tools {
                        json!({
                            "type": "tool_use",
                            "id": call.id,
                            "name": call.function.name,
                            "input": input,
                        })
                    } else {
                        text_block(&format!(
                            "[tool call {}: {}({input})]",
                            call.id, call.function.name
                        ))
                    });
                }
                if blocks.is_empty() {
                    continue;
                }
                ("assistant", blocks)
            }
        };
        match turns.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => turns.push(Turn {
                role,
                content: blocks,
            }),
        }
    }
    // The turns begin with a user turn: the API wants one first.
    if turns.first().is_none_or(|turn| turn.role != "user") {
        turns.insert(
            0,
            Turn {
                role: "user",
                content: vec![text_block("")],
            },
        );
    }
    Ok((system.join("\n\n"), turns))
}

/// A text block; the API refuses empty ones, so an empty text says so.
fn text_block(text: &str) -> Value {
    let text = if text.trim().is_empty() {
        "(empty)"
    } else {
        text
    };
    json!({"type": "text", "text": text})
}

fn messages_request(request: &ChatRequest) -> Result<Value, LlmError> {
    let (system, turns) = turns(&request.messages, !request.tools.is_empty())?;
    let mut body = json!({
        "model": request.model,
        "max_tokens": request.max_tokens,
        "messages": turns,
    });
    if !system.is_empty() {
        body["system"] = Value::String(system);
    }
    if let Some(temperature) = request.temperature {
        body["temperature"] = json!(temperature);
    }
    if request.tool_choice == Some("none") {
        body["tool_choice"] = json!({"type": "none"});
    }
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "name": tool.function.name,
                    "description": tool.function.description,
                    "input_schema": tool.function.parameters,
                })
            })
            .collect();
    }
    Ok(body)
}

#[derive(Deserialize)]
struct WireMessage {
    content: Vec<WireBlock>,
    #[serde(default)]
    usage: WireUsage,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum WireBlock {
    Text {
        text: String,
    },
    ToolUse {
        id: String,
        name: String,
        #[serde(default)]
        input: Value,
    },
    #[serde(other)]
    Other,
}

#[derive(Default, Deserialize)]
struct WireUsage {
    #[serde(default)]
    input_tokens: u64,
    #[serde(default)]
    output_tokens: u64,
}

fn parse_message(body: &str) -> Result<ChatResponse, LlmError> {
    let wire: WireMessage = serde_json::from_str(body)
        .map_err(|e| LlmError::InvalidResponse(format!("not a Messages API answer: {e}")))?;
    let mut text = Vec::new();
    let mut tool_calls = Vec::new();
    for block in wire.content {
        match block {
            WireBlock::Text { text: part } => text.push(part),
            WireBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                id,
                kind: "function".to_owned(),
                function: FunctionCall {
                    name,
                    arguments: if input.is_null() {
                        "{}".to_owned()
                    } else {
                        input.to_string()
                    },
                },
            }),
            WireBlock::Other => {}
        }
    }
    Ok(ChatResponse {
        message: ChatMessage::Assistant {
            content: (!text.is_empty()).then(|| text.concat()),
            tool_calls,
        },
        usage: Usage {
            prompt_tokens: wire.usage.input_tokens,
            completion_tokens: wire.usage.output_tokens,
        },
    })
}

/// A streamed message as its events arrive.
#[derive(Default)]
struct StreamedMessage {
    blocks: Vec<StreamedBlock>,
    usage: Usage,
    stopped: bool,
}

enum StreamedBlock {
    Text(String),
    /// The input arrives as pieces of JSON text.
    ToolUse {
        id: String,
        name: String,
        input: String,
    },
    Other,
}

impl StreamedMessage {
    /// Takes one event in; returns the text it adds.
    fn apply(&mut self, event: &ParsedEvent) -> Result<Option<String>, LlmError> {
        let data: Value = serde_json::from_str(&event.data)
            .map_err(|e| LlmError::InvalidResponse(format!("not a message event: {e}")))?;
        let tokens = |value: &Value| value.as_u64();
        match event.event.as_str() {
            "message_start" => {
                let usage = &data["message"]["usage"];
                self.usage.prompt_tokens = tokens(&usage["input_tokens"]).unwrap_or(0);
                self.usage.completion_tokens = tokens(&usage["output_tokens"]).unwrap_or(0);
            }
            "content_block_start" => {
                let block = &data["content_block"];
                let text = |key: &str| block[key].as_str().unwrap_or_default().to_owned();
                self.blocks.push(match block["type"].as_str() {
                    Some("text") => StreamedBlock::Text(text("text")),
                    Some("tool_use") => StreamedBlock::ToolUse {
                        id: text("id"),
                        name: text("name"),
                        input: String::new(),
                    },
                    _ => StreamedBlock::Other,
                });
            }
            "content_block_delta" => {
                let index = data["index"].as_u64().unwrap_or(u64::MAX);
                let block = usize::try_from(index)
                    .ok()
                    .and_then(|index| self.blocks.get_mut(index))
                    .ok_or_else(|| {
                        LlmError::InvalidResponse(format!("a delta for block {index}, not started"))
                    })?;
                let delta = &data["delta"];
                let piece = |key: &str| delta[key].as_str().unwrap_or_default();
                match (block, delta["type"].as_str()) {
                    (StreamedBlock::Text(text), Some("text_delta")) => {
                        text.push_str(piece("text"));
                        return Ok(Some(piece("text").to_owned()));
                    }
                    (StreamedBlock::ToolUse { input, .. }, Some("input_json_delta")) => {
                        input.push_str(piece("partial_json"));
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(output) = tokens(&data["usage"]["output_tokens"]) {
                    self.usage.completion_tokens = output;
                }
            }
            "message_stop" => self.stopped = true,
            "error" => {
                let kind = data["error"]["type"].as_str().unwrap_or_default();
                return Err(
                    if kind == "overloaded_error" || kind == "rate_limit_error" {
                        LlmError::RateLimited { retry_after: None }
                    } else {
                        LlmError::Unavailable(format!(
                            "the provider broke off its answer: {}",
                            data["error"]
                        ))
                    },
                );
            }
            _ => {} // ping, content_block_stop
        }
        Ok(None)
    }

    fn finish(self) -> Result<ChatResponse, LlmError> {
        if !self.stopped {
            return Err(LlmError::Unavailable(
                "the streamed answer ended before message_stop".to_owned(),
            ));
        }
        let mut text = Vec::new();
        let mut tool_calls = Vec::new();
        for block in self.blocks {
            match block {
                StreamedBlock::Text(part) => text.push(part),
                StreamedBlock::ToolUse { id, name, input } => tool_calls.push(ToolCall {
                    id,
                    kind: "function".to_owned(),
                    function: FunctionCall {
                        name,
                        arguments: if input.trim().is_empty() {
                            "{}".to_owned()
                        } else {
                            input
                        },
                    },
                }),
                StreamedBlock::Other => {}
            }
        }
        Ok(ChatResponse {
            message: ChatMessage::Assistant {
                content: (!text.is_empty()).then(|| text.concat()),
                tool_calls,
            },
            usage: self.usage,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(id: &str, name: &str, arguments: &str) -> ToolCall {
        ToolCall {
            id: id.into(),
            kind: "function".into(),
            function: FunctionCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        }
    }

    #[test]
    fn a_conversation_becomes_a_system_prompt_and_alternating_turns() {
        let messages = vec![
            ChatMessage::System {
                content: "be brief".into(),
            },
            ChatMessage::User {
                content: "refund me".into(),
            },
            ChatMessage::Assistant {
                content: Some("looking".into()),
                tool_calls: vec![call("c1", "lookup", r#"{"id":7}"#), call("c2", "now", "{}")],
            },
            ChatMessage::Tool {
                tool_call_id: "c1".into(),
                content: "found".into(),
            },
            ChatMessage::Tool {
                tool_call_id: "c2".into(),
                content: "noon".into(),
            },
        ];
        let (system, turns) = turns(&messages, true).unwrap();
        assert_eq!(system, "be brief");
        let roles: Vec<&str> = turns.iter().map(|t| t.role).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
        assert_eq!(turns[1].content[1]["input"], json!({"id": 7}));
        assert_eq!(turns[2].content.len(), 2, "both results in one user turn");
        assert_eq!(turns[2].content[1]["tool_use_id"], "c2");
    }

    #[test]
    fn without_tools_defined_tool_calls_and_results_are_text() {
        let messages = vec![
            ChatMessage::User {
                content: "refund me".into(),
            },
            ChatMessage::Assistant {
                content: None,
                tool_calls: vec![call("c1", "lookup", r#"{"id":7}"#)],
            },
            ChatMessage::Tool {
                tool_call_id: "c1".into(),
                content: "found".into(),
            },
        ];
        let (_, shown) = turns(&messages, false).unwrap();
        let blocks: Vec<&Value> = shown.iter().flat_map(|turn| &turn.content).collect();
        assert!(
            blocks.iter().all(|block| block["type"] == "text"),
            "{blocks:?}"
        );
        assert_eq!(blocks[1]["text"], r#"[tool call c1: lookup({"id":7})]"#);
        assert_eq!(blocks[2]["text"], "[result of tool call c1]\nfound");
    }

    #[test]
    fn the_turns_begin_with_a_user_turn_and_no_text_is_empty() {
        let messages = vec![
            ChatMessage::Assistant {
                content: Some("where was I".into()),
                tool_calls: Vec::new(),
            },
            ChatMessage::User { content: "".into() },
        ];
        let (_, shown) = turns(&messages, true).unwrap();
        assert_eq!(shown[0].role, "user");
        assert_eq!(shown[1].role, "assistant");
        assert_eq!(shown[2].content[0]["text"], "(empty)");
        assert_eq!(turns(&[], true).unwrap().1[0].role, "user");
    }

    #[test]
    fn answers_parse_into_text_and_tool_calls() {
        let parsed = parse_message(
            r#"{"id":"m","type":"message","role":"assistant","stop_reason":"tool_use",
                "content":[{"type":"text","text":"checking"},
                           {"type":"tool_use","id":"t1","name":"lookup","input":{"id":7}}],
                "usage":{"input_tokens":12,"output_tokens":3}}"#,
        )
        .unwrap();
        assert_eq!(parsed.usage.prompt_tokens, 12);
        match parsed.message {
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                assert_eq!(content.as_deref(), Some("checking"));
                assert_eq!(tool_calls[0].function.arguments, r#"{"id":7}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_message(r#"{"choices":[]}"#),
            Err(LlmError::InvalidResponse(_))
        ));
    }

    #[test]
    fn streamed_events_add_up_to_text_tool_calls_and_usage() {
        let events = [
            (
                "message_start",
                r#"{"type":"message_start","message":{"usage":{"input_tokens":20,"output_tokens":1}}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type":"ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Che"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"cking"}}"#,
            ),
            (
                "content_block_stop",
                r#"{"type":"content_block_stop","index":0}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"t1","name":"lookup","input":{}}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"id\":"}}"#,
            ),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"7}"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"output_tokens":15}}"#,
            ),
        ];
        let mut answer = StreamedMessage::default();
        let mut text = String::new();
        for (name, data) in events {
            let event = ParsedEvent {
                id: None,
                event: name.into(),
                data: data.into(),
            };
            text.extend(answer.apply(&event).unwrap());
        }
        assert_eq!(text, "Checking");
        let stop = ParsedEvent {
            id: None,
            event: "message_stop".into(),
            data: r#"{"type":"message_stop"}"#.into(),
        };
        answer.apply(&stop).unwrap();
        let done = answer.finish().unwrap();
        assert_eq!(
            done.usage,
            Usage {
                prompt_tokens: 20,
                completion_tokens: 15
            }
        );
        match done.message {
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                assert_eq!(content.as_deref(), Some("Checking"));
                assert_eq!(tool_calls[0].function.arguments, r#"{"id":7}"#);
            }
            other => panic!("unexpected {other:?}"),
        }
        let overloaded = ParsedEvent {
            id: None,
            event: "error".into(),
            data: r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
                .into(),
        };
        assert!(matches!(
            StreamedMessage::default().apply(&overloaded),
            Err(LlmError::RateLimited { .. })
        ));
        assert!(matches!(
            StreamedMessage::default().finish(),
            Err(LlmError::Unavailable(_))
        ));
    }
}
