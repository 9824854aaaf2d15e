//! Agent configurations: what a team stores with `PUT /v1/agents/{name}`.

use super::approval::ApprovalRule;
use super::ErrorCode;
use crate::secret::Secret;
use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::limits::{
    check_range, check_schema, LimitExceeded, MAX_HANDOFFS, MAX_HANDOFF_DEPTH,
    MAX_INPUT_TOKEN_BUDGET, MAX_INSTRUCTIONS_CHARS, MAX_MODEL_CHARS, MAX_OUTPUT_TOKENS,
    MAX_REPAIRS, MAX_RUN_TIMEOUT_SECONDS, MAX_RUN_TOKEN_BUDGET, MAX_STEPS, MAX_TOOLS,
    MAX_TOOL_DESCRIPTION_CHARS, MAX_TOOL_TIMEOUT_MS, MAX_WEBHOOK_SECRET_CHARS,
    MAX_WEBHOOK_URL_CHARS,
};

/// Prefix of the tools generated for handoffs: `transfer_to_<agent>`.
pub const HANDOFF_TOOL_PREFIX: &str = "transfer_to_";

/// What `AgentName::parse` accepts, as a regular expression.
pub const AGENT_NAME_PATTERN: &str = "^[a-z][a-z0-9_-]{0,63}$";

/// A validated agent name: 1–64 chars of `a-z 0-9 - _`, starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AgentName(String);

impl utoipa::PartialSchema for AgentName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::api::openapi::agent_name_string().into()
    }
}

impl utoipa::ToSchema for AgentName {}

impl AgentName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_');
        let starts_with_letter = raw.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if raw.is_empty() || raw.len() > 64 || !valid_chars || !starts_with_letter {
            return Err(format!(
                "agent name {raw:?} must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter"
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The handoff tool that transfers control to this agent.
    pub fn handoff_tool(&self) -> String {
        format!("{HANDOFF_TOOL_PREFIX}{}", self.0.replace('-', "_"))
    }
}

impl TryFrom<String> for AgentName {
    type Error = String;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<AgentName> for String {
    fn from(value: AgentName) -> Self {
        value.0
    }
}

impl fmt::Display for AgentName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The body of `PUT /v1/agents/{name}`; stored as JSONB, immutable per version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Which API the model is called through.
    #[serde(default, skip_serializing_if = "Provider::is_default")]
    pub provider: Provider,
    /// Model name sent to the provider.
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub model: String,
    /// The model that summarizes the oldest turns when a prompt would
    /// exceed `input_token_budget` (the agent's own model unless set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 200, pattern = r"\S")]
    pub summarizer_model: Option<String>,
    /// The system prompt.
    #[schema(max_length = 100000)]
    pub instructions: String,
    /// The tools the model may call; tool names are unique.
    #[serde(default)]
    #[schema(max_items = 64)]
    pub tools: Vec<ToolSpec>,
    /// Agents this one may hand off to (each becomes a `transfer_to_<agent>` tool).
    #[serde(default)]
    #[schema(schema_with = crate::api::openapi::handoffs)]
    pub handoffs: Vec<AgentName>,
    /// JSON Schema the final answer must satisfy (at most 64 KiB and 32
    /// levels); without it the answer is free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub output_schema: Option<Value>,
    /// Upper bound on completion tokens per LLM call.
    #[serde(default = "default_max_output_tokens")]
    #[schema(minimum = 1, maximum = 65536, default = default_max_output_tokens)]
    pub max_output_tokens: u32,
    /// When the estimated prompt exceeds this, the oldest tool results are abbreviated.
    #[serde(default = "default_input_token_budget")]
    #[schema(minimum = 1, maximum = 2000000, default = default_input_token_budget)]
    pub input_token_budget: u32,
    /// Repair prompts allowed after an answer fails its schema.
    #[serde(default = "default_max_repairs")]
    #[schema(minimum = 0, maximum = 5, default = default_max_repairs)]
    pub max_repairs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 0, maximum = 2)]
    pub temperature: Option<f32>,
    /// At the last step `limits.max_steps` allows, or when the next call
    /// would cross the run's token budget, the model gets one final turn
    /// without tools to give its best answer (in the output schema); the
    /// run then succeeds with `wound_down`. Off, those limits end the run
    /// at once.
    #[serde(default = "default_wind_down", skip_serializing_if = "is_true")]
    #[schema(default = true)]
    pub wind_down: bool,
    /// The model is called in streaming mode, and stream subscribers get
    /// its text as `llm.delta` events while it writes (ephemeral: no id,
    /// never stored or replayed; `llm.completed` follows as always).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub stream: bool,
    /// Handoffs wait for a person's yes, as tools with `requires_approval`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(default = false)]
    pub handoffs_require_approval: bool,
    /// How long a run waits for answers to its approval requests before it
    /// ends `cancelled` (`approval_timeout`). The run's wall-clock limit
    /// keeps counting while it waits.
    #[serde(
        default = "default_approval_timeout_seconds",
        skip_serializing_if = "is_default_approval_timeout"
    )]
    #[schema(minimum = 1, maximum = 86400, default = default_approval_timeout_seconds)]
    pub approval_timeout_seconds: u32,
    /// Run-wide limits; taken from the agent a run starts with.
    #[serde(default)]
    pub limits: RunLimits,
    /// Where the end of this agent's runs is announced (a run may name
    /// its own instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookSpec>,
}

/// The API an agent's model is called through.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// OpenAI-compatible Chat Completions.
    #[default]
    Openai,
    /// Anthropic Messages.
    Anthropic,
}

impl Provider {
    pub fn is_default(&self) -> bool {
        *self == Provider::default()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Openai => "openai",
            Provider::Anthropic => "anthropic",
        }
    }
}

/// An agent's webhook: its runs' ends are POSTed to `url`, signed like
/// HTTP tools with `secret` (write-only: the API never shows it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// An http(s) URL; internal addresses are refused unless the operator
    /// allows them.
    #[schema(format = "uri", pattern = "^https?://", max_length = 2048)]
    pub url: String,
    /// Signs every delivery; never shown by reads. Give it or `keep_secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, min_length = 1, max_length = 256, pattern = r"\S", write_only)]
    pub secret: Option<Secret>,
    /// In a new version: keep the secret the webhook had in the latest
    /// version.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schema(write_only)]
    pub keep_secret: bool,
}

/// Where one run's end is announced, resolved at acceptance (the run's
/// own, or its agent's) and kept with the run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub secret: Secret,
}

impl Webhook {
    /// What is wrong with a webhook's URL or secret, if anything.
    pub fn problems(url: &str, secret: Option<&str>) -> Vec<String> {
        let mut problems = Vec::new();
        let parsed = url::Url::parse(url);
        // A URI is ASCII (RFC 3986): an international host is written in
        // its punycode form.
        if !url.is_ascii()
            || !parsed
                .as_ref()
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
        {
            problems.push("webhook.url must be an http(s) URL (ASCII)".to_owned());
        }
        if url.chars().count() > MAX_WEBHOOK_URL_CHARS {
            problems.push(format!(
                "webhook.url must be at most {MAX_WEBHOOK_URL_CHARS} characters"
            ));
        }
        match secret {
            Some(secret) if secret.trim().is_empty() => {
                problems.push("webhook.secret must not be empty".to_owned())
            }
            Some(secret) if secret.chars().count() > MAX_WEBHOOK_SECRET_CHARS => problems.push(
                format!("webhook.secret must be at most {MAX_WEBHOOK_SECRET_CHARS} characters"),
            ),
            Some(_) => {}
            None => problems
                .push("webhook.secret is required: every delivery is signed with it".to_owned()),
        }
        problems
    }
}

fn default_wind_down() -> bool {
    true
}
fn is_true(value: &bool) -> bool {
    *value
}
fn default_approval_timeout_seconds() -> u32 {
    3600
}
fn is_default_approval_timeout(value: &u32) -> bool {
    *value == default_approval_timeout_seconds()
}
fn default_max_output_tokens() -> u32 {
    1024
}
fn default_input_token_budget() -> u32 {
    32_000
}
fn default_max_repairs() -> u32 {
    2
}

/// Kill switches that hold for a whole run, across handoffs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct RunLimits {
    /// LLM steps a run may take.
    #[schema(minimum = 1, maximum = 1000)]
    pub max_steps: u32,
    /// Input plus output tokens a run may spend.
    #[schema(minimum = 1, maximum = 100000000)]
    pub run_token_budget: u64,
    /// Handoffs a run may make.
    #[schema(minimum = 0, maximum = 20)]
    pub max_handoff_depth: u32,
    /// Wall-clock cap from the run's start (the deployment may allow less).
    #[schema(minimum = 1, maximum = 86400)]
    pub timeout_seconds: u32,
}

impl Default for RunLimits {
    fn default() -> Self {
        Self {
            max_steps: 25,
            run_token_budget: 200_000,
            max_handoff_depth: 5,
            timeout_seconds: 600,
        }
    }
}

/// A tool the model may call. (Unknown fields are refused by `ToolKind`,
/// which receives every field this struct does not name.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments.
    #[serde(default = "empty_object_schema")]
    pub parameters: Value,
    #[serde(flatten)]
    pub kind: ToolKind,
    /// Per-attempt timeout.
    #[serde(default = "default_tool_timeout_ms")]
    pub timeout_ms: u64,
    /// Bytes of an HTTP tool's response kept (default 1 MiB, at most 8 MiB);
    /// a longer response is cut and marked `truncated`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_bytes: Option<usize>,
    /// Calls wait for a person's yes: always, or when a condition on the
    /// arguments holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requires_approval: Option<ApprovalRule>,
}

impl ToolSpec {
    /// Whether a call with these arguments waits for approval.
    pub fn needs_approval(&self, raw_arguments: &str) -> bool {
        self.requires_approval
            .as_ref()
            .is_some_and(|rule| rule.applies(raw_arguments))
    }
}

/// The wire shape of a tool: one object, its `kind` naming which of the
/// kind's fields apply (`url`, `secret`, `keep_secret` for `http`;
/// `builtin`, `config` for `builtin`). Reads show `secret_set` in place of
/// the secret.
impl utoipa::PartialSchema for ToolSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{SchemaFormat, SchemaType, Type};
        use utoipa::openapi::ObjectBuilder;
        let typed = |kind: Type| ObjectBuilder::new().schema_type(kind);
        let nullable = |kind: Type| {
            ObjectBuilder::new().schema_type(SchemaType::from_iter([kind, Type::Null]))
        };
        ObjectBuilder::new()
            .property(
                "name",
                typed(Type::String)
                    .pattern(Some("^[A-Za-z0-9_-]{1,64}$"))
                    .description(Some(format!("Unique in the agent; not starting with {HANDOFF_TOOL_PREFIX}"))),
            )
            .required("name")
            .property(
                "description",
                typed(Type::String).max_length(Some(MAX_TOOL_DESCRIPTION_CHARS)),
            )
            .property(
                "parameters",
                typed(Type::Object).description(Some(
                    "JSON Schema of the arguments; at most 64 KiB and 32 levels",
                )),
            )
            .property(
                "kind",
                typed(Type::String).enum_values(Some(["http", "builtin"])),
            )
            .required("kind")
            .property(
                "timeout_ms",
                typed(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(MAX_TOOL_TIMEOUT_MS))
                    .default(Some(default_tool_timeout_ms().into()))
                    .description(Some("Per-attempt timeout")),
            )
            .property(
                "max_response_bytes",
                nullable(Type::Integer)
                    .minimum(Some(1))
                    .maximum(Some(crate::outbound::MAX_RESPONSE_CAP))
                    .description(Some(
                        "Bytes of the response kept (default 1048576); longer answers are stored cut and marked truncated",
                    )),
            )
            .property(
                "url",
                typed(Type::String)
                    .format(Some(SchemaFormat::Custom("uri".to_owned())))
                    .pattern(Some("^https?://"))
                    .description(Some(
                        "http: an http(s) URL; internal addresses are refused unless the operator allows them",
                    )),
            )
            .property(
                "secret",
                nullable(Type::String)
                    .min_length(Some(1))
                    .write_only(true)
                    .description(Some(
                        "http: signs calls (X-Agentrun-Timestamp, X-Agentrun-Signature: sha256=HMAC of timestamp.body); never shown by reads",
                    )),
            )
            .property(
                "keep_secret",
                typed(Type::Boolean)
                    .write_only(true)
                    .description(Some("http: keep the secret this tool had in the latest version")),
            )
            .property(
                "secret_set",
                typed(Type::Boolean)
                    .read_only(true)
                    .description(Some("The tool has a secret")),
            )
            .property("requires_approval", approval_rule_schema())
            .property("builtin", Builtin::schema())
            .property(
                "config",
                ObjectBuilder::new()
                    .schema_type(SchemaType::AnyValue)
                    .description(Some("builtin: its data (for lookup, the table to look in)")),
            )
            .into()
    }
}

impl utoipa::ToSchema for ToolSpec {}

/// `true`, `false`, or `{"when": "<field> <op> <value>"}`.
fn approval_rule_schema() -> utoipa::openapi::schema::Schema {
    use utoipa::openapi::schema::{AdditionalProperties, OneOfBuilder, Type};
    use utoipa::openapi::ObjectBuilder;
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Boolean))
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Object)
                .property(
                    "when",
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .max_length(Some(MAX_CONDITION_CHARS))
                        .pattern(Some(super::approval::CONDITION_PATTERN)),
                )
                .required("when")
                .additional_properties(Some(AdditionalProperties::FreeForm(false))),
        )
        .description(Some(
            "Calls wait for a person's yes (POST /v1/runs/{id}/approvals/{request_id}): always, or when a condition on the arguments holds, e.g. {\"when\": \"amount_cents > 5000\"}; a condition that cannot be evaluated asks",
        ))
        .build()
        .into()
}

/// The longest approval condition.
pub const MAX_CONDITION_CHARS: usize = 500;

fn empty_object_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}
fn default_tool_timeout_ms() -> u64 {
    10_000
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolKind {
    /// POST the call as JSON to `url`; the response body is the result.
    Http {
        url: String,
        /// When set, requests carry `X-Agentrun-Timestamp` and
        /// `X-Agentrun-Signature: sha256=<hex HMAC of "timestamp.body">`.
        /// Write-only: the API never shows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        secret: Option<Secret>,
        /// In a new version: keep the secret this tool had in the latest
        /// version (resolved when the version is stored; never stored itself).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        keep_secret: bool,
    },
    /// Runs inside agentrun.
    Builtin {
        builtin: Builtin,
        /// Builtin-specific data (for `lookup`, the table to look in).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        config: Option<Value>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Builtin {
    /// Returns its arguments.
    Echo,
    /// Waits `ms` milliseconds (at most 60,000), then returns.
    Sleep,
    /// Returns the current UTC time.
    Now,
    /// Looks `arguments[config.key]` up in `config.table`.
    Lookup,
}

impl AgentSpec {
    /// The spec as the API shows it: each tool's `secret` replaced by
    /// `"secret_set": true`.
    pub fn redacted(&self) -> Value {
        let mut shown = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Some(tools) = shown.get_mut("tools").and_then(Value::as_array_mut) {
            for tool in tools.iter_mut().filter_map(Value::as_object_mut) {
                if tool.remove("secret").is_some() {
                    tool.insert("secret_set".to_owned(), Value::Bool(true));
                }
            }
        }
        if let Some(webhook) = shown.get_mut("webhook").and_then(Value::as_object_mut) {
            if webhook.remove("secret").is_some() {
                webhook.insert("secret_set".to_owned(), Value::Bool(true));
            }
        }
        shown
    }

    /// Whether any tool or the webhook asks to keep its previous secret.
    pub fn keeps_a_secret(&self) -> bool {
        self.webhook.as_ref().is_some_and(|w| w.keep_secret)
            || self.tools.iter().any(|tool| {
                matches!(
                    tool.kind,
                    ToolKind::Http {
                        keep_secret: true,
                        ..
                    }
                )
            })
    }

    /// Resolves `keep_secret` against the tools and webhook of `previous`
    /// (the latest stored version); returns the names of tools (and
    /// `webhook`) with nothing to keep.
    pub fn keep_secrets_from(&mut self, previous: Option<&AgentSpec>) -> Vec<String> {
        let mut missing = Vec::new();
        if let Some(webhook) = self.webhook.as_mut().filter(|w| w.keep_secret) {
            match previous
                .and_then(|p| p.webhook.as_ref())
                .and_then(|w| w.secret.clone())
            {
                Some(kept) => {
                    webhook.secret = Some(kept);
                    webhook.keep_secret = false;
                }
                None => missing.push("webhook".to_owned()),
            }
        }
        for tool in &mut self.tools {
            let name = tool.name.clone();
            if let ToolKind::Http {
                secret,
                keep_secret,
                ..
            } = &mut tool.kind
            {
                if !*keep_secret {
                    continue;
                }
                let kept = previous
                    .and_then(|p| p.tools.iter().find(|t| t.name == name))
                    .and_then(|t| match &t.kind {
                        ToolKind::Http { secret, .. } => secret.clone(),
                        ToolKind::Builtin { .. } => None,
                    });
                match kept {
                    Some(kept) => {
                        *secret = Some(kept);
                        *keep_secret = false;
                    }
                    None => missing.push(name),
                }
            }
        }
        missing
    }

    /// The size, count and range bounds of `limits`, checked before
    /// anything is compiled; the first one passed.
    pub fn check_limits(&self) -> Result<(), LimitExceeded> {
        if self.model.chars().count() > MAX_MODEL_CHARS {
            return Err(LimitExceeded::new(
                ErrorCode::ValueTooLong,
                "model",
                MAX_MODEL_CHARS,
                format!("model must be at most {MAX_MODEL_CHARS} characters"),
            ));
        }
        if self.instructions.chars().count() > MAX_INSTRUCTIONS_CHARS {
            return Err(LimitExceeded::new(
                ErrorCode::InstructionsTooLong,
                "instructions",
                MAX_INSTRUCTIONS_CHARS,
                format!("instructions must be at most {MAX_INSTRUCTIONS_CHARS} characters"),
            ));
        }
        if self.tools.len() > MAX_TOOLS {
            return Err(LimitExceeded::new(
                ErrorCode::TooManyTools,
                "tools",
                MAX_TOOLS,
                format!("an agent may have at most {MAX_TOOLS} tools"),
            ));
        }
        if self.handoffs.len() > MAX_HANDOFFS {
            return Err(LimitExceeded::new(
                ErrorCode::TooManyHandoffs,
                "handoffs",
                MAX_HANDOFFS,
                format!("an agent may hand off to at most {MAX_HANDOFFS} agents"),
            ));
        }
        for (index, tool) in self.tools.iter().enumerate() {
            if tool.description.chars().count() > MAX_TOOL_DESCRIPTION_CHARS {
                return Err(LimitExceeded::new(
                    ErrorCode::ValueTooLong,
                    format!("tools[{index}].description"),
                    MAX_TOOL_DESCRIPTION_CHARS,
                    format!("a tool description must be at most {MAX_TOOL_DESCRIPTION_CHARS} characters"),
                ));
            }
            check_schema(&format!("tools[{index}].parameters"), &tool.parameters)?;
            check_range(
                &format!("tools[{index}].timeout_ms"),
                tool.timeout_ms,
                1,
                MAX_TOOL_TIMEOUT_MS,
            )?;
            if let Some(cap) = tool.max_response_bytes {
                check_range(
                    &format!("tools[{index}].max_response_bytes"),
                    cap as u64,
                    1,
                    crate::outbound::MAX_RESPONSE_CAP as u64,
                )?;
            }
        }
        if let Some(schema) = &self.output_schema {
            check_schema("output_schema", schema)?;
        }
        check_range(
            "approval_timeout_seconds",
            self.approval_timeout_seconds.into(),
            1,
            MAX_RUN_TIMEOUT_SECONDS.into(),
        )?;
        check_range(
            "max_repairs",
            self.max_repairs.into(),
            0,
            MAX_REPAIRS.into(),
        )?;
        check_range(
            "max_output_tokens",
            self.max_output_tokens.into(),
            1,
            MAX_OUTPUT_TOKENS.into(),
        )?;
        check_range(
            "input_token_budget",
            self.input_token_budget.into(),
            1,
            MAX_INPUT_TOKEN_BUDGET.into(),
        )?;
        if let Some(temperature) = self.temperature {
            if !(0.0..=2.0).contains(&temperature) {
                return Err(LimitExceeded::new(
                    ErrorCode::ValueOutOfRange,
                    "temperature",
                    2u64,
                    "must be between 0 and 2",
                ));
            }
        }
        let limits = &self.limits;
        check_range(
            "limits.max_steps",
            limits.max_steps.into(),
            1,
            MAX_STEPS.into(),
        )?;
        check_range(
            "limits.run_token_budget",
            limits.run_token_budget,
            1,
            MAX_RUN_TOKEN_BUDGET,
        )?;
        check_range(
            "limits.max_handoff_depth",
            limits.max_handoff_depth.into(),
            0,
            MAX_HANDOFF_DEPTH.into(),
        )?;
        check_range(
            "limits.timeout_seconds",
            limits.timeout_seconds.into(),
            1,
            MAX_RUN_TIMEOUT_SECONDS.into(),
        )
    }

    /// Checks what serde cannot: names, uniqueness, and that the output
    /// schema compiles (which may take a while: call it off the async runtime).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if self.model.trim().is_empty() {
            problems.push("model must not be empty".to_owned());
        }
        if self.provider == Provider::Anthropic && self.temperature.is_some_and(|t| t > 1.0) {
            problems.push("temperature must be between 0 and 1 for provider anthropic".to_owned());
        }
        if self
            .summarizer_model
            .as_ref()
            .is_some_and(|model| model.trim().is_empty() || model.chars().count() > MAX_MODEL_CHARS)
        {
            problems.push(format!(
                "summarizer_model must be 1-{MAX_MODEL_CHARS} characters, not all blank"
            ));
        }
        let mut names = HashSet::new();
        for tool in &self.tools {
            let valid = !tool.name.is_empty()
                && tool.name.len() <= 64
                && tool
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                problems.push(format!(
                    "tool name {:?} must be 1-64 characters of a-z, A-Z, 0-9, '_' or '-'",
                    tool.name
                ));
            }
            if tool.name.starts_with(HANDOFF_TOOL_PREFIX) {
                problems.push(format!(
                    "tool name {:?} is reserved: list the agent under `handoffs` instead",
                    tool.name
                ));
            }
            if !names.insert(tool.name.as_str()) {
                problems.push(format!("tool name {:?} appears twice", tool.name));
            }
            if let Some(rule) = &tool.requires_approval {
                if let ApprovalRule::When(condition) = rule {
                    if condition.when.chars().count() > MAX_CONDITION_CHARS {
                        problems.push(format!(
                            "tool {:?}: requires_approval.when must be at most {MAX_CONDITION_CHARS} characters",
                            tool.name
                        ));
                    }
                }
                if let Some(problem) = rule.problem() {
                    problems.push(format!(
                        "tool {:?}: requires_approval: {problem}",
                        tool.name
                    ));
                }
            }
            if let ToolKind::Http {
                url,
                secret,
                keep_secret,
            } = &tool.kind
            {
                if *keep_secret && secret.is_some() {
                    problems.push(format!(
                        "tool {:?}: give either secret or keep_secret, not both",
                        tool.name
                    ));
                }
                let parsed = url::Url::parse(url);
                if !parsed
                    .as_ref()
                    .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                {
                    problems.push(format!("tool {:?}: url must be an http(s) URL", tool.name));
                }
                if secret
                    .as_ref()
                    .map(Secret::expose)
                    .is_some_and(|s| s.trim().is_empty())
                {
                    problems.push(format!(
                        "tool {:?}: secret must not be empty (leave it out to send unsigned calls)",
                        tool.name
                    ));
                }
            }
        }
        if let Some(webhook) = &self.webhook {
            if webhook.keep_secret && webhook.secret.is_some() {
                problems.push("webhook: give either secret or keep_secret, not both".to_owned());
            }
            // A secret to keep is resolved when the version is stored.
            let secret = webhook
                .secret
                .as_ref()
                .map(Secret::expose)
                .or(webhook.keep_secret.then_some("kept"));
            problems.extend(Webhook::problems(&webhook.url, secret));
        }
        let mut handoff_tools = HashSet::new();
        for agent in &self.handoffs {
            if !handoff_tools.insert(agent.handoff_tool()) {
                problems.push(format!("handoff to {agent:?} appears twice"));
            }
        }
        for tool in self.tools.iter().filter(|t| !t.parameters.is_object()) {
            problems.push(format!(
                "tool {:?}: parameters must be a JSON Schema object",
                tool.name
            ));
        }
        if let Some(schema) = &self.output_schema {
            if !schema.is_object() {
                problems.push("output_schema must be a JSON Schema object".to_owned());
            } else if let Err(err) = jsonschema::validator_for(schema) {
                problems.push(format!("output_schema is not a valid JSON Schema: {err}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    /// The agent a `transfer_to_*` tool name points at, if it is one of this agent's handoffs.
    pub fn handoff_target(&self, tool_name: &str) -> Option<&AgentName> {
        self.handoffs.iter().find(|a| a.handoff_tool() == tool_name)
    }

    pub fn tool(&self, name: &str) -> Option<&ToolSpec> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// A stable digest of the spec, so an unchanged `PUT` makes no new version.
    pub fn digest(&self) -> String {
        use sha2::{Digest, Sha256};
        // serde_json maps are sorted (no preserve_order), so this is canonical.
        let canonical = serde_json::to_vec(&canonicalize(
            serde_json::to_value(self).unwrap_or(Value::Null),
        ))
        .unwrap_or_default();
        hex::encode(Sha256::digest(canonical))
    }
}

fn canonicalize(value: Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k, canonicalize(v)))
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(canonicalize).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(value: Value) -> AgentSpec {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn agent_names_are_validated() {
        assert!(AgentName::parse("support-triage").is_ok());
        assert!(AgentName::parse("").is_err());
        assert!(AgentName::parse("Upper").is_err());
        assert!(AgentName::parse("9lives").is_err());
        assert!(AgentName::parse("has space").is_err());
        assert_eq!(
            AgentName::parse("billing-pro").unwrap().handoff_tool(),
            "transfer_to_billing_pro"
        );
    }

    #[test]
    fn defaults_fill_in_and_unknown_fields_are_rejected() {
        let s = spec(json!({"model": "m", "instructions": "hi"}));
        assert_eq!(s.limits, RunLimits::default());
        assert_eq!(s.max_repairs, 2);
        assert!(serde_json::from_value::<AgentSpec>(
            json!({"model": "m", "instructions": "hi", "bogus": 1})
        )
        .is_err());
    }

    #[test]
    fn validation_reports_every_problem() {
        let s = spec(json!({
            "model": "",
            "instructions": "x",
            "tools": [
                {"name": "a", "kind": "builtin", "builtin": "echo"},
                {"name": "a", "kind": "http", "url": "ftp://x"},
                {"name": "transfer_to_x", "kind": "builtin", "builtin": "now"}
            ],
            "output_schema": {"type": "nonsense-type"}
        }));
        let problems = s.validate().unwrap_err();
        assert_eq!(problems.len(), 5, "{problems:?}");
    }

    #[test]
    fn digest_ignores_key_order() {
        let a = spec(json!({"model": "m", "instructions": "i", "output_schema": {"a": 1, "b": 2}}));
        let b = spec(json!({"instructions": "i", "output_schema": {"b": 2, "a": 1}, "model": "m"}));
        assert_eq!(a.digest(), b.digest());
    }
}
