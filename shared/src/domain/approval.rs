//! Approvals: which calls need a person's yes before they are made, and
//! the answers people give.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::RunId;

/// A condition's text: `<field> <op> <literal>`, the field a dotted path
/// into the call's arguments, the literal a JSON number, string, `true`,
/// `false` or `null` (e.g. `amount_cents > 5000`).
pub const CONDITION_PATTERN: &str = r#"^\s*[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*\s*(==|!=|>=|<=|>|<)\s*(-?[0-9]+(\.[0-9]+)?|"[^"\\]*"|true|false|null)\s*$"#;

/// When a tool's calls need approval: always (`true`), never (`false`), or
/// when a condition on the call's arguments holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ApprovalRule {
    Always(bool),
    When(ApprovalCondition),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalCondition {
    pub when: String,
}

impl ApprovalRule {
    /// Whether a call with these (raw) arguments needs approval. A condition
    /// that cannot be evaluated — arguments that are not JSON, a field that
    /// is missing or of another type — needs it: the safe answer.
    pub fn applies(&self, raw_arguments: &str) -> bool {
        match self {
            ApprovalRule::Always(yes) => *yes,
            ApprovalRule::When(condition) => {
                let Ok(condition) = Condition::parse(&condition.when) else {
                    return true;
                };
                let arguments: Value = if raw_arguments.trim().is_empty() {
                    Value::Object(Default::default())
                } else {
                    match serde_json::from_str(raw_arguments) {
                        Ok(arguments) => arguments,
                        Err(_) => return true,
                    }
                };
                condition.holds(&arguments).unwrap_or(true)
            }
        }
    }

    /// What is wrong with the rule, if anything.
    pub fn problem(&self) -> Option<String> {
        match self {
            ApprovalRule::Always(_) => None,
            ApprovalRule::When(condition) => Condition::parse(&condition.when).err(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Ge,
    Le,
    Gt,
    Lt,
}

/// A parsed `<field> <op> <literal>`.
#[derive(Clone, Debug, PartialEq)]
struct Condition {
    path: Vec<String>,
    op: Op,
    literal: Value,
}

impl Condition {
    fn parse(text: &str) -> Result<Self, String> {
        let invalid = || {
            format!(
                "condition {text:?} must read `<field> <op> <value>`: a field of the arguments (dotted for nested ones), one of == != >= <= > <, and a JSON number, string, true, false or null"
            )
        };
        let text = text.trim();
        let field_end = text
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
            .ok_or_else(invalid)?;
        let path: Vec<String> = text[..field_end].split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(invalid());
        }
        let rest = text[field_end..].trim_start();
        let (op, rest) = [
            ("==", Op::Eq),
            ("!=", Op::Ne),
            (">=", Op::Ge),
            ("<=", Op::Le),
            (">", Op::Gt),
            ("<", Op::Lt),
        ]
        .into_iter()
        .find_map(|(token, op)| rest.strip_prefix(token).map(|rest| (op, rest)))
        .ok_or_else(invalid)?;
        let literal: Value = serde_json::from_str(rest.trim()).map_err(|_| invalid())?;
        if literal.is_array() || literal.is_object() {
            return Err(invalid());
        }
        Ok(Self { path, op, literal })
    }

    /// `None` when the field is missing or cannot be compared (ordering
    /// compares two numbers, or two strings).
    fn holds(&self, arguments: &Value) -> Option<bool> {
        use std::cmp::Ordering;
        let value = self
            .path
            .iter()
            .try_fold(arguments, |value, key| value.get(key))?;
        let order = match (value, &self.literal) {
            (Value::Number(a), Value::Number(b)) => a.as_f64()?.partial_cmp(&b.as_f64()?),
            (Value::String(a), Value::String(b)) => Some(a.cmp(b)),
            _ => None,
        };
        Some(match self.op {
            Op::Eq => order.map_or(*value == self.literal, |o| o == Ordering::Equal),
            Op::Ne => order.map_or(*value != self.literal, |o| o != Ordering::Equal),
            Op::Ge => order? != Ordering::Less,
            Op::Le => order? != Ordering::Greater,
            Op::Gt => order? == Ordering::Greater,
            Op::Lt => order? == Ordering::Less,
        })
    }
}

/// What a request is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalKind {
    Tool,
    Handoff,
}

impl ApprovalKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalKind::Tool => "tool",
            ApprovalKind::Handoff => "handoff",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    Pending,
    Approved,
    Rejected,
}

impl ApprovalStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStatus::Pending => "pending",
            ApprovalStatus::Approved => "approved",
            ApprovalStatus::Rejected => "rejected",
        }
    }
}

impl std::str::FromStr for ApprovalStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            ApprovalStatus::Pending,
            ApprovalStatus::Approved,
            ApprovalStatus::Rejected,
        ]
        .into_iter()
        .find(|status| status.as_str() == s)
        .ok_or_else(|| format!("unknown approval status {s:?}"))
    }
}

impl fmt::Display for ApprovalStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call waiting for (or given) a person's answer.
#[derive(Clone, Debug, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Approval {
    /// The request id answers name.
    pub request_id: Uuid,
    pub run_id: RunId,
    pub step_no: i32,
    /// The call's place in the model's turn.
    pub call_index: i32,
    pub kind: ApprovalKind,
    /// The tool called, or the agent handed off to.
    pub name: String,
    /// The arguments the model gave.
    #[schema(value_type = Object)]
    pub arguments: Value,
    pub status: ApprovalStatus,
    pub comment: Option<String>,
    /// The arguments the call was approved with, when the person changed them.
    #[schema(value_type = Option<Object>)]
    pub approved_arguments: Option<Value>,
    pub requested_at: DateTime<Utc>,
    /// Unanswered by then, the run ends `cancelled` (`approval_timeout`).
    pub expires_at: DateTime<Utc>,
    pub answered_at: Option<DateTime<Utc>>,
}

/// A person's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct ApprovalAnswer {
    pub approve: bool,
    pub comment: Option<String>,
    /// Replaces the model's arguments (approved calls only).
    pub arguments: Option<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn when(text: &str) -> ApprovalRule {
        ApprovalRule::When(ApprovalCondition {
            when: text.to_owned(),
        })
    }

    #[test]
    fn conditions_compare_the_arguments_and_fail_safe() {
        let rule = when("amount_cents > 5000");
        assert!(rule.applies(r#"{"amount_cents": 7900}"#));
        assert!(!rule.applies(r#"{"amount_cents": 4900}"#));
        assert!(!rule.applies(r#"{"amount_cents": 5000}"#));
        // Missing, of another type, or not JSON: approval is asked.
        assert!(rule.applies(r#"{"amount": 1}"#));
        assert!(rule.applies(r#"{"amount_cents": "lots"}"#));
        assert!(rule.applies("not json"));
        assert!(when(r#"customer.tier == "gold""#).applies(r#"{"customer": {"tier": "gold"}}"#));
        assert!(!when(r#"customer.tier != "gold""#).applies(r#"{"customer": {"tier": "gold"}}"#));
        assert!(when("express == true").applies(r#"{"express": true}"#));
        assert!(when("n <= 2.5").applies(r#"{"n": 2}"#));
        assert!(ApprovalRule::Always(true).applies("{}"));
        assert!(!ApprovalRule::Always(false).applies("{}"));
    }

    #[test]
    fn bad_conditions_are_refused_with_a_reason() {
        for text in [
            "amount",
            "> 5",
            "amount >",
            "amount ~ 5",
            "a..b == 1",
            "a == [1]",
            "a == x",
        ] {
            assert!(when(text).problem().is_some(), "{text}");
        }
        assert!(when(" amount_cents>=5000 ").problem().is_none());
        let pattern = regex_lite_match(CONDITION_PATTERN);
        for text in [
            "amount_cents > 5000",
            r#"a.b == "x""#,
            "x != null",
            "y <= -1.5",
        ] {
            assert!(pattern(text), "{text}");
            assert!(when(text).problem().is_none(), "{text}");
        }
    }

    /// The pattern the API documents accepts what the parser accepts.
    fn regex_lite_match(pattern: &str) -> impl Fn(&str) -> bool {
        let compiled = jsonschema::validator_for(&serde_json::json!({"pattern": pattern}))
            .expect("the condition pattern compiles");
        move |text| compiled.is_valid(&Value::String(text.to_owned()))
    }
}
