//! `/v1/runs`: create (idempotent), list, show, steps, cancel.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::{parse_object, ApiError, AppState, PageQuery};
use crate::admission::{self, AdmissionError, Admitted, IdempotencyKey, RunRequest};
use crate::domain::limits::check_run_request;
use crate::domain::{AgentName, Run, RunId, RunStatus, StopReason, TeamId, Terminal};
use crate::ledger::RunPage;

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    agent: String,
    #[serde(default)]
    version: Option<i32>,
    input: Value,
    #[serde(default)]
    metadata: Option<Value>,
}

/// The run as the API shows it.
pub fn run_json(run: &Run) -> Value {
    let base = format!("/v1/runs/{}", run.id);
    json!({
        "id": run.id,
        "status": run.status,
        "agent": run.agent,
        "version": run.version,
        "active_agent": run.active_agent,
        "active_version": run.active_version,
        "stop_reason": run.stop_reason,
        "stop_detail": run.stop_detail,
        "input": run.input,
        "output": run.output,
        "raw_output": run.raw_output,
        "metadata": run.metadata,
        "limits": run.limits,
        "steps": run.next_step - 1,
        "handoff_depth": run.handoff_depth,
        "usage": {
            "input_tokens": run.input_tokens,
            "output_tokens": run.output_tokens,
            "total_tokens": run.input_tokens + run.output_tokens,
            "llm_calls": run.llm_calls,
        },
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "links": {
            "self": base,
            "steps": format!("{base}/steps"),
            "events": format!("{base}/events"),
            "cancel": format!("{base}/cancel"),
        },
    })
}

fn parse_run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found("run_not_found", format!("no run {raw}")))
}

/// A team's run, or 404 (also for another team's run: existence is not confirmed).
pub async fn team_run(state: &AppState, team: TeamId, raw_id: &str) -> Result<Run, ApiError> {
    let id = parse_run_id(raw_id)?;
    state
        .engine
        .ledger
        .get_team_run(team, id)
        .await?
        .ok_or_else(|| ApiError::not_found("run_not_found", format!("no run {raw_id}")))
}

pub async fn create(
    State(state): State<AppState>,
    Caller(team): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw = parse_object(&body, "invalid_body")?;
    let request: CreateRun = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?;
    let agent = AgentName::parse(&request.agent)
        .map_err(|message| ApiError::bad_request("invalid_agent_name", message))?;
    if request.input.is_null() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "input must not be null",
        ));
    }
    let metadata = request.metadata.unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "metadata must be an object",
        ));
    }
    check_run_request(&request.input, &metadata)?;
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().map_err(|_| {
                ApiError::bad_request("invalid_idempotency_key", "Idempotency-Key must be ASCII")
            })?;
            let printable = key.bytes().all(|b| b.is_ascii_graphic());
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !printable {
                return Err(ApiError::bad_request(
                    "invalid_idempotency_key",
                    format!(
                        "Idempotency-Key must be 1-{MAX_IDEMPOTENCY_KEY_LEN} printable ASCII characters without spaces"
                    ),
                ));
            }
            // serde_json keeps object keys sorted, so equal bodies hash equally.
            Some(IdempotencyKey {
                key: key.to_owned(),
                request_hash: hex::encode(Sha256::digest(raw.to_string().as_bytes())),
            })
        }
    };
    let request = RunRequest {
        team,
        agent,
        version: request.version,
        input: request.input,
        metadata,
        idempotency,
    };
    match admission::admit(state.engine.clone(), state.orchestrator.clone(), request).await {
        Ok(Admitted::Accepted(run)) => Ok(accepted(&run, false)),
        Ok(Admitted::Replayed(run)) => Ok(accepted(&run, true)),
        Err(error) => Err(admission_error(error)),
    }
}

/// The status and code each refusal answers with.
fn admission_error(error: AdmissionError) -> ApiError {
    let message = error.to_string();
    match error {
        AdmissionError::UnknownAgent(_) => ApiError::bad_request("unknown_agent", message),
        AdmissionError::UnknownAgentVersion { .. } => {
            ApiError::bad_request("unknown_agent_version", message)
        }
        AdmissionError::Unsupported(limit) => limit.into(),
        AdmissionError::UnknownTeam => {
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
        }
        AdmissionError::TeamDisabled(_) => {
            ApiError::new(StatusCode::FORBIDDEN, "team_disabled", message)
        }
        AdmissionError::AgentDisabled { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, "agent_disabled", message)
        }
        AdmissionError::IdempotencyConflict { run_id } => {
            ApiError::new(StatusCode::CONFLICT, "idempotency_key_conflict", message)
                .with_details(json!({"run_id": run_id}))
        }
        AdmissionError::RateLimited { retry_after, .. } => {
            let mut error = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message);
            error.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
            error
        }
        AdmissionError::ConcurrentRunLimit { limit } => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "concurrent_run_limit",
                message,
            )
            .with_details(json!({"max_concurrent_runs": limit}));
            error.retry_after = Some(1);
            error
        }
        AdmissionError::NotStarted { run_id, .. } => {
            ApiError::unavailable("orchestrator_unavailable", message)
                .with_details(json!({"run_id": run_id}))
        }
        AdmissionError::NotReady(_) => ApiError::unavailable("run_not_ready", message),
        AdmissionError::Store(error) => error.into(),
        AdmissionError::HotStore(error) => error.into(),
        AdmissionError::Aborted(_) => {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
        }
    }
}

/// 202 with the run, its location, and whether this answered a repeated key.
fn accepted(run: &Run, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(run_json(run))).into_response();
    let headers = response.headers_mut();
    if let Ok(location) = format!("/v1/runs/{}", run.id).parse() {
        headers.insert("location", location);
    }
    if replayed {
        headers.insert(
            "idempotent-replayed",
            axum::http::HeaderValue::from_static("true"),
        );
    }
    response
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

pub async fn list(
    State(state): State<AppState>,
    Caller(team): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|message| ApiError::bad_request("invalid_query", message))?;
    let limit = PageQuery {
        limit: query.limit,
        cursor: None,
    }
    .size()?;
    let cursor = query
        .cursor
        .as_deref()
        .map(|c| {
            crate::ledger::decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request("invalid_query", "malformed cursor"))
        })
        .transpose()?;
    let RunPage { runs, next_cursor } = state
        .engine
        .ledger
        .list_runs(team, status, cursor, limit)
        .await?;
    Ok(Json(json!({
        "data": runs.iter().map(run_json).collect::<Vec<_>>(),
        "next_cursor": next_cursor,
    })))
}

pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let by_model = state.engine.ledger.run_usage(run.id).await?;
    let exact: i64 = by_model.iter().map(|u| u.cost_exact).sum();
    let token_cost = crate::domain::team::exact_to_micros(exact);
    let mut body = run_json(&run);
    body["usage"]["by_model"] = json!(by_model);
    body["cost"] = json!({
        "fee_micros": run.run_fee_micros,
        "token_cost_micros": token_cost,
        "total_micros": run.run_fee_micros + token_cost,
    });
    Ok(Json(body))
}

pub async fn steps(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = page.size()?;
    let after_step = match page.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request("invalid_query", "malformed cursor"))?,
    };
    let run = team_run(&state, team, &id).await?;
    let steps = state.engine.ledger.steps(run.id, after_step, limit).await?;
    let next_cursor = (steps.len() as i64 == limit)
        .then(|| steps.last().map(|s| s.step_no.to_string()))
        .flatten();
    Ok(Json(json!({"data": steps, "next_cursor": next_cursor})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    reason: Option<String>,
}

pub async fn cancel(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        let raw = parse_object(&body, "invalid_body")?;
        serde_json::from_value(raw)
            .map_err(|e| ApiError::bad_request("invalid_body", e.to_string()))?
    };
    if let Some(reason) = &request.reason {
        super::check_reason(reason)?;
    }
    let run = team_run(&state, team, &id).await?;
    if run.status.is_terminal() {
        if run.status == RunStatus::Cancelled {
            return Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response());
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "run_already_finished",
            format!("the run already ended as {}", run.status),
        ));
    }
    let reason = request
        .reason
        .unwrap_or_else(|| "cancelled by the user".to_owned());
    // The flag stops any worker at its next check; settling records the end now.
    state.engine.hot.set_cancel_flag(run.id, &reason).await?;
    state
        .engine
        .finalize(run.id, Terminal::new(StopReason::Cancelled, reason))
        .await?;
    state.orchestrator.stop(run.id).await?;
    let run = team_run(&state, team, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(run_json(&run))).into_response())
}
