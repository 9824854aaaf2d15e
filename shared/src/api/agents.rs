//! `/v1/agents`: immutable, versioned agent configurations.

use crate::domain::ErrorCode;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::json;

use super::auth::Caller;
use super::views::{AgentVersionView, Page};
use super::{parse_object, ApiError, AppState, PageQuery};
use crate::domain::limits::check_run_timeout;
use crate::domain::{AgentName, AgentSpec};

/// Store a new version of an agent.
#[utoipa::path(
    put,
    path = "/v1/agents/{name}",
    tag = "agents",
    summary = "Store a new version (an unchanged spec returns the latest version with 200)",
    params(("name" = AgentName, Path, description = "the agent")),
    request_body = AgentSpec,
    responses(
        (status = 200, description = "OK", body = AgentVersionView),
        (status = 201, description = "Created", body = AgentVersionView),
        (status = 404, response = super::error::ErrorBody),
        (status = 409, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn put(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<AgentVersionView>), ApiError> {
    let name = AgentName::parse(&name)
        .map_err(|m| ApiError::bad_request(ErrorCode::InvalidAgentName, m))?;
    let raw = parse_object(&body, ErrorCode::InvalidAgentSpec)?;
    let spec: AgentSpec = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidAgentSpec, e.to_string()))?;
    spec.check_limits()?;
    if let Some(max) = state.orchestrator.max_run_timeout() {
        check_run_timeout(spec.limits.timeout_seconds, max)?;
    }
    // Validation compiles the output schema: off the async runtime.
    let (mut spec, checked) = tokio::task::spawn_blocking(move || {
        let checked = spec.validate();
        (spec, checked)
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("validating the agent spec stopped: {e}"),
        )
    })?;
    checked.map_err(|problems| {
        ApiError::bad_request(ErrorCode::InvalidAgentSpec, "the agent spec has problems")
            .with_details(json!({"problems": problems}))
    })?;
    // A webhook at an internal address the operator does not allow is
    // refused now, as a run's own is, not blocked on every delivery.
    if let Some(webhook) = &spec.webhook {
        state
            .engine
            .tools
            .outbound()
            .check_url(&webhook.url)
            .map_err(|e| {
                ApiError::bad_request(ErrorCode::InvalidAgentSpec, "the agent spec has problems")
                    .with_details(json!({"problems": [format!("webhook.url: {e}")]}))
            })?;
    }
    let previous = if spec.keeps_a_secret() {
        state
            .engine
            .ledger
            .get_agent(team, name.as_str(), None)
            .await?
    } else {
        None
    };
    let missing = spec.keep_secrets_from(previous.as_ref().map(|p| &p.spec));
    if !missing.is_empty() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidAgentSpec,
            "keep_secret names a tool or webhook that had no secret in the latest version",
        )
        .with_details(json!({"tools": missing})));
    }
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
    Ok((status, Json(AgentVersionView::from(&version))))
}

/// The team's agents.
#[utoipa::path(
    get,
    path = "/v1/agents",
    tag = "agents",
    summary = "Latest version of each agent",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size (default 50)"),
        ("cursor" = Option<AgentName>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, description = "OK", body = Page<AgentVersionView>))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(team): Caller,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<AgentVersionView>>, ApiError> {
    let limit = page.size()?;
    let after = match page.cursor.as_deref() {
        None => None,
        Some(cursor) => Some(
            AgentName::parse(cursor)
                .map_err(|_| ApiError::bad_request(ErrorCode::InvalidQuery, "malformed cursor"))?,
        ),
    };
    let page = state
        .engine
        .ledger
        .list_agents(team, after.as_ref().map(AgentName::as_str), limit)
        .await?;
    Ok(Json(Page {
        data: page.agents.iter().map(AgentVersionView::from).collect(),
        next_cursor: page.next_cursor,
    }))
}

/// One version of an agent.
#[utoipa::path(
    get,
    path = "/v1/agents/{name}/versions/{version}",
    tag = "agents",
    summary = "One version of an agent",
    params(("name" = AgentName, Path, description = "the agent"), ("version" = i32, Path, minimum = 1, maximum = 2147483647)),
    responses(
        (status = 200, description = "OK", body = AgentVersionView),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path((name, version)): Path<(String, String)>,
) -> Result<Json<AgentVersionView>, ApiError> {
    let missing = || {
        ApiError::not_found(
            ErrorCode::AgentVersionNotFound,
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
    Ok(Json(AgentVersionView::from(&found)))
}
