//! `Authorization: Bearer <team API key>` → the caller's team.

use crate::domain::ErrorCode;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::{ApiError, AppState};
use crate::domain::TeamId;
use crate::ledger::constant_time_eq;

fn unauthorized(message: &str) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
}

/// The token of `Authorization: Bearer <token>`.
fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("missing Authorization: Bearer <key>"))?
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| unauthorized("Authorization must be 'Bearer <key>'"))
}

/// The authenticated team of a request.
pub struct Caller(pub TeamId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let key = bearer_token(parts)?;
        match state.engine.ledger.authenticate(key).await? {
            Some(team) => Ok(Caller(team)),
            None => Err(unauthorized("invalid or revoked API key")),
        }
    }
}

/// A request carrying the operator's admin key (`AGENTRUN_ADMIN_KEY`).
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(expected) = state.admin_key.as_deref() else {
            return Err(unauthorized("the admin API is off: set AGENTRUN_ADMIN_KEY"));
        };
        if constant_time_eq(bearer_token(parts)?.as_bytes(), expected.as_bytes()) {
            Ok(Admin)
        } else {
            Err(unauthorized("this endpoint needs the admin key"))
        }
    }
}
