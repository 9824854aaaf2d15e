//! `{"error": {"code", "message", "details", "request_id"}}` with the right status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::domain::limits::LimitExceeded;
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
        let request_id = super::request_id::current()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, %request_id, "request failed");
            self.message = public_message(self.code).to_owned();
        }
        let body = json!({"error": {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "request_id": request_id,
        }});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert("retry-after", HeaderValue::from(seconds));
        }
        response
    }
}

/// Every error is the JSON envelope, including the ones axum answers itself
/// (query, path and body rejections, an oversized body, a wrong method):
/// those arrive here as plain text or empty and are wrapped.
pub async fn envelope(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let allow = response.headers().get(axum::http::header::ALLOW).cloned();
    let text = match axum::body::to_bytes(response.into_body(), 64 * 1024).await {
        Ok(bytes) => String::from_utf8_lossy(&bytes).trim().to_owned(),
        Err(_) => String::new(),
    };
    let (code, fallback) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ("body_too_large", "the request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "this endpoint does not take that method",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "send the body as application/json",
        ),
        StatusCode::NOT_FOUND => ("not_found", "no such resource"),
        _ if status.is_server_error() => ("internal", "an internal error occurred"),
        _ => ("invalid_request", "the request is not valid"),
    };
    let message = if text.is_empty() {
        fallback.to_owned()
    } else {
        text
    };
    let mut wrapped = ApiError::new(status, code, message).into_response();
    if let Some(allow) = allow {
        wrapped
            .headers_mut()
            .insert(axum::http::header::ALLOW, allow);
    }
    wrapped
}

impl From<LimitExceeded> for ApiError {
    fn from(error: LimitExceeded) -> Self {
        let status = if error.is_size() {
            StatusCode::PAYLOAD_TOO_LARGE
        } else if matches!(error.code, "too_many_agents" | "too_many_versions") {
            StatusCode::CONFLICT
        } else {
            StatusCode::BAD_REQUEST
        };
        ApiError::new(status, error.code, error.to_string())
            .with_details(json!({"field": error.field, "limit": error.limit}))
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::Unavailable(message) => {
                ApiError::unavailable("database_unavailable", message)
            }
            StoreError::Limit(limit) => limit.into(),
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
