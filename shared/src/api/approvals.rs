//! `/v1/runs/{id}/approvals`: a run's approval requests, and the answers
//! that let it go on.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::Caller;
use super::runs::team_run;
use super::views::ApprovalList;
use super::{check_reason, parse_object, ApiError, AppState};
use crate::domain::{Approval, ApprovalAnswer, ErrorCode, RunId};
use crate::ledger::{Answered, Resume};

/// The body of `POST /v1/runs/{id}/approvals/{request_id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AnswerRequest {
    /// Yes: the call is made. No: the model is told it was refused.
    approve: bool,
    /// Shown to the model with a refusal, and kept with the answer.
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    comment: Option<String>,
    /// With `approve`: the arguments the call is made with instead of the
    /// model's.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    arguments: Option<Value>,
}

/// The request a route names.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ApprovalPath {
    /// The run.
    id: RunId,
    /// The request (`request_id` of its `approval.requested` event).
    request_id: uuid::Uuid,
}

/// A run's approval requests.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/approvals",
    tag = "runs",
    summary = "A run's approval requests and their answers",
    params(super::runs::RunPath),
    responses(
        (status = 200, description = "OK", body = ApprovalList),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
) -> Result<Json<ApprovalList>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let data = state.engine.ledger.run_approvals(run.id).await?;
    Ok(Json(ApprovalList { data }))
}

/// Answer an approval request.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/approvals/{request_id}",
    tag = "runs",
    summary = "Approve or refuse a call the run waits on",
    params(ApprovalPath),
    request_body(content = AnswerRequest),
    responses(
        (status = 200, description = "Recorded; once every request of the step is answered, the run goes on", body = Approval),
        (status = 400, response = super::error::ErrorBody),
        (status = 404, response = super::error::ErrorBody),
        (status = 409, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
        (status = 503, response = super::error::ErrorBody),
    )
)]
pub async fn answer(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path((id, request_id)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<Approval>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let not_found = || {
        ApiError::not_found(
            ErrorCode::ApprovalNotFound,
            format!("run {id} has no approval request {request_id}"),
        )
    };
    let request_id: uuid::Uuid = request_id.parse().map_err(|_| not_found())?;
    let raw = parse_object(&body, ErrorCode::InvalidBody)?;
    let request: AnswerRequest = serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.to_string()))?;
    if let Some(comment) = &request.comment {
        check_reason(comment)?;
    }
    if request.arguments.as_ref().is_some_and(|a| !a.is_object()) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "arguments must be a JSON object",
        ));
    }
    if request.arguments.is_some() && !request.approve {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "arguments go with an approval (approve: true)",
        ));
    }
    let answer = ApprovalAnswer {
        approve: request.approve,
        comment: request.comment,
        arguments: request.arguments,
    };
    let answered = state
        .engine
        .ledger
        .answer_approval(team, run.id, request_id, &answer)
        .await?;
    match answered {
        Answered::Recorded {
            approval,
            resume,
            last_seq,
        } => {
            state.engine.feed.publish(run.id, last_seq).await;
            if let Some(resume) = resume {
                go_on(&state, &resume).await?;
            }
            Ok(Json(approval))
        }
        Answered::RunNotFound => Err(ApiError::not_found(
            ErrorCode::RunNotFound,
            format!("no run {id}"),
        )),
        Answered::RequestNotFound => Err(not_found()),
        Answered::AlreadyAnswered { approval, resume } => {
            // A repeated answer may follow one whose resume failed: go on now.
            if let Some(resume) = resume {
                go_on(&state, &resume).await?;
            }
            Err(ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::ApprovalAlreadyAnswered,
                format!(
                    "request {request_id} was answered already ({})",
                    approval.status
                ),
            )
            .with_details(json!({"approval": approval})))
        }
        Answered::Expired(approval) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::ApprovalExpired,
            format!(
                "request {request_id} expired at {}; the run is ending approval_timeout",
                approval.expires_at
            ),
        )),
        Answered::RunEnded(status) => Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RunAlreadyFinished,
            format!("the run already ended as {status}"),
        )),
    }
}

/// Wakes the run's driver, or answers its state machine's wait.
async fn go_on(state: &AppState, resume: &Resume) -> Result<(), ApiError> {
    state
        .orchestrator
        .resume(resume.run, resume.step_no, resume.wait_token.as_deref())
        .await?;
    Ok(())
}
