//! `/v1/agents`: immutable, versioned agent configurations.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use super::auth::Caller;
use super::{ApiError, AppState};
use crate::domain::{AgentName, AgentSpec};

pub async fn put(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name =
        AgentName::parse(&name).map_err(|m| ApiError::bad_request("invalid_agent_name", m))?;
    let spec: AgentSpec = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request("invalid_agent_spec", e.to_string()))?;
    spec.validate().map_err(|problems| {
        ApiError::bad_request("invalid_agent_spec", "the agent spec has problems")
            .with_details(json!({"problems": problems}))
    })?;
    let (version, created) = state
        .engine
        .ledger
        .put_agent(team, name.as_str(), &spec)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(version))))
}

pub async fn list(
    State(state): State<AppState>,
    Caller(team): Caller,
) -> Result<Json<Value>, ApiError> {
    let agents = state.engine.ledger.list_agents(team).await?;
    Ok(Json(json!({"data": agents, "next_cursor": null})))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let missing = || {
        ApiError::not_found(
            "agent_version_not_found",
            format!("no version {version} of agent {name}"),
        )
    };
    let number: i32 = version.parse().map_err(|_| missing())?;
    let found = state
        .engine
        .ledger
        .get_agent(team, &name, Some(number))
        .await?
        .ok_or_else(missing)?;
    Ok(Json(json!(found)))
}
