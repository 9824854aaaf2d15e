use std::time::Duration;

use crate::domain::StopReason;
use crate::ledger::StoreError;
use crate::ports::{HotStoreError, LlmError};

/// Why a step did not produce an outcome. The names are what the state
/// machine's Retry and Catch match (contract).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("LLM unavailable: {0}")]
    LlmUnavailable(String),
    /// The provider asked to wait longer than a step waits by itself.
    #[error("LLM rate limited: {detail}")]
    RateLimited {
        detail: String,
        retry_after: Option<Duration>,
    },
    #[error("store unavailable: {0}")]
    Store(String),
    /// The step used up its time budget (its task would time out next).
    #[error("step out of time: {0}")]
    OutOfTime(String),
    /// The provider's circuit is open: no call until `until`.
    #[error("LLM circuit open: {detail}")]
    CircuitOpen {
        detail: String,
        until: chrono::DateTime<chrono::Utc>,
    },
    #[error("{reason}: {detail}")]
    Fatal { reason: StopReason, detail: String },
}

impl StepError {
    /// The error names the state machine retries (contract).
    pub const RETRYABLE_NAMES: [&'static str; 5] = [
        Self::LLM_UNAVAILABLE,
        Self::RATE_LIMITED,
        Self::STORE,
        Self::STEP_TIMEOUT,
        Self::CIRCUIT_OPEN,
    ];
    pub const LLM_UNAVAILABLE: &'static str = "Retryable.LlmUnavailable";
    pub const RATE_LIMITED: &'static str = "Retryable.RateLimited";
    pub const STORE: &'static str = "Retryable.Store";
    pub const STEP_TIMEOUT: &'static str = "Retryable.StepTimeout";
    pub const CIRCUIT_OPEN: &'static str = "Retryable.CircuitOpen";

    pub fn fatal(reason: StopReason, detail: impl Into<String>) -> Self {
        StepError::Fatal {
            reason,
            detail: detail.into(),
        }
    }

    /// `Retryable.*` or `Fatal.<stop_reason>`.
    pub fn error_name(&self) -> String {
        match self {
            StepError::LlmUnavailable(_) => Self::LLM_UNAVAILABLE.to_owned(),
            StepError::RateLimited { .. } => Self::RATE_LIMITED.to_owned(),
            StepError::Store(_) => Self::STORE.to_owned(),
            StepError::OutOfTime(_) => Self::STEP_TIMEOUT.to_owned(),
            StepError::CircuitOpen { .. } => Self::CIRCUIT_OPEN.to_owned(),
            StepError::Fatal { reason, .. } => format!("Fatal.{reason}"),
        }
    }

    pub fn is_retryable(&self) -> bool {
        !matches!(self, StepError::Fatal { .. })
    }

    /// The shortest wait the error itself asks for before a retry.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            StepError::RateLimited { retry_after, .. } => *retry_after,
            StepError::CircuitOpen { until, .. } => (*until - chrono::Utc::now()).to_std().ok(),
            _ => None,
        }
    }

    /// The stop reason a run ends with when this error is final.
    pub fn stop_reason(&self) -> StopReason {
        match self {
            StepError::LlmUnavailable(_)
            | StepError::RateLimited { .. }
            | StepError::CircuitOpen { .. } => StopReason::LlmUnavailable,
            StepError::Store(_) | StepError::OutOfTime(_) => StopReason::Internal,
            StepError::Fatal { reason, .. } => *reason,
        }
    }
}

impl From<StoreError> for StepError {
    fn from(err: StoreError) -> Self {
        match err {
            StoreError::Unavailable(detail) => StepError::Store(detail),
            other => StepError::fatal(StopReason::Internal, other.to_string()),
        }
    }
}

impl From<HotStoreError> for StepError {
    fn from(err: HotStoreError) -> Self {
        StepError::Store(err.to_string())
    }
}

impl From<LlmError> for StepError {
    fn from(err: LlmError) -> Self {
        match err {
            LlmError::RateLimited { retry_after } => StepError::RateLimited {
                detail: err.to_string(),
                retry_after,
            },
            LlmError::Unavailable(_) | LlmError::InvalidResponse(_) => {
                StepError::LlmUnavailable(err.to_string())
            }
            LlmError::Rejected(_) => StepError::fatal(StopReason::LlmUnavailable, err.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_match_the_state_machine_contract() {
        assert_eq!(
            StepError::LlmUnavailable("x".into()).error_name(),
            "Retryable.LlmUnavailable"
        );
        assert_eq!(
            StepError::from(LlmError::RateLimited { retry_after: None }).error_name(),
            "Retryable.RateLimited"
        );
        assert_eq!(
            StepError::fatal(StopReason::OutputInvalid, "x").error_name(),
            "Fatal.output_invalid"
        );
        assert!(!StepError::from(LlmError::Rejected("401".into())).is_retryable());
    }
}
