//! `{"error": {"code", "message", "details", "request_id"}}` with the right status.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use crate::domain::limits::LimitExceeded;
use crate::domain::ErrorCode;
use crate::engine::StepError;
use crate::ledger::StoreError;
use crate::ports::{HotStoreError, OrchestratorError};

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: ErrorCode,
    pub message: String,
    pub details: Value,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
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

    pub fn bad_request(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn not_found(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn unavailable(code: ErrorCode, message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message);
        error.retry_after = Some(1);
        error
    }
}

/// What a client is told for a server-side error; the cause (which may name
/// hosts, drivers or SQL) goes only to the logs, under the request id.
fn public_message(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::DatabaseUnavailable | ErrorCode::StoreUnavailable => {
            "the database is unavailable; retry shortly"
        }
        ErrorCode::HotStoreUnavailable => "a platform store is unavailable; retry shortly",
        ErrorCode::OrchestratorUnavailable => {
            "the run was recorded but could not be started yet; it starts once the \
             orchestrator answers (retry with the same Idempotency-Key to get it)"
        }
        ErrorCode::RunNotReady => "the run is still being created; retry shortly",
        _ => "an internal error occurred",
    }
}

/// `{"error": {"code", "message", "details", "request_id"}}`.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
#[schema(as = Error)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable and machine-readable; the message is for people.
    pub code: ErrorCode,
    pub message: String,
    /// What the code is about (a field, a limit, a run id), when there is
    /// more to say.
    #[schema(required = false)]
    pub details: Value,
    /// The `X-Request-Id` of the request.
    #[schema(min_length = 1, max_length = 128)]
    pub request_id: String,
}

/// Every error answer: `#/components/responses/Error`.
impl<'s> utoipa::ToResponse<'s> for ErrorBody {
    fn response() -> (
        &'s str,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    ) {
        let schema = utoipa::openapi::Ref::from_schema_name("Error");
        let response = utoipa::openapi::ResponseBuilder::new()
            .description("An error")
            .content(
                "application/json",
                utoipa::openapi::Content::new(Some(schema)),
            )
            .build();
        ("Error", response.into())
    }
}

impl IntoResponse for ApiError {
    fn into_response(mut self) -> Response {
        let request_id = super::request_id::current()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        if self.status.is_server_error() {
            tracing::error!(code = %self.code, message = %self.message, %request_id, "request failed");
            self.message = public_message(self.code).to_owned();
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message,
                details: self.details,
                request_id,
            },
        };
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
        StatusCode::PAYLOAD_TOO_LARGE => (ErrorCode::BodyTooLarge, "the request body is too large"),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "this endpoint does not take that method",
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "send the body as application/json",
        ),
        StatusCode::NOT_FOUND => (ErrorCode::NotFound, "no such resource"),
        _ if status.is_server_error() => (ErrorCode::Internal, "an internal error occurred"),
        _ => (ErrorCode::InvalidRequest, "the request is not valid"),
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
        } else if matches!(
            error.code,
            ErrorCode::TooManyAgents | ErrorCode::TooManyVersions
        ) {
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
                ApiError::unavailable(ErrorCode::DatabaseUnavailable, message)
            }
            StoreError::Limit(limit) => limit.into(),
            other => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                other.to_string(),
            ),
        }
    }
}

impl From<HotStoreError> for ApiError {
    fn from(error: HotStoreError) -> Self {
        ApiError::unavailable(ErrorCode::HotStoreUnavailable, error.to_string())
    }
}

impl From<OrchestratorError> for ApiError {
    fn from(error: OrchestratorError) -> Self {
        ApiError::unavailable(ErrorCode::OrchestratorUnavailable, error.to_string())
    }
}

impl From<StepError> for ApiError {
    fn from(error: StepError) -> Self {
        if error.is_retryable() {
            ApiError::unavailable(ErrorCode::StoreUnavailable, error.to_string())
        } else {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::Internal,
                error.to_string(),
            )
        }
    }
}
