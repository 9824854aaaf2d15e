//! `{"error": {"code", "message", "details"}}` with the right status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::engine::StepError;
use crate::ledger::StoreError;
use crate::ports::{HotStoreError, OrchestratorError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        error.retry_after = Some(1);
        error
    }
}

/// What a client is told for a server-side error; the cause (which may name
/// hosts, drivers or SQL) goes only to the logs, under the request id.
fn public_message(code: &str) -> &'static str {
    match code {
        "database_unavailable" | "store_unavailable" => {
            "the database is unavailable; retry shortly"
        }
        "hot_store_unavailable" => "a platform store is unavailable; retry shortly",
        "orchestrator_unavailable" => {
            "the run was recorded but could not be started yet; it starts once the \
             orchestrator answers (retry with the same Idempotency-Key to get it)"
        }
        "run_not_ready" => "the run is still being created; retry shortly",
        _ => "an internal error occurred",
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        if self.status.is_server_error() {
            let request_id = uuid::Uuid::new_v4().simple().to_string();
            tracing::error!(code = self.code, message = %self.message, %request_id, "request failed");
            self.message = public_message(self.code).to_owned();
            match &mut self.details {
                Value::Object(details) => {
                    details.insert("request_id".to_owned(), Value::String(request_id));
                }
                other => *other = json!({"request_id": request_id}),
            }
        }
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => {
                ApiError::unavailable("database_unavailable", message)
            }
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                other.to_string(),
            ),
        }
    }
}

impl From<HotStoreError> for ApiError {
    fn from(error: HotStoreError) -> Self {
        ApiError::unavailable("hot_store_unavailable", error.to_string())
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        ApiError::unavailable("orchestrator_unavailable", error.to_string())
    }
}

impl From<StepError> for ApiError {
    fn from(error: StepError) -> Self {
        if error.is_retryable() {
            ApiError::unavailable("store_unavailable", error.to_string())
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                error.to_string(),
            )
        }
    }
}
