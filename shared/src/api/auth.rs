//! `Authorization: Bearer <team API key>` → the caller's team.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};

use super::{ApiError, AppState};
use crate::domain::TeamId;

/// The authenticated team of a request.
pub struct Caller(pub TeamId);

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let unauthorized =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <API key>"))?
            .to_str()
            .map_err(|_| unauthorized("malformed Authorization header"))?;
        let key = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("Authorization must be 'Bearer <API key>'"))?
            .trim();
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
        let unauthorized =
            |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        let Some(expected) = state.admin_key.as_deref() else {
            return Err(unauthorized("the admin API is off: set AGENTRUN_ADMIN_KEY"));
        };
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or_else(|| unauthorized("missing Authorization: Bearer <admin key>"))?;
        let matches = presented.len() == expected.len()
            && presented
                .bytes()
                .zip(expected.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if matches {
            Ok(Admin)
        } else {
            Err(unauthorized("this endpoint needs the admin key"))
        }
    }
}
