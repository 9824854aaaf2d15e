//! Tool execution: HTTP webhooks (through the outbound guard) and built-ins,
//! each attempt under the tool's timeout (cut to what the step has left),
//! at most two retries, with an idempotency key per call.

use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::time::Instant;

use crate::domain::agent::Builtin;
use crate::domain::{RunId, ToolKind, ToolSpec};
use crate::ledger::ToolCallRecord;
use crate::outbound::{
    redacted_url, OutboundAllow, OutboundClient, OutboundResponse, DEFAULT_RESPONSE_CAP,
};

const MAX_RETRIES: u32 = 2;

/// The code of a call the step's time budget cut short (or left no time for).
pub const STEP_TIME_BUDGET: &str = "step_time_budget";

/// Identifies one tool call for idempotency: `run_id:step_no:call_index`.
#[derive(Clone, Copy, Debug)]
pub struct CallRef {
    pub run_id: RunId,
    pub step_no: i32,
    pub call_index: i32,
}

impl CallRef {
    pub fn idempotency_key(&self) -> String {
        format!("{}:{}:{}", self.run_id, self.step_no, self.call_index)
    }
}

#[derive(Clone)]
pub struct ToolRunner {
    outbound: OutboundClient,
}

enum Attempt {
    Done {
        result: String,
        truncated: bool,
    },
    /// Worth another try (timeout, connection failure, 5xx, 429).
    Transient(String),
    Failed(String),
    /// The outbound guard refused the destination; never retried.
    Blocked(String),
}

impl Attempt {
    fn done(result: String) -> Self {
        Attempt::Done {
            result,
            truncated: false,
        }
    }
}

/// What a call ended with.
struct CallResult {
    result: String,
    is_error: bool,
    truncated: bool,
    attempts: u32,
}

impl ToolRunner {
    /// HTTP tools may reach only public addresses, and what `allow` lists.
    pub fn new(allow: OutboundAllow) -> Self {
        Self {
            outbound: OutboundClient::new(allow),
        }
    }

    /// The guarded client, for every other request made on a team's
    /// behalf (webhook deliveries).
    pub fn outbound(&self) -> &OutboundClient {
        &self.outbound
    }

    /// Runs a call and returns its record; failures become error results the
    /// model can read, never a lost step. Nothing runs past `deadline`.
    pub async fn run(
        &self,
        spec: &ToolSpec,
        call_ref: CallRef,
        tool_call_id: &str,
        raw_arguments: &str,
        deadline: Instant,
    ) -> ToolCallRecord {
        let started_at = Utc::now();
        let parsed: Result<Value, _> = if raw_arguments.trim().is_empty() {
            Ok(json!({}))
        } else {
            serde_json::from_str(raw_arguments)
        };
        let (arguments, call) = match parsed {
            Err(e) => (
                Value::String(raw_arguments.to_owned()),
                CallResult {
                    result: json!({"error": format!("arguments are not valid JSON: {e}")})
                        .to_string(),
                    is_error: true,
                    truncated: false,
                    attempts: 0,
                },
            ),
            Ok(arguments) => {
                let call = self
                    .run_with_retries(spec, call_ref, &arguments, deadline)
                    .await;
                (arguments, call)
            }
        };
        ToolCallRecord {
            call_index: call_ref.call_index,
            tool_call_id: tool_call_id.to_owned(),
            name: spec.name.clone(),
            arguments,
            result: call.result,
            is_error: call.is_error,
            truncated: call.truncated,
            attempts: call.attempts as i32,
            started_at,
            finished_at: Utc::now(),
        }
    }

    async fn run_with_retries(
        &self,
        spec: &ToolSpec,
        call_ref: CallRef,
        arguments: &Value,
        deadline: Instant,
    ) -> CallResult {
        let timeout = Duration::from_millis(spec.timeout_ms);
        let error = |error: String, code: Option<&str>, attempts| CallResult {
            result: match code {
                Some(code) => json!({"error": error, "code": code}),
                None => json!({"error": error}),
            }
            .to_string(),
            is_error: true,
            truncated: false,
            attempts,
        };
        let mut attempt = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let message = "the step's time budget ran out before this call could be made";
                return error(message.to_owned(), Some(STEP_TIME_BUDGET), attempt);
            }
            attempt += 1;
            let cut = left < timeout;
            let outcome = match tokio::time::timeout(
                timeout.min(left),
                self.attempt(spec, call_ref, arguments),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) if cut => {
                    let message = format!(
                        "timed out after {} ms: the step's time budget ran out",
                        left.as_millis()
                    );
                    return error(message, Some(STEP_TIME_BUDGET), attempt);
                }
                Err(_) => Attempt::Transient(format!("timed out after {} ms", spec.timeout_ms)),
            };
            match outcome {
                Attempt::Done { result, truncated } => {
                    return CallResult {
                        result,
                        is_error: false,
                        truncated,
                        attempts: attempt,
                    }
                }
                Attempt::Failed(message) => return error(message, None, attempt),
                Attempt::Blocked(message) => {
                    tracing::warn!(tool = %spec.name, %message, "outbound call refused");
                    return error(message, Some("outbound_blocked"), attempt);
                }
                Attempt::Transient(message) if attempt > MAX_RETRIES => {
                    return error(message, None, attempt)
                }
                Attempt::Transient(message) => {
                    let url = match &spec.kind {
                        ToolKind::Http { url, .. } => redacted_url(url),
                        ToolKind::Builtin { .. } => String::new(),
                    };
                    let pause = Duration::from_millis(100 * (1 << attempt));
                    if Instant::now() + pause >= deadline {
                        return error(message, None, attempt);
                    }
                    tracing::warn!(tool = %spec.name, %url, attempt, error = %message, "tool call failed; retrying");
                    tokio::time::sleep(pause).await;
                }
            }
        }
    }

    async fn attempt(&self, spec: &ToolSpec, call_ref: CallRef, arguments: &Value) -> Attempt {
        match &spec.kind {
            ToolKind::Builtin { builtin, config } => {
                run_builtin(*builtin, config.as_ref(), arguments).await
            }
            ToolKind::Http { url, secret, .. } => {
                let body = json!({
                    "run_id": call_ref.run_id,
                    "step_no": call_ref.step_no,
                    "call_index": call_ref.call_index,
                    "tool": spec.name,
                    "arguments": arguments,
                })
                .to_string();
                let mut headers = vec![
                    ("content-type", "application/json".to_owned()),
                    ("idempotency-key", call_ref.idempotency_key()),
                ];
                if let Some(secret) = secret {
                    let timestamp = Utc::now().timestamp().to_string();
                    headers.push((
                        "x-agentrun-signature",
                        sign(secret.expose(), &timestamp, &body),
                    ));
                    headers.push(("x-agentrun-timestamp", timestamp));
                }
                let cap = spec.max_response_bytes.unwrap_or(DEFAULT_RESPONSE_CAP);
                match self.outbound.post(url, &headers, body, cap).await {
                    OutboundResponse::Blocked(reason) => Attempt::Blocked(reason),
                    OutboundResponse::Failed(reason) => Attempt::Transient(reason),
                    OutboundResponse::Answered { status, body } => {
                        if status.is_success() {
                            Attempt::Done {
                                result: body.text,
                                truncated: body.truncated,
                            }
                        } else if status.is_server_error() || status.as_u16() == 429 {
                            Attempt::Transient(format!("tool endpoint answered {status}"))
                        } else {
                            Attempt::Failed(format!(
                                "tool endpoint answered {status}: {}",
                                crate::domain::limits::prefix(&body.text, 500)
                            ))
                        }
                    }
                }
            }
        }
    }
}

/// `sha256=<hex HMAC-SHA256 of "timestamp.body">`: a receiver checks the
/// timestamp (sent as `X-Agentrun-Timestamp`, Unix seconds) is recent, so a
/// captured request cannot be replayed later.
pub fn sign(secret: &str, timestamp: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn run_builtin(builtin: Builtin, config: Option<&Value>, arguments: &Value) -> Attempt {
    match builtin {
        Builtin::Echo => Attempt::done(arguments.to_string()),
        Builtin::Now => Attempt::done(json!({"now": Utc::now().to_rfc3339()}).to_string()),
        Builtin::Sleep => {
            let ms = arguments
                .get("ms")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Attempt::done(json!({"slept_ms": ms}).to_string())
        }
        Builtin::Lookup => {
            let key_field = config
                .and_then(|c| c.get("key"))
                .and_then(Value::as_str)
                .unwrap_or("key");
            let Some(key) = arguments.get(key_field).and_then(Value::as_str) else {
                return Attempt::Failed(format!("argument {key_field:?} (a string) is required"));
            };
            match config.and_then(|c| c.get("table")).and_then(|t| t.get(key)) {
                Some(found) => Attempt::done(found.to_string()),
                None => Attempt::done(json!({"found": false, key_field: key}).to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stable_hex_hmacs() {
        let signature = sign("secret", "1700000000", "{}");
        assert!(signature.starts_with("sha256="));
        assert_eq!(signature.len(), 7 + 64);
        assert_eq!(signature, sign("secret", "1700000000", "{}"));
        assert_ne!(signature, sign("other", "1700000000", "{}"));
        assert_ne!(signature, sign("secret", "1700000001", "{}"));
    }

    #[tokio::test]
    async fn lookup_finds_rows_and_reports_misses() {
        let config = json!({"key": "email", "table": {"a@x.io": {"id": 7}}});
        match run_builtin(Builtin::Lookup, Some(&config), &json!({"email": "a@x.io"})).await {
            Attempt::Done { result, .. } => assert_eq!(result, r#"{"id":7}"#),
            _ => panic!("expected a hit"),
        }
        match run_builtin(Builtin::Lookup, Some(&config), &json!({"email": "b@x.io"})).await {
            Attempt::Done { result, .. } => assert!(result.contains("\"found\":false")),
            _ => panic!("expected a miss"),
        }
        assert!(matches!(
            run_builtin(Builtin::Lookup, Some(&config), &json!({})).await,
            Attempt::Failed(_)
        ));
    }
}
