//! Bounds on what a team may send (DESIGN §5). Each has its own error code;
//! the README and the OpenAPI document list the same numbers.

use super::ErrorCode;
use serde_json::Value;

/// The longest start of `text` of at most `max` bytes (cut at a character
/// boundary).
pub fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A request body (413 `body_too_large`).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// A run's `input`, as JSON (413 `input_too_large`).
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
/// A run's `metadata`, as JSON (413 `metadata_too_large`).
pub const MAX_METADATA_BYTES: usize = 16 * 1024;
/// Keys in `metadata` (400 `too_many_metadata_keys`).
pub const MAX_METADATA_KEYS: usize = 64;
/// Characters of a `metadata` key (400 `metadata_key_too_long`).
pub const MAX_METADATA_KEY_CHARS: usize = 128;
/// Characters of an agent's `instructions` (400 `instructions_too_long`).
pub const MAX_INSTRUCTIONS_CHARS: usize = 100_000;
/// Characters of a model name or a tool description (400 `value_too_long`).
pub const MAX_MODEL_CHARS: usize = 200;
pub const MAX_TOOL_DESCRIPTION_CHARS: usize = 4_000;
/// Tools and handoffs per agent (400 `too_many_tools`, `too_many_handoffs`).
pub const MAX_TOOLS: usize = 64;
pub const MAX_HANDOFFS: usize = 32;
/// An output schema or a tool's parameters, as JSON (400 `schema_too_large`)
/// and in nesting (400 `schema_too_deep`).
pub const MAX_SCHEMA_BYTES: usize = 64 * 1024;
pub const MAX_SCHEMA_DEPTH: usize = 32;
/// Numeric settings of an agent (400 `value_out_of_range`).
pub const MAX_REPAIRS: u32 = 5;
pub const MAX_OUTPUT_TOKENS: u32 = 65_536;
pub const MAX_INPUT_TOKEN_BUDGET: u32 = 2_000_000;
pub const MAX_RUN_TOKEN_BUDGET: u64 = 100_000_000;
pub const MAX_STEPS: u32 = 1_000;
pub const MAX_HANDOFF_DEPTH: u32 = 20;
pub const MAX_RUN_TIMEOUT_SECONDS: u32 = 86_400;
/// A tool call's timeout: with one LLM request it must fit one step's
/// time budget (see `policy::StepPolicy::step_budget`).
pub const MAX_TOOL_TIMEOUT_MS: u64 = 180_000;
/// A webhook's URL and secret, in characters (400 `invalid_agent` or
/// `invalid_body`).
pub const MAX_WEBHOOK_URL_CHARS: usize = 2_048;
pub const MAX_WEBHOOK_SECRET_CHARS: usize = 256;
/// Agents per team and versions per agent (409 `too_many_agents`,
/// `too_many_versions`).
pub const MAX_AGENTS_PER_TEAM: i64 = 500;
pub const MAX_VERSIONS_PER_AGENT: i32 = 1_000;
/// Characters of a cancel or switch-off reason (400 `invalid_body`).
pub const MAX_REASON_CHARS: usize = 1_000;
/// Page sizes of every list (400 `invalid_query`).
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 200;
/// Lines of one page of a month's statement.
pub const DEFAULT_STATEMENT_PAGE: i64 = 1_000;
pub const MAX_STATEMENT_PAGE: i64 = 10_000;
/// A response body stays well inside the 6 MB a buffered Lambda may answer:
/// a list page ends early (with a `next_cursor`) rather than grow past this.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;
/// A run shows its output and raw output inline up to this size together;
/// a larger one is read in parts from `/v1/runs/{id}/output`.
pub const MAX_INLINE_OUTPUT_BYTES: usize = 1024 * 1024;
/// A tool call's result in the steps listing is cut to this size; the whole
/// result is read in parts from its `result` link.
pub const MAX_LISTED_RESULT_BYTES: usize = 32 * 1024;
/// One part of a large text.
pub const PART_BYTES: usize = 1024 * 1024;

/// A bound that a request goes past.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct LimitExceeded {
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Where in the request (a JSON path such as `tools[3].parameters`).
    pub field: String,
    pub limit: u64,
    pub message: String,
}

impl LimitExceeded {
    pub fn new(
        code: ErrorCode,
        field: impl Into<String>,
        limit: impl TryInto<u64>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            code,
            field: field.into(),
            limit: limit.try_into().unwrap_or(u64::MAX),
            message: message.into(),
        }
    }

    /// Whether the bound is on size (413) rather than on a count or value (400).
    pub fn is_size(&self) -> bool {
        matches!(
            self.code,
            ErrorCode::BodyTooLarge | ErrorCode::InputTooLarge | ErrorCode::MetadataTooLarge
        )
    }
}

/// Bytes of `value` written as compact JSON.
pub fn json_len(value: &Value) -> usize {
    serde_json::to_vec(value)
        .map(|v| v.len())
        .unwrap_or(usize::MAX)
}

/// Levels of arrays and objects inside `value` (a scalar is 0).
pub fn json_depth(value: &Value) -> usize {
    match value {
        Value::Array(items) => 1 + items.iter().map(json_depth).max().unwrap_or(0),
        Value::Object(map) => 1 + map.values().map(json_depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A run's input and metadata within their bounds.
pub fn check_run_request(input: &Value, metadata: &Value) -> Result<(), LimitExceeded> {
    if json_len(input) > MAX_INPUT_BYTES {
        return Err(LimitExceeded::new(
            ErrorCode::InputTooLarge,
            "input",
            MAX_INPUT_BYTES,
            format!("input must be at most {MAX_INPUT_BYTES} bytes of JSON"),
        ));
    }
    if json_len(metadata) > MAX_METADATA_BYTES {
        return Err(LimitExceeded::new(
            ErrorCode::MetadataTooLarge,
            "metadata",
            MAX_METADATA_BYTES,
            format!("metadata must be at most {MAX_METADATA_BYTES} bytes of JSON"),
        ));
    }
    if let Value::Object(map) = metadata {
        if map.len() > MAX_METADATA_KEYS {
            return Err(LimitExceeded::new(
                ErrorCode::TooManyMetadataKeys,
                "metadata",
                MAX_METADATA_KEYS,
                format!("metadata may have at most {MAX_METADATA_KEYS} keys"),
            ));
        }
        if let Some(key) = map
            .keys()
            .find(|k| k.is_empty() || k.chars().count() > MAX_METADATA_KEY_CHARS)
        {
            return Err(LimitExceeded::new(
                ErrorCode::MetadataKeyTooLong,
                format!("metadata.{key}"),
                MAX_METADATA_KEY_CHARS,
                format!("metadata keys must be 1-{MAX_METADATA_KEY_CHARS} characters"),
            ));
        }
    }
    Ok(())
}

/// A JSON Schema within the size and nesting bounds.
pub fn check_schema(field: &str, schema: &Value) -> Result<(), LimitExceeded> {
    if json_len(schema) > MAX_SCHEMA_BYTES {
        return Err(LimitExceeded::new(
            ErrorCode::SchemaTooLarge,
            field,
            MAX_SCHEMA_BYTES,
            format!("a schema must be at most {MAX_SCHEMA_BYTES} bytes of JSON"),
        ));
    }
    if json_depth(schema) > MAX_SCHEMA_DEPTH {
        return Err(LimitExceeded::new(
            ErrorCode::SchemaTooDeep,
            field,
            MAX_SCHEMA_DEPTH,
            format!("a schema may nest at most {MAX_SCHEMA_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// A run's `limits.timeout_seconds` within what the orchestrator can
/// honour (`max`: the state machine's execution timeout, less the room its
/// last step and settlement need).
pub fn check_run_timeout(
    timeout_seconds: u32,
    max: std::time::Duration,
) -> Result<(), LimitExceeded> {
    if u64::from(timeout_seconds) > max.as_secs() {
        return Err(LimitExceeded::new(
            ErrorCode::TimeoutNotSupported,
            "limits.timeout_seconds",
            max.as_secs(),
            format!(
                "{timeout_seconds} s is longer than this deployment's state machine lets a run last; at most {} s",
                max.as_secs()
            ),
        ));
    }
    Ok(())
}

/// A number within `1..=max`.
pub fn check_range(field: &str, value: u64, min: u64, max: u64) -> Result<(), LimitExceeded> {
    if value < min || value > max {
        return Err(LimitExceeded::new(
            ErrorCode::ValueOutOfRange,
            field,
            max,
            format!("must be between {min} and {max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn depth_and_sizes_are_measured() {
        assert_eq!(json_depth(&json!(1)), 0);
        assert_eq!(json_depth(&json!({"a": [{"b": 1}]})), 3);
        assert!(check_schema("s", &json!({"type": "object"})).is_ok());
        let mut deep = json!({});
        for _ in 0..MAX_SCHEMA_DEPTH {
            deep = json!({"not": deep});
        }
        assert_eq!(
            check_schema("s", &deep).unwrap_err().code,
            ErrorCode::SchemaTooDeep
        );
        let keys: serde_json::Map<_, _> = (0..=MAX_METADATA_KEYS)
            .map(|i| (format!("k{i}"), json!(1)))
            .collect();
        assert_eq!(
            check_run_request(&json!("x"), &Value::Object(keys))
                .unwrap_err()
                .code,
            ErrorCode::TooManyMetadataKeys
        );
        let big = json!("x".repeat(MAX_INPUT_BYTES));
        let refused = check_run_request(&big, &json!({})).unwrap_err();
        assert!(refused.is_size());
        assert_eq!(
            check_range("n", 6, 0, 5).unwrap_err().code,
            ErrorCode::ValueOutOfRange
        );
    }
}
