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

/// The reader of a run's event stream: a team key in the Authorization
/// header, or (when there is none) a stream token in `?token=`, which also
/// names the one run it may read.
pub struct StreamReader {
    pub team: TeamId,
    /// The run a stream token is for.
    pub only_run: Option<crate::domain::RunId>,
    /// The stream token, to pass on where streams are served elsewhere.
    pub token: Option<String>,
}

impl FromRequestParts<AppState> for StreamReader {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if parts.headers.contains_key(header::AUTHORIZATION) {
            let Caller(team) = Caller::from_request_parts(parts, state).await?;
            return Ok(Self {
                team,
                only_run: None,
                token: None,
            });
        }
        let token = parts.uri.query().and_then(|query| {
            url::form_urlencoded::parse(query.as_bytes())
                .find(|(name, _)| name == "token")
                .map(|(_, value)| value.into_owned())
        });
        let Some(token) = token else {
            return Err(unauthorized(
                "missing Authorization: Bearer <key> (or ?token=<stream token>)",
            ));
        };
        match state.engine.ledger.stream_token(&token).await? {
            Some((team, run)) => Ok(Self {
                team,
                only_run: Some(run),
                token: Some(token),
            }),
            None => Err(unauthorized("the stream token is unknown or expired")),
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
