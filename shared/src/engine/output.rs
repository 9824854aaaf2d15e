//! Final-answer validation against the agent's output JSON Schema.

use serde_json::Value;

/// Parses and validates a final answer. Without a schema the text itself is
/// the output. On failure, the list of problems for the repair prompt.
pub fn check_output(schema: Option<&Value>, content: &str) -> Result<Value, Vec<String>> {
    let Some(schema) = schema else {
        return Ok(Value::String(content.to_owned()));
    };
    let text = strip_code_fence(content.trim());
    let value: Value = serde_json::from_str(text)
        .map_err(|e| vec![format!("the answer is not valid JSON: {e}")])?;
    let validator = jsonschema::validator_for(schema)
        .map_err(|e| vec![format!("the output schema does not compile: {e}")])?;
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
        let schema =
            json!({"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}});
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
}
