//! Every error code the API answers with: stable, machine-readable, one
//! enum (the OpenAPI document's `ErrorCode` schema is generated from
//! `ALL`).

use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ErrorCode {
    AgentDisabled,
    AgentVersionNotFound,
    ApprovalAlreadyAnswered,
    ApprovalExpired,
    ApprovalNotFound,
    BodyTooLarge,
    ConcurrentRunLimit,
    DatabaseUnavailable,
    HotStoreUnavailable,
    IdempotencyKeyConflict,
    InputTooLarge,
    InstructionsTooLong,
    Internal,
    InvalidAgentName,
    InvalidAgentSpec,
    InvalidBody,
    InvalidIdempotencyKey,
    InvalidLastEventId,
    InvalidLimits,
    InvalidPlan,
    InvalidPrice,
    InvalidQuery,
    InvalidRequest,
    InvalidWebhook,
    KeyNotFound,
    MetadataKeyTooLong,
    MetadataTooLarge,
    MethodNotAllowed,
    NotFound,
    OrchestratorUnavailable,
    RateLimited,
    RouteNotFound,
    RunAlreadyFinished,
    RunNotFound,
    RunNotReady,
    SchemaTooDeep,
    SchemaTooLarge,
    StoreUnavailable,
    TeamDisabled,
    TeamExists,
    TeamNotFound,
    ThreadBusy,
    ThreadNotFound,
    TimeoutNotSupported,
    TooManyAgents,
    TooManyHandoffs,
    TooManyMetadataKeys,
    TooManyStreams,
    TooManyTools,
    TooManyVersions,
    ToolCallNotFound,
    Unauthorized,
    UnknownAgent,
    UnknownAgentVersion,
    UnknownPlan,
    UnsupportedMediaType,
    ValueOutOfRange,
    ValueTooLong,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 58] = [
        ErrorCode::AgentDisabled,
        ErrorCode::AgentVersionNotFound,
        ErrorCode::ApprovalAlreadyAnswered,
        ErrorCode::ApprovalExpired,
        ErrorCode::ApprovalNotFound,
        ErrorCode::BodyTooLarge,
        ErrorCode::ConcurrentRunLimit,
        ErrorCode::DatabaseUnavailable,
        ErrorCode::HotStoreUnavailable,
        ErrorCode::IdempotencyKeyConflict,
        ErrorCode::InputTooLarge,
        ErrorCode::InstructionsTooLong,
        ErrorCode::Internal,
        ErrorCode::InvalidAgentName,
        ErrorCode::InvalidAgentSpec,
        ErrorCode::InvalidBody,
        ErrorCode::InvalidIdempotencyKey,
        ErrorCode::InvalidLastEventId,
        ErrorCode::InvalidLimits,
        ErrorCode::InvalidPlan,
        ErrorCode::InvalidPrice,
        ErrorCode::InvalidQuery,
        ErrorCode::InvalidRequest,
        ErrorCode::InvalidWebhook,
        ErrorCode::KeyNotFound,
        ErrorCode::MetadataKeyTooLong,
        ErrorCode::MetadataTooLarge,
        ErrorCode::MethodNotAllowed,
        ErrorCode::NotFound,
        ErrorCode::OrchestratorUnavailable,
        ErrorCode::RateLimited,
        ErrorCode::RouteNotFound,
        ErrorCode::RunAlreadyFinished,
        ErrorCode::RunNotFound,
        ErrorCode::RunNotReady,
        ErrorCode::SchemaTooDeep,
        ErrorCode::SchemaTooLarge,
        ErrorCode::StoreUnavailable,
        ErrorCode::TeamDisabled,
        ErrorCode::TeamExists,
        ErrorCode::TeamNotFound,
        ErrorCode::ThreadBusy,
        ErrorCode::ThreadNotFound,
        ErrorCode::TimeoutNotSupported,
        ErrorCode::TooManyAgents,
        ErrorCode::TooManyHandoffs,
        ErrorCode::TooManyMetadataKeys,
        ErrorCode::TooManyStreams,
        ErrorCode::TooManyTools,
        ErrorCode::TooManyVersions,
        ErrorCode::ToolCallNotFound,
        ErrorCode::Unauthorized,
        ErrorCode::UnknownAgent,
        ErrorCode::UnknownAgentVersion,
        ErrorCode::UnknownPlan,
        ErrorCode::UnsupportedMediaType,
        ErrorCode::ValueOutOfRange,
        ErrorCode::ValueTooLong,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::AgentDisabled => "agent_disabled",
            ErrorCode::AgentVersionNotFound => "agent_version_not_found",
            ErrorCode::ApprovalAlreadyAnswered => "approval_already_answered",
            ErrorCode::ApprovalExpired => "approval_expired",
            ErrorCode::ApprovalNotFound => "approval_not_found",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::ConcurrentRunLimit => "concurrent_run_limit",
            ErrorCode::DatabaseUnavailable => "database_unavailable",
            ErrorCode::HotStoreUnavailable => "hot_store_unavailable",
            ErrorCode::IdempotencyKeyConflict => "idempotency_key_conflict",
            ErrorCode::InputTooLarge => "input_too_large",
            ErrorCode::InstructionsTooLong => "instructions_too_long",
            ErrorCode::Internal => "internal",
            ErrorCode::InvalidAgentName => "invalid_agent_name",
            ErrorCode::InvalidAgentSpec => "invalid_agent_spec",
            ErrorCode::InvalidBody => "invalid_body",
            ErrorCode::InvalidIdempotencyKey => "invalid_idempotency_key",
            ErrorCode::InvalidLastEventId => "invalid_last_event_id",
            ErrorCode::InvalidLimits => "invalid_limits",
            ErrorCode::InvalidPlan => "invalid_plan",
            ErrorCode::InvalidPrice => "invalid_price",
            ErrorCode::InvalidQuery => "invalid_query",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidWebhook => "invalid_webhook",
            ErrorCode::KeyNotFound => "key_not_found",
            ErrorCode::MetadataKeyTooLong => "metadata_key_too_long",
            ErrorCode::MetadataTooLarge => "metadata_too_large",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::NotFound => "not_found",
            ErrorCode::OrchestratorUnavailable => "orchestrator_unavailable",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::RouteNotFound => "route_not_found",
            ErrorCode::RunAlreadyFinished => "run_already_finished",
            ErrorCode::RunNotFound => "run_not_found",
            ErrorCode::RunNotReady => "run_not_ready",
            ErrorCode::SchemaTooDeep => "schema_too_deep",
            ErrorCode::SchemaTooLarge => "schema_too_large",
            ErrorCode::StoreUnavailable => "store_unavailable",
            ErrorCode::TeamDisabled => "team_disabled",
            ErrorCode::TeamExists => "team_exists",
            ErrorCode::TeamNotFound => "team_not_found",
            ErrorCode::ThreadBusy => "thread_busy",
            ErrorCode::ThreadNotFound => "thread_not_found",
            ErrorCode::TimeoutNotSupported => "timeout_not_supported",
            ErrorCode::TooManyAgents => "too_many_agents",
            ErrorCode::TooManyHandoffs => "too_many_handoffs",
            ErrorCode::TooManyMetadataKeys => "too_many_metadata_keys",
            ErrorCode::TooManyStreams => "too_many_streams",
            ErrorCode::TooManyTools => "too_many_tools",
            ErrorCode::TooManyVersions => "too_many_versions",
            ErrorCode::ToolCallNotFound => "tool_call_not_found",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::UnknownAgent => "unknown_agent",
            ErrorCode::UnknownAgentVersion => "unknown_agent_version",
            ErrorCode::UnknownPlan => "unknown_plan",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::ValueOutOfRange => "value_out_of_range",
            ErrorCode::ValueTooLong => "value_too_long",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The codes as a string enum, in `ALL`'s order.
impl utoipa::PartialSchema for ErrorCode {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::Type::String)
            .enum_values(Some(ErrorCode::ALL.iter().map(|code| code.as_str())))
            .into()
    }
}

impl utoipa::ToSchema for ErrorCode {}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_snake_case() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            let text = code.as_str();
            assert!(
                text.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{text}"
            );
            assert!(seen.insert(text), "{text} twice");
        }
    }
}
