//! An OpenAI-compatible Chat Completions server, which also speaks the
//! Anthropic Messages format (`/v1/messages`), whose answers are scripted
//! per model name: tool calls, handoffs, final JSON, latency, 429/5xx
//! faults and hangs. Used by `agentrun dev`, `agentrun mock-llm`, tests and
//! benchmarks, always over real HTTP. A request with `stream: true` is
//! answered as the provider streams (Server-Sent Events, text in pieces of
//! a few characters, `chunk_delay_ms` apart).
//!
//! Which scripted turn answers a request is derived from the conversation
//! itself: the number of assistant messages since the last handoff
//! (`transfer_to_*` call). A retried request therefore gets the same answer,
//! and a run that continues a conversation goes on through the script.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::domain::agent::HANDOFF_TOOL_PREFIX;
use crate::domain::message::estimate_tokens;
use crate::domain::ChatMessage;
use crate::ports::Usage;

/// How one model behaves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MockScript {
    /// Answers by turn; the last one repeats once the list runs out.
    #[serde(default)]
    pub turns: Vec<MockTurn>,
    #[serde(default)]
    pub latency_ms: Latency,
    /// Errors returned before any answer, in order, each `times` times.
    #[serde(default)]
    pub faults: Vec<Fault>,
    /// Answer every request with this HTTP status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fail_always: Option<u16>,
    /// Fixed token counts; otherwise about four characters a token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    /// A streamed answer waits this long between its events.
    #[serde(default)]
    pub chunk_delay_ms: u64,
    /// The first this many streamed answers break off halfway (the
    /// connection drops mid-answer).
    #[serde(default)]
    pub stream_breaks: u32,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Latency {
    Fixed(u64),
    /// Uniform between the two bounds.
    Range([u64; 2]),
}

impl Default for Latency {
    fn default() -> Self {
        Latency::Fixed(0)
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MockTurn {
    ToolCalls {
        tool_calls: Vec<MockToolCall>,
    },
    Json {
        json: Value,
    },
    Content {
        content: String,
    },
    /// Never answers within `hang_ms`.
    Hang {
        hang_ms: u64,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MockToolCall {
    pub name: String,
    #[serde(default)]
    pub arguments: Value,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Fault {
    pub status: u16,
    /// Value of the `Retry-After` header, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<f64>,
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl MockScript {
    pub fn turns(turns: Vec<MockTurn>) -> Self {
        Self {
            turns,
            ..Self::default()
        }
    }
}

impl MockTurn {
    pub fn tool(name: &str, arguments: Value) -> Self {
        MockTurn::ToolCalls {
            tool_calls: vec![MockToolCall {
                name: name.to_owned(),
                arguments,
            }],
        }
    }

    pub fn tools(calls: &[(&str, Value)]) -> Self {
        MockTurn::ToolCalls {
            tool_calls: calls
                .iter()
                .map(|(name, arguments)| MockToolCall {
                    name: (*name).to_owned(),
                    arguments: arguments.clone(),
                })
                .collect(),
        }
    }

    pub fn json(value: Value) -> Self {
        MockTurn::Json { json: value }
    }

    pub fn text(content: &str) -> Self {
        MockTurn::Content {
            content: content.to_owned(),
        }
    }
}

#[derive(Default)]
pub struct MockState {
    scripts: RwLock<HashMap<String, MockScript>>,
    faults_used: Mutex<HashMap<String, u32>>,
    breaks_used: Mutex<HashMap<String, u32>>,
    requests: Mutex<HashMap<String, u64>>,
    by_api: Mutex<HashMap<&'static str, u64>>,
}

impl MockState {
    pub fn set_script(&self, model: &str, script: MockScript) {
        if let Ok(mut scripts) = self.scripts.write() {
            scripts.insert(model.to_owned(), script);
        }
    }

    /// Requests received for a model (including faulted ones).
    pub fn requests(&self, model: &str) -> u64 {
        self.requests
            .lock()
            .map(|r| r.get(model).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Requests received in one wire format: `chat_completions` or
    /// `messages` (Anthropic); `streamed`: those asking for a streamed answer.
    pub fn requests_in(&self, api: &str) -> u64 {
        self.by_api
            .lock()
            .map(|r| r.get(api).copied().unwrap_or(0))
            .unwrap_or(0)
    }

    pub fn total_requests(&self) -> u64 {
        self.requests.lock().map(|r| r.values().sum()).unwrap_or(0)
    }

    fn script(&self, model: &str) -> MockScript {
        self.scripts
            .read()
            .ok()
            .and_then(|s| s.get(model).cloned())
            .unwrap_or_default()
    }

    /// The next fault to inject for a model, consuming it.
    /// Whether this streamed answer breaks off (one of the script's first
    /// `stream_breaks`).
    fn take_break(&self, model: &str, breaks: u32) -> bool {
        let Ok(mut used) = self.breaks_used.lock() else {
            return false;
        };
        let count = used.entry(model.to_owned()).or_insert(0);
        let take = *count < breaks;
        if take {
            *count += 1;
        }
        take
    }

    fn take_fault(&self, model: &str, faults: &[Fault]) -> Option<Fault> {
        let mut used = self.faults_used.lock().ok()?;
        let count = used.entry(model.to_owned()).or_insert(0);
        let mut budget = *count;
        for fault in faults {
            if budget < fault.times {
                *count += 1;
                return Some(fault.clone());
            }
            budget -= fault.times;
        }
        None
    }
}

/// A running mock server.
pub struct MockLlm {
    pub addr: SocketAddr,
    pub state: Arc<MockState>,
    server: tokio::task::JoinHandle<()>,
}

impl MockLlm {
    /// Serves on `addr` (port 0 picks a free one).
    pub async fn start(
        addr: SocketAddr,
        scripts: HashMap<String, MockScript>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(MockState::default());
        for (model, script) in scripts {
            state.set_script(&model, script);
        }
        let listener = crate::listen::bind(addr)?;
        let addr = listener.local_addr()?;
        let app = router(state.clone());
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, app).await {
                tracing::error!(%error, "mock LLM server stopped");
            }
        });
        Ok(Self {
            addr,
            state,
            server,
        })
    }

    /// The base URL to give an OpenAI-compatible client.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The base URL to give an Anthropic client (which adds `/v1/messages`).
    pub fn anthropic_base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MockLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Parses a scripts file: `{"<model>": <MockScript>, ...}`.
pub fn parse_scripts(text: &str) -> Result<HashMap<String, MockScript>, serde_json::Error> {
    serde_json::from_str(text)
}

pub fn router(state: Arc<MockState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(complete))
        .route("/chat/completions", post(complete))
        .route("/v1/messages", post(messages))
        .route("/_mock/scripts/{model}", put(set_script))
        .route("/_mock/stats", get(stats))
        .with_state(state)
}

#[derive(Deserialize)]
struct CompletionRequest {
    model: String,
    messages: Vec<ChatMessage>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Value,
    #[serde(default)]
    stream: bool,
}

async fn set_script(
    State(state): State<Arc<MockState>>,
    Path(model): Path<String>,
    Json(script): Json<MockScript>,
) -> StatusCode {
    state.set_script(&model, script);
    StatusCode::NO_CONTENT
}

async fn stats(State(state): State<Arc<MockState>>) -> Json<Value> {
    let requests = state.requests.lock().map(|r| r.clone()).unwrap_or_default();
    Json(json!({"requests": requests}))
}

/// Assistant messages since the last handoff: which turn this request is.
fn turn_index(messages: &[ChatMessage]) -> usize {
    let mut index = 0;
    for message in messages {
        if let ChatMessage::Assistant { tool_calls, .. } = message {
            if tool_calls
                .iter()
                .any(|c| c.function.name.starts_with(HANDOFF_TOOL_PREFIX))
            {
                index = 0;
            } else {
                index += 1;
            }
        }
    }
    index
}

fn error_response(status: u16, retry_after: Option<f64>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        Json(json!({"error": {"message": "injected by the mock LLM", "type": "mock_fault"}})),
    )
        .into_response();
    if let Some(seconds) = retry_after {
        if let Ok(value) = seconds.to_string().parse() {
            response.headers_mut().insert("retry-after", value);
        }
    }
    response
}

/// Whether a request lets the model call a tool: it defines some and does
/// not say `none` (`"none"` in Chat Completions, `{"type": "none"}` in
/// Messages).
fn may_call_tools(tools: &[Value], tool_choice: &Value) -> bool {
    !tools.is_empty() && tool_choice != "none" && tool_choice["type"] != "none"
}

/// What the script answers a conversation with (before the wire format).
struct Answer {
    content: Option<String>,
    /// `(id, name, arguments)`.
    tool_calls: Vec<(String, String, Value)>,
    usage: Usage,
    /// Between the events of a streamed answer.
    chunk_delay: Duration,
    /// A streamed answer breaks off halfway.
    breaks: bool,
}

/// Characters in one streamed piece of text.
const PIECE_CHARS: usize = 8;

/// `text` in pieces of a few characters, as a provider streams it.
fn pieces(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(PIECE_CHARS)
        .map(|piece| piece.iter().collect())
        .collect()
}

/// A streamed answer: its Server-Sent Events, `delay` apart; one that
/// `breaks` ends with a broken connection after half of them.
fn event_stream(mut frames: Vec<String>, delay: Duration, breaks: bool) -> Response {
    let mut items: Vec<Result<String, std::io::Error>> = Vec::new();
    if breaks {
        frames.truncate(frames.len() / 2);
    }
    items.extend(frames.into_iter().map(Ok));
    if breaks {
        items.push(Err(std::io::Error::other("the mock broke off its answer")));
    }
    let body = futures_util::stream::unfold(
        (items.into_iter(), true),
        move |(mut items, first)| async move {
            let item = items.next()?;
            if !first && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Some((item, (items, false)))
        },
    );
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// One Chat Completions chunk as an SSE frame.
fn chunk_frame(choices: Value, usage: Option<Value>) -> String {
    let mut chunk = json!({"object": "chat.completion.chunk", "choices": choices});
    if let Some(usage) = usage {
        chunk["usage"] = usage;
    }
    format!("data: {chunk}\n\n")
}

/// The answer as Chat Completions streams it: text pieces, each tool call
/// (its arguments in two pieces), the finish reason, usage, `[DONE]`.
fn completion_chunks(answer: &Answer, finish_reason: &str, usage: Value) -> Vec<String> {
    let delta = |delta: Value| json!([{"index": 0, "delta": delta, "finish_reason": null}]);
    let mut frames: Vec<String> = answer
        .content
        .as_deref()
        .map(pieces)
        .unwrap_or_default()
        .into_iter()
        .map(|piece| chunk_frame(delta(json!({"content": piece})), None))
        .collect();
    for (index, (id, name, arguments)) in answer.tool_calls.iter().enumerate() {
        let arguments = pieces(&arguments.to_string());
        let (head, tail) = arguments.split_at(arguments.len() / 2);
        for (at, part) in [head.concat(), tail.concat()].into_iter().enumerate() {
            let mut call = json!({"index": index, "function": {"arguments": part}});
            if at == 0 {
                call["id"] = json!(id);
                call["type"] = json!("function");
                call["function"]["name"] = json!(name);
            }
            frames.push(chunk_frame(delta(json!({"tool_calls": [call]})), None));
        }
    }
    frames.push(chunk_frame(
        json!([{"index": 0, "delta": {}, "finish_reason": finish_reason}]),
        None,
    ));
    frames.push(chunk_frame(json!([]), Some(usage)));
    frames.push("data: [DONE]\n\n".to_owned());
    frames
}

/// The answer as the Messages API streams it.
fn message_events(answer: &Answer, message: Value) -> Vec<String> {
    let event = |name: &str, data: Value| format!("event: {name}\ndata: {data}\n\n");
    let mut start = message.clone();
    start["content"] = json!([]);
    start["usage"]["output_tokens"] = json!(1);
    let mut frames = vec![event(
        "message_start",
        json!({"type": "message_start", "message": start}),
    )];
    // Each block: its start, its content in pieces, its stop.
    let mut blocks: Vec<(Value, &str, &str, String)> = Vec::new();
    if let Some(text) = &answer.content {
        blocks.push((
            json!({"type": "text", "text": ""}),
            "text_delta",
            "text",
            text.clone(),
        ));
    }
    for (id, name, arguments) in &answer.tool_calls {
        blocks.push((
            json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
            "input_json_delta",
            "partial_json",
            arguments.to_string(),
        ));
    }
    for (index, (start, kind, field, content)) in blocks.into_iter().enumerate() {
        frames.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for piece in pieces(&content) {
            frames.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": {"type": kind, field: piece}}),
            ));
        }
        frames.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    frames.push(event(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": message["stop_reason"]}, "usage": {"output_tokens": message["usage"]["output_tokens"]}}),
    ));
    frames.push(event("message_stop", json!({"type": "message_stop"})));
    frames
}

/// Counts the request (per model, per API, and as `streamed` when it asks
/// for a streamed answer), waits the script's latency, then injects its
/// faults or picks the scripted turn.
async fn answer(
    state: &MockState,
    api: &'static str,
    model: &str,
    messages: &[ChatMessage],
    tools_offered: bool,
    streamed: bool,
) -> Result<Answer, Response> {
    if let Ok(mut requests) = state.requests.lock() {
        *requests.entry(model.to_owned()).or_insert(0) += 1;
    }
    if let Ok(mut by_api) = state.by_api.lock() {
        *by_api.entry(api).or_insert(0) += 1;
        if streamed {
            *by_api.entry("streamed").or_insert(0) += 1;
        }
    }
    let script = state.script(model);
    let latency = match script.latency_ms {
        Latency::Fixed(ms) => ms,
        Latency::Range([low, high]) => rand::thread_rng().gen_range(low.min(high)..=high.max(low)),
    };
    if latency > 0 {
        tokio::time::sleep(Duration::from_millis(latency)).await;
    }
    if let Some(status) = script.fail_always {
        return Err(error_response(status, None));
    }
    if let Some(fault) = state.take_fault(model, &script.faults) {
        return Err(error_response(fault.status, fault.retry_after));
    }
    let index = turn_index(messages);
    let turn = script
        .turns
        .get(index)
        .or(script.turns.last())
        .cloned()
        .unwrap_or_else(|| MockTurn::text("This is a reply from the agentrun mock LLM."));
    // Offered no tools, a model cannot call one: it answers with the
    // script's first answer instead.
    let turn = match turn {
        MockTurn::ToolCalls { .. } if !tools_offered => script
            .turns
            .iter()
            .find(|t| matches!(t, MockTurn::Json { .. } | MockTurn::Content { .. }))
            .cloned()
            .unwrap_or_else(|| MockTurn::text("This is a final reply from the agentrun mock LLM.")),
        turn => turn,
    };
    let (content, tool_calls) = match turn {
        MockTurn::Hang { hang_ms } => {
            tokio::time::sleep(Duration::from_millis(hang_ms)).await;
            return Err(error_response(504, None));
        }
        MockTurn::Content { content } => (Some(content), Vec::new()),
        MockTurn::Json { json } => (Some(json.to_string()), Vec::new()),
        MockTurn::ToolCalls { tool_calls } => (
            None,
            tool_calls
                .into_iter()
                .enumerate()
                .map(|(i, call)| {
                    let arguments = if call.arguments.is_null() {
                        json!({})
                    } else {
                        call.arguments
                    };
                    (
                        format!("call_{}_{index}_{i}", messages.len()),
                        call.name,
                        arguments,
                    )
                })
                .collect::<Vec<_>>(),
        ),
    };
    let usage = script.usage.unwrap_or_else(|| {
        let prompt_chars: usize = messages.iter().map(ChatMessage::text_len).sum();
        let output_chars = content.as_deref().map_or(0, str::len)
            + tool_calls
                .iter()
                .map(|(id, name, arguments)| id.len() + name.len() + arguments.to_string().len())
                .sum::<usize>();
        Usage {
            prompt_tokens: estimate_tokens(prompt_chars),
            completion_tokens: estimate_tokens(output_chars).max(1),
        }
    });
    Ok(Answer {
        content,
        tool_calls,
        usage,
        chunk_delay: Duration::from_millis(script.chunk_delay_ms),
        breaks: streamed && state.take_break(model, script.stream_breaks),
    })
}

async fn complete(
    State(state): State<Arc<MockState>>,
    Json(request): Json<CompletionRequest>,
) -> Response {
    let answer = match answer(
        &state,
        "chat_completions",
        &request.model,
        &request.messages,
        may_call_tools(&request.tools, &request.tool_choice),
        request.stream,
    )
    .await
    {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let mut message = json!({"role": "assistant", "content": answer.content});
    let finish_reason = if answer.tool_calls.is_empty() {
        "stop"
    } else {
        message["tool_calls"] = answer
            .tool_calls
            .iter()
            .map(|(id, name, arguments)| {
                json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()},
                })
            })
            .collect();
        "tool_calls"
    };
    let usage = json!({
        "prompt_tokens": answer.usage.prompt_tokens,
        "completion_tokens": answer.usage.completion_tokens,
        "total_tokens": answer.usage.prompt_tokens + answer.usage.completion_tokens,
    });
    if request.stream {
        return event_stream(
            completion_chunks(&answer, finish_reason, usage),
            answer.chunk_delay,
            answer.breaks,
        );
    }
    Json(json!({
        "id": format!("chatcmpl-mock-{}", uuid::Uuid::new_v4().simple()),
        "object": "chat.completion",
        "created": chrono::Utc::now().timestamp(),
        "model": request.model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
        "usage": usage,
    }))
    .into_response()
}

/// `POST /v1/messages` in the Anthropic wire format.
#[derive(Deserialize)]
struct MessagesRequest {
    model: String,
    #[serde(default)]
    system: Option<String>,
    messages: Vec<WireTurn>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Value,
    #[serde(default)]
    stream: bool,
}

#[derive(Deserialize)]
struct WireTurn {
    role: String,
    content: WireContent,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum WireContent {
    Text(String),
    Blocks(Vec<Value>),
}

/// The Anthropic turns as the conversation they carry.
fn conversation(request: &MessagesRequest) -> Vec<ChatMessage> {
    let mut messages = Vec::new();
    if let Some(system) = &request.system {
        messages.push(ChatMessage::System {
            content: system.clone(),
        });
    }
    for turn in &request.messages {
        let blocks = match &turn.content {
            WireContent::Text(text) => vec![json!({"type": "text", "text": text})],
            WireContent::Blocks(blocks) => blocks.clone(),
        };
        let text_of = |block: &Value| block["text"].as_str().unwrap_or_default().to_owned();
        if turn.role == "assistant" {
            let text: String = blocks
                .iter()
                .filter(|b| b["type"] == "text")
                .map(text_of)
                .collect();
            messages.push(ChatMessage::Assistant {
                content: (!text.is_empty()).then_some(text),
                tool_calls: blocks
                    .iter()
                    .filter(|b| b["type"] == "tool_use")
                    .map(|b| crate::domain::ToolCall {
                        id: b["id"].as_str().unwrap_or_default().to_owned(),
                        kind: "function".to_owned(),
                        function: crate::domain::FunctionCall {
                            name: b["name"].as_str().unwrap_or_default().to_owned(),
                            arguments: b["input"].to_string(),
                        },
                    })
                    .collect(),
            });
            continue;
        }
        for block in &blocks {
            messages.push(if block["type"] == "tool_result" {
                ChatMessage::Tool {
                    tool_call_id: block["tool_use_id"].as_str().unwrap_or_default().to_owned(),
                    content: block["content"].as_str().unwrap_or_default().to_owned(),
                }
            } else {
                ChatMessage::User {
                    content: text_of(block),
                }
            });
        }
    }
    messages
}

fn invalid_request(message: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"type": "error", "error": {"type": "invalid_request_error", "message": message}})),
    )
        .into_response()
}

async fn messages(
    State(state): State<Arc<MockState>>,
    Json(request): Json<MessagesRequest>,
) -> Response {
    // As the API does: tool blocks need tools defined, and the turns
    // begin with a user turn.
    let blocks = request
        .messages
        .iter()
        .flat_map(|turn| match &turn.content {
            WireContent::Blocks(blocks) => blocks.clone(),
            WireContent::Text(_) => Vec::new(),
        });
    let tool_blocks = blocks
        .filter(|b| b["type"] == "tool_use" || b["type"] == "tool_result")
        .count();
    if request.tools.is_empty() && tool_blocks > 0 {
        return invalid_request(
            "requests which include tool_use or tool_result blocks must define tools",
        );
    }
    if request
        .messages
        .first()
        .is_none_or(|turn| turn.role != "user")
    {
        return invalid_request("the first message must use the user role");
    }
    let conversation = conversation(&request);
    let answer = match answer(
        &state,
        "messages",
        &request.model,
        &conversation,
        may_call_tools(&request.tools, &request.tool_choice),
        request.stream,
    )
    .await
    {
        Ok(answer) => answer,
        Err(response) => return response,
    };
    let mut content: Vec<Value> = answer
        .content
        .iter()
        .map(|text| json!({"type": "text", "text": text}))
        .collect();
    content.extend(answer.tool_calls.iter().map(|(id, name, arguments)| {
        json!({"type": "tool_use", "id": id, "name": name, "input": arguments})
    }));
    let stop_reason = if answer.tool_calls.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    let message = json!({
        "id": format!("msg_mock_{}", uuid::Uuid::new_v4().simple()),
        "type": "message",
        "role": "assistant",
        "model": request.model,
        "content": content,
        "stop_reason": stop_reason,
        "usage": {
            "input_tokens": answer.usage.prompt_tokens,
            "output_tokens": answer.usage.completion_tokens,
        },
    });
    if request.stream {
        return event_stream(
            message_events(&answer, message),
            answer.chunk_delay,
            answer.breaks,
        );
    }
    Json(message).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{FunctionCall, ToolCall};

    fn assistant_calling(name: &str) -> ChatMessage {
        ChatMessage::Assistant {
            content: None,
            tool_calls: vec![ToolCall {
                id: "1".into(),
                kind: "function".into(),
                function: FunctionCall {
                    name: name.into(),
                    arguments: "{}".into(),
                },
            }],
        }
    }

    #[test]
    fn turns_restart_after_a_handoff() {
        let user = ChatMessage::User {
            content: "hi".into(),
        };
        assert_eq!(turn_index(std::slice::from_ref(&user)), 0);
        assert_eq!(turn_index(&[user.clone(), assistant_calling("lookup")]), 1);
        assert_eq!(
            turn_index(&[
                user,
                assistant_calling("lookup"),
                assistant_calling("transfer_to_billing")
            ]),
            0
        );
    }

    #[test]
    fn faults_are_consumed_in_order() {
        let state = MockState::default();
        let faults = vec![
            Fault {
                status: 429,
                retry_after: Some(1.0),
                times: 2,
            },
            Fault {
                status: 500,
                retry_after: None,
                times: 1,
            },
        ];
        let taken: Vec<u16> = (0..4)
            .filter_map(|_| state.take_fault("m", &faults).map(|f| f.status))
            .collect();
        assert_eq!(taken, vec![429, 429, 500]);
    }

    #[test]
    fn scripts_parse_from_json() {
        let scripts = parse_scripts(
            r#"{"m": {"turns": [{"tool_calls": [{"name": "f", "arguments": {"a": 1}}]},
                                {"json": {"ok": true}}, {"content": "hi"}, {"hang_ms": 5}],
                      "latency_ms": [1, 5], "faults": [{"status": 429, "retry_after": 0.5}]}}"#,
        )
        .unwrap();
        let script = &scripts["m"];
        assert!(matches!(script.turns[0], MockTurn::ToolCalls { .. }));
        assert!(matches!(script.turns[1], MockTurn::Json { .. }));
        assert!(matches!(script.turns[2], MockTurn::Content { .. }));
        assert!(matches!(script.turns[3], MockTurn::Hang { .. }));
        assert_eq!(script.faults[0].times, 1);
    }
}
