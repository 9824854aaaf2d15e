//! The HTTP API (DESIGN §8): one axum router, served in-process by
//! `agentrun dev` and behind API Gateway by the api function.

mod agents;
mod auth;
mod error;
mod events;
mod runs;

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use error::ApiError;

use crate::engine::Engine;
use crate::ports::Orchestrator;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub orchestrator: Arc<dyn Orchestrator>,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/v1/runs", post(runs::create).get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
        .route("/v1/runs/{id}/steps", get(runs::steps))
        .route("/v1/runs/{id}/events", get(events::stream))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/{name}", axum::routing::put(agents::put))
        .route("/v1/agents/{name}/versions/{version}", get(agents::show))
        .fallback(|| async { ApiError::not_found("route_not_found", "no such endpoint") })
        .with_state(state)
}

async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.ledger.ping().await {
        Ok(()) => (axum::http::StatusCode::OK, Json(json!({"status": "ok"}))).into_response(),
        Err(error) => {
            ApiError::unavailable("database_unavailable", error.to_string()).into_response()
        }
    }
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
