//! Final-answer validation against the agent's output JSON Schema.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonschema::Validator;
use serde_json::Value;

use crate::domain::TeamId;
use crate::ledger::AgentVersion;

/// Compiled validators kept before the cache starts over.
const COMPILED_LIMIT: usize = 1_000;

/// Compiled validators by (team, agent, version).
type Compiled = HashMap<(TeamId, String, i32), Arc<Validator>>;

/// Output schemas compiled once per agent version, off the async runtime
/// (a large schema can take a while to compile).
#[derive(Clone, Default)]
pub struct OutputSchemas {
    compiled: Arc<Mutex<Compiled>>,
}

impl OutputSchemas {
    /// The agent version's output validator; `None` when it has no schema.
    pub async fn validator(
        &self,
        team: TeamId,
        agent: &AgentVersion,
    ) -> Result<Option<Arc<Validator>>, String> {
        let Some(schema) = agent.spec.output_schema.clone() else {
            return Ok(None);
        };
        let key = (team, agent.name.clone(), agent.version);
        if let Some(hit) = self.compiled.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(Some(hit));
        }
        let validator = tokio::task::spawn_blocking(move || jsonschema::validator_for(&schema))
            .await
            .map_err(|e| format!("compiling the output schema stopped: {e}"))?
            .map_err(|e| format!("the output schema does not compile: {e}"))?;
        let validator = Arc::new(validator);
        if let Ok(mut compiled) = self.compiled.lock() {
            if compiled.len() >= COMPILED_LIMIT {
                compiled.clear();
            }
            compiled.insert(key, validator.clone());
        }
        Ok(Some(validator))
    }
}

/// Parses and validates a final answer. Without a schema the text itself is
/// the output. On failure, the list of problems for the repair prompt.
pub fn check_output(validator: Option<&Validator>, content: &str) -> Result<Value, Vec<String>> {
    let Some(validator) = validator else {
        return Ok(Value::String(content.to_owned()));
    };
    let text = strip_code_fence(content.trim());
    let value: Value = serde_json::from_str(text)
        .map_err(|e| vec![format!("the answer is not valid JSON: {e}")])?;
    let problems: Vec<String> = validator
        .iter_errors(&value)
        .map(|error| {
            let path = error.instance_path().to_string();
            if path.is_empty() {
                error.to_string()
            } else {
                format!("{path}: {error}")
            }
        })
        .collect();
    if problems.is_empty() {
        Ok(value)
    } else {
        Err(problems)
    }
}

/// Models often wrap JSON in a Markdown fence; accept that.
fn strip_code_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let rest = rest.trim_start_matches(|c: char| c.is_ascii_alphanumeric());
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// The user message that asks the model to fix its answer.
pub fn repair_prompt(problems: &[String]) -> String {
    format!(
        "Your answer does not match the required output JSON Schema:\n- {}\nReply again with only a JSON value that satisfies the schema.",
        problems.join("\n- ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn valid_fenced_and_invalid_answers() {
        let schema = jsonschema::validator_for(
            &json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}}),
        )
        .unwrap();
        assert_eq!(
            check_output(Some(&schema), r#"{"a": 1}"#).unwrap(),
            json!({"a": 1})
        );
        assert_eq!(
            check_output(Some(&schema), "```json\n{\"a\": 2}\n```").unwrap(),
            json!({"a": 2})
        );
        let problems = check_output(Some(&schema), r#"{"a": "x"}"#).unwrap_err();
        assert!(problems[0].starts_with("/a"), "{problems:?}");
        assert!(check_output(Some(&schema), "not json").unwrap_err()[0].contains("not valid JSON"));
        assert_eq!(check_output(None, "free text").unwrap(), json!("free text"));
    }

    #[tokio::test]
    async fn a_versions_schema_is_compiled_once() {
        let spec = serde_json::from_value(json!({
            "model": "m", "instructions": "i", "output_schema": {"type": "integer"}
        }))
        .unwrap();
        let agent = AgentVersion {
            name: "a".to_owned(),
            version: 1,
            spec,
            created_at: chrono::Utc::now(),
        };
        let team = TeamId(uuid::Uuid::new_v4());
        let schemas = OutputSchemas::default();
        let first = schemas.validator(team, &agent).await.unwrap().unwrap();
        let again = schemas.validator(team, &agent).await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again));
        assert!(check_output(Some(&first), "7").is_ok());
        assert!(check_output(Some(&first), "\"x\"").is_err());
    }
}
