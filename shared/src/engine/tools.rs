//! Tool execution: HTTP webhooks and built-ins, each attempt under the tool's
//! timeout, at most two retries, with an idempotency key per call.

use std::time::Duration;

use chrono::Utc;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

use crate::domain::agent::Builtin;
use crate::domain::{RunId, ToolKind, ToolSpec};
use crate::ledger::ToolCallRecord;

const MAX_RETRIES: u32 = 2;

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
    http: reqwest::Client,
}

enum Attempt {
    Done(String),
    /// Worth another try (timeout, connection failure, 5xx, 429).
    Transient(String),
    Failed(String),
}

impl ToolRunner {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_default();
        Self { http }
    }

    /// Runs a call and returns its record; failures become error results the
    /// model can read, never a lost step.
    pub async fn run(
        &self,
        spec: &ToolSpec,
        call_ref: CallRef,
        tool_call_id: &str,
        raw_arguments: &str,
    ) -> ToolCallRecord {
        let started_at = Utc::now();
        let parsed: Result<Value, _> = if raw_arguments.trim().is_empty() {
            Ok(json!({}))
        } else {
            serde_json::from_str(raw_arguments)
        };
        let (arguments, result, is_error, attempts) = match parsed {
            Err(e) => (
                Value::String(raw_arguments.to_owned()),
                json!({"error": format!("arguments are not valid JSON: {e}")}).to_string(),
                true,
                0,
            ),
            Ok(arguments) => {
                let (result, is_error, attempts) =
                    self.run_with_retries(spec, call_ref, &arguments).await;
                (arguments, result, is_error, attempts)
            }
        };
        ToolCallRecord {
            call_index: call_ref.call_index,
            tool_call_id: tool_call_id.to_owned(),
            name: spec.name.clone(),
            arguments,
            result,
            is_error,
            attempts: attempts as i32,
            started_at,
            finished_at: Utc::now(),
        }
    }

    async fn run_with_retries(
        &self,
        spec: &ToolSpec,
        call_ref: CallRef,
        arguments: &Value,
    ) -> (String, bool, u32) {
        let timeout = Duration::from_millis(spec.timeout_ms);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let outcome = match tokio::time::timeout(
                timeout,
                self.attempt(spec, call_ref, arguments),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Transient(format!("timed out after {} ms", spec.timeout_ms)),
            };
            match outcome {
                Attempt::Done(result) => return (result, false, attempt),
                Attempt::Failed(error) => {
                    return (json!({"error": error}).to_string(), true, attempt)
                }
                Attempt::Transient(error) if attempt > MAX_RETRIES => {
                    return (json!({"error": error}).to_string(), true, attempt)
                }
                Attempt::Transient(error) => {
                    tracing::warn!(tool = %spec.name, attempt, %error, "tool call failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100 * (1 << attempt))).await;
                }
            }
        }
    }

    async fn attempt(&self, spec: &ToolSpec, call_ref: CallRef, arguments: &Value) -> Attempt {
        match &spec.kind {
            ToolKind::Builtin { builtin, config } => {
                run_builtin(*builtin, config.as_ref(), arguments).await
            }
            ToolKind::Http { url, secret } => {
                let body = json!({
                    "run_id": call_ref.run_id,
                    "step_no": call_ref.step_no,
                    "call_index": call_ref.call_index,
                    "tool": spec.name,
                    "arguments": arguments,
                })
                .to_string();
                let mut request = self
                    .http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("idempotency-key", call_ref.idempotency_key());
                if let Some(secret) = secret {
                    request = request.header("x-agentrun-signature", sign(secret, &body));
                }
                let response = match request.body(body).send().await {
                    Ok(response) => response,
                    Err(e) => return Attempt::Transient(format!("request failed: {e}")),
                };
                let status = response.status();
                let text = match response.text().await {
                    Ok(text) => text,
                    Err(e) => {
                        return Attempt::Transient(format!("reading the response failed: {e}"))
                    }
                };
                if status.is_success() {
                    Attempt::Done(text)
                } else if status.is_server_error() || status.as_u16() == 429 {
                    Attempt::Transient(format!("tool endpoint answered {status}"))
                } else {
                    Attempt::Failed(format!(
                        "tool endpoint answered {status}: {}",
                        truncate(&text, 500)
                    ))
                }
            }
        }
    }
}

impl Default for ToolRunner {
    fn default() -> Self {
        Self::new()
    }
}

fn truncate(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// `sha256=<hex HMAC-SHA256 of the body>`.
pub fn sign(secret: &str, body: &str) -> String {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(body.as_bytes());
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

async fn run_builtin(builtin: Builtin, config: Option<&Value>, arguments: &Value) -> Attempt {
    match builtin {
        Builtin::Echo => Attempt::Done(arguments.to_string()),
        Builtin::Now => Attempt::Done(json!({"now": Utc::now().to_rfc3339()}).to_string()),
        Builtin::Sleep => {
            let ms = arguments
                .get("ms")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(60_000);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Attempt::Done(json!({"slept_ms": ms}).to_string())
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
                Some(found) => Attempt::Done(found.to_string()),
                None => Attempt::Done(json!({"found": false, key_field: key}).to_string()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stable_hex_hmacs() {
        let signature = sign("secret", "{}");
        assert!(signature.starts_with("sha256="));
        assert_eq!(signature.len(), 7 + 64);
        assert_eq!(signature, sign("secret", "{}"));
        assert_ne!(signature, sign("other", "{}"));
    }

    #[tokio::test]
    async fn lookup_finds_rows_and_reports_misses() {
        let config = json!({"key": "email", "table": {"a@x.io": {"id": 7}}});
        match run_builtin(Builtin::Lookup, Some(&config), &json!({"email": "a@x.io"})).await {
            Attempt::Done(text) => assert_eq!(text, r#"{"id":7}"#),
            _ => panic!("expected a hit"),
        }
        match run_builtin(Builtin::Lookup, Some(&config), &json!({"email": "b@x.io"})).await {
            Attempt::Done(text) => assert!(text.contains("\"found\":false")),
            _ => panic!("expected a miss"),
        }
        assert!(matches!(
            run_builtin(Builtin::Lookup, Some(&config), &json!({})).await,
            Attempt::Failed(_)
        ));
    }
}
