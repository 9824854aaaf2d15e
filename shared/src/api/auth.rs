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
