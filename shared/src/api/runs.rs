//! `/v1/runs`: create (idempotent), list, show, steps, cancel.

use crate::domain::ErrorCode;
use axum::body::Bytes;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Datelike, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::parts::{fit, part, OutputQuery, PartQuery};
use super::views::{
    CostView, OutputPart, Page, ResultPart, RunView, StepView, WebhookDeliveries, WebhookView,
};
use super::{parse_object, ApiError, AppState, PageQuery};
use crate::admission::{self, AdmissionError, Admitted, Continues, IdempotencyKey, RunRequest};
use crate::domain::limits::{check_run_request, MAX_RESPONSE_BYTES};
use crate::domain::{
    AgentName, Run, RunId, RunStatus, StopReason, TeamId, Terminal, ThreadId, Webhook,
};
use crate::ledger::{encode_cursor, RunFilter, RunPage};

const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// The body of `POST /v1/runs`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateRun {
    #[schema(value_type = AgentName)]
    agent: String,
    /// The agent's version; the latest without it.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 2147483647)]
    version: Option<i32>,
    #[schema(schema_with = super::openapi::run_input)]
    input: Value,
    #[serde(default)]
    #[schema(schema_with = super::openapi::run_metadata)]
    metadata: Option<Value>,
    /// The run's own webhook; without it the agent's (if any) is used.
    #[serde(default)]
    webhook: Option<WebhookRequest>,
    /// Continue this conversation: the run's prompt begins with the
    /// messages of the thread's newest run, which must have ended.
    #[serde(default)]
    thread_id: Option<ThreadId>,
    /// Continue this ended run (the newest of its thread): the run's
    /// prompt begins with its messages. Not with `thread_id`.
    #[serde(default)]
    previous_run_id: Option<RunId>,
}

/// Where the run's end is announced: agentrun POSTs `{id, type,
/// created_at, run}` signed with the secret (`X-Agentrun-Timestamp`,
/// `X-Agentrun-Signature: sha256=<HMAC of timestamp.body>`), retried with
/// backoff for up to 24 h. (Checked before it becomes a `Webhook`.)
#[derive(Deserialize, utoipa::ToSchema)]
#[schema(as = Webhook)]
#[serde(deny_unknown_fields)]
struct WebhookRequest {
    /// An http(s) URL; internal addresses are refused unless the operator
    /// allows them.
    #[schema(format = "uri", pattern = "^https?://", max_length = 2048)]
    url: String,
    /// Signs every delivery; never shown by reads.
    #[serde(default)]
    #[schema(required = true, value_type = String, min_length = 1, max_length = 256, pattern = r"\S", write_only)]
    secret: Option<String>,
}

/// The run a `/v1/runs/{id}/...` route names.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct RunPath {
    /// The run.
    id: crate::domain::RunId,
}

fn parse_run_id(raw: &str) -> Result<RunId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(ErrorCode::RunNotFound, format!("no run {raw}")))
}

/// A team's run, or 404 (also for another team's run: existence is not confirmed).
pub async fn team_run(state: &AppState, team: TeamId, raw_id: &str) -> Result<Run, ApiError> {
    let id = parse_run_id(raw_id)?;
    state
        .engine
        .ledger
        .get_team_run(team, id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::RunNotFound, format!("no run {raw_id}")))
}

/// Start a run.
#[utoipa::path(
    post,
    path = "/v1/runs",
    tag = "runs",
    summary = "Start a run, or continue a conversation with thread_id or previous_run_id (404 thread_not_found/run_not_found; 409 thread_busy while the run to continue goes on or once another run continues it; 403 team_disabled/agent_disabled; 429 rate_limited/concurrent_run_limit with Retry-After; 503 orchestrator_unavailable: the run in details.run_id is recorded and starts once the orchestrator answers, retry with the same Idempotency-Key)",
    params(("Idempotency-Key" = Option<String>, Header, min_length = 1, max_length = 255, pattern = "^[\\x21-\\x7e]+$", description = "a repeated key with the same body answers with the same run")),
    request_body = CreateRun,
    responses(
        (status = 202, description = "Accepted; the same run again for a repeated Idempotency-Key and body", body = RunView),
        (status = 403, response = super::error::ErrorBody),
        (status = 404, response = super::error::ErrorBody),
        (status = 409, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    Caller(team): Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let raw = parse_object(&body, ErrorCode::InvalidBody)?;
    let request: CreateRun = serde_json::from_value(raw.clone())
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.to_string()))?;
    let agent = AgentName::parse(&request.agent)
        .map_err(|message| ApiError::bad_request(ErrorCode::InvalidAgentName, message))?;
    if request.input.is_null() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "input must not be null",
        ));
    }
    let metadata = request.metadata.unwrap_or_else(|| json!({}));
    if !metadata.is_object() {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "metadata must be an object",
        ));
    }
    check_run_request(&request.input, &metadata)?;
    let webhook = match request.webhook {
        None => None,
        Some(WebhookRequest { url, secret }) => {
            let problems = Webhook::problems(&url, secret.as_deref());
            if !problems.is_empty() {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidWebhook,
                    problems.join("; "),
                ));
            }
            state
                .engine
                .tools
                .outbound()
                .check_url(&url)
                .map_err(|e| ApiError::bad_request(ErrorCode::InvalidWebhook, e.to_string()))?;
            secret.map(|secret| Webhook {
                url,
                secret: secret.into(),
            })
        }
    };
    let idempotency = match headers.get("idempotency-key") {
        None => None,
        Some(value) => {
            let key = value.to_str().map_err(|_| {
                ApiError::bad_request(
                    ErrorCode::InvalidIdempotencyKey,
                    "Idempotency-Key must be ASCII",
                )
            })?;
            let printable = key.bytes().all(|b| b.is_ascii_graphic());
            if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_LEN || !printable {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidIdempotencyKey,
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
    let continues = match (request.thread_id, request.previous_run_id) {
        (Some(_), Some(_)) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "give thread_id or previous_run_id, not both",
            ))
        }
        (Some(thread), None) => Some(Continues::Thread(thread)),
        (None, Some(run)) => Some(Continues::Run(run)),
        (None, None) => None,
    };
    let request = RunRequest {
        team,
        agent,
        version: request.version,
        input: request.input,
        metadata,
        idempotency,
        webhook,
        continues,
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
        AdmissionError::UnknownAgent(_) => ApiError::bad_request(ErrorCode::UnknownAgent, message),
        AdmissionError::UnknownAgentVersion { .. } => {
            ApiError::bad_request(ErrorCode::UnknownAgentVersion, message)
        }
        AdmissionError::Unsupported(limit) => limit.into(),
        AdmissionError::UnknownTeam => {
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        }
        AdmissionError::TeamDisabled(_) => {
            ApiError::new(StatusCode::FORBIDDEN, ErrorCode::TeamDisabled, message)
        }
        AdmissionError::AgentDisabled { .. } => {
            ApiError::new(StatusCode::FORBIDDEN, ErrorCode::AgentDisabled, message)
        }
        AdmissionError::IdempotencyConflict { run_id } => ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::IdempotencyKeyConflict,
            message,
        )
        .with_details(json!({"run_id": run_id})),
        AdmissionError::RateLimited { retry_after, .. } => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                message,
            );
            error.retry_after = Some(retry_after.as_secs_f64().ceil().max(1.0) as u64);
            error
        }
        AdmissionError::ConcurrentRunLimit { limit } => {
            let mut error = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::ConcurrentRunLimit,
                message,
            )
            .with_details(json!({"max_concurrent_runs": limit}));
            error.retry_after = Some(1);
            error
        }
        AdmissionError::NotStarted { run_id, .. } => {
            ApiError::unavailable(ErrorCode::OrchestratorUnavailable, message)
                .with_details(json!({"run_id": run_id}))
        }
        AdmissionError::NotReady(_) => ApiError::unavailable(ErrorCode::RunNotReady, message),
        AdmissionError::UnknownThread(_) => ApiError::not_found(ErrorCode::ThreadNotFound, message),
        AdmissionError::UnknownPreviousRun(_) => {
            ApiError::not_found(ErrorCode::RunNotFound, message)
        }
        AdmissionError::PreviousNotEnded(run_id) | AdmissionError::PreviousContinued(run_id) => {
            ApiError::new(StatusCode::CONFLICT, ErrorCode::ThreadBusy, message)
                .with_details(json!({"run_id": run_id}))
        }
        AdmissionError::Store(error) => error.into(),
        AdmissionError::HotStore(error) => error.into(),
        AdmissionError::Aborted(_) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            message,
        ),
    }
}

/// 202 with the run, its location, and whether this answered a repeated key.
fn accepted(run: &Run, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(RunView::from(run))).into_response();
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    #[param(value_type = Option<RunStatus>)]
    status: Option<String>,
    /// The agent the run was started with.
    #[param(value_type = Option<AgentName>)]
    agent: Option<String>,
    /// Created at or after (RFC 3339, 1970-9999); the year as written.
    #[param(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    created_after: Option<String>,
    /// Created before (RFC 3339, 1970-9999); the year as written.
    #[param(format = DateTime, pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-")]
    created_before: Option<String>,
    /// With `metadata_value`: runs whose metadata has this key with that
    /// string value.
    #[param(min_length = 1, max_length = 128, pattern = "^[^\\u0000]*$")]
    metadata_key: Option<String>,
    /// With `metadata_key`.
    #[param(pattern = "^[^\\u0000]*$")]
    metadata_value: Option<String>,
    #[param(minimum = 1, maximum = 200, default = 50)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    cursor: Option<String>,
}

/// An RFC 3339 time of a listing's query.
fn query_time(name: &str, raw: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    raw.map(|raw| {
        DateTime::parse_from_rfc3339(raw)
            .ok()
            .filter(|at| (1970..=9999).contains(&at.year()))
            .map(|at| at.with_timezone(&Utc))
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    format!("{name} must be an RFC 3339 time between 1970 and 9999"),
                )
            })
    })
    .transpose()
}

/// List runs.
#[utoipa::path(
    get,
    path = "/v1/runs",
    tag = "runs",
    summary = "List runs, newest first",
    params(ListQuery),
    responses((status = 200, description = "OK", body = Page<RunView>))
)]
pub async fn list(
    State(state): State<AppState>,
    Caller(team): Caller,
    Query(query): Query<ListQuery>,
) -> Result<Json<Page<RunView>>, ApiError> {
    let status = query
        .status
        .as_deref()
        .map(str::parse::<RunStatus>)
        .transpose()
        .map_err(|message| ApiError::bad_request(ErrorCode::InvalidQuery, message))?;
    let agent = query
        .agent
        .as_deref()
        .map(|raw| {
            AgentName::parse(raw)
                .map_err(|message| ApiError::bad_request(ErrorCode::InvalidQuery, message))
        })
        .transpose()?;
    let metadata = match (query.metadata_key, query.metadata_value) {
        (None, None) => None,
        (Some(key), Some(value)) => {
            if key.is_empty()
                || key.chars().count() > 128
                || value.contains('\0')
                || key.contains('\0')
            {
                return Err(ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "metadata_key must be 1-128 characters, without NUL",
                ));
            }
            Some((key, value))
        }
        _ => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                "metadata_key and metadata_value go together",
            ))
        }
    };
    let filter = RunFilter {
        status,
        agent: agent.map(String::from),
        created_after: query_time("created_after", query.created_after.as_deref())?,
        created_before: query_time("created_before", query.created_before.as_deref())?,
        metadata,
    };
    let page = PageQuery {
        limit: query.limit,
        cursor: query.cursor,
    };
    runs_page(&state, team, Listing::Filtered(&filter), &page)
        .await
        .map(Json)
}

/// The thread a `/v1/threads/{id}` route names.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)]
pub struct ThreadPath {
    /// The thread (its first run's id).
    id: ThreadId,
}

/// A conversation's runs.
#[utoipa::path(
    get,
    path = "/v1/threads/{id}",
    tag = "runs",
    summary = "A thread's runs, newest first: each continues the one after it in the list (`previous_run_id`), its prompt beginning with that run's messages",
    params(
        ThreadPath,
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$", description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "OK", body = Page<RunView>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn thread(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<RunView>>, ApiError> {
    let unknown = || ApiError::not_found(ErrorCode::ThreadNotFound, format!("no thread {id}"));
    let thread: ThreadId = id.parse().map_err(|_| unknown())?;
    let first_page = page.cursor.is_none();
    let runs = runs_page(&state, team, Listing::Thread(thread), &page).await?;
    if first_page && runs.data.is_empty() {
        return Err(unknown());
    }
    Ok(Json(runs))
}

/// Which of a team's runs a page shows.
enum Listing<'a> {
    Filtered(&'a RunFilter),
    Thread(ThreadId),
}

/// One page of a team's runs, newest first.
async fn runs_page(
    state: &AppState,
    team: TeamId,
    listing: Listing<'_>,
    page: &PageQuery,
) -> Result<Page<RunView>, ApiError> {
    let limit = page.size()?;
    let cursor = page
        .cursor
        .as_deref()
        .map(|c| {
            crate::ledger::decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidQuery, "malformed cursor"))
        })
        .transpose()?;
    let RunPage {
        runs,
        mut next_cursor,
    } = match listing {
        Listing::Filtered(filter) => {
            state
                .engine
                .ledger
                .list_runs(team, filter, cursor, limit)
                .await?
        }
        Listing::Thread(thread) => {
            state
                .engine
                .ledger
                .thread_runs(team, thread, cursor, limit)
                .await?
        }
    };
    let mut data: Vec<RunView> = runs.iter().map(RunView::from).collect();
    if fit(&mut data, MAX_RESPONSE_BYTES) {
        next_cursor = data
            .len()
            .checked_sub(1)
            .and_then(|last| runs.get(last))
            .map(|last| encode_cursor(last.created_at, last.id));
    }
    Ok(Page { data, next_cursor })
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    /// Seconds to wait for the run to end (or to come to wait for approval)
    /// before answering (on AWS at most AGENTRUN_MAX_WAIT_SECONDS, 25 by default).
    #[param(minimum = 0, maximum = 60)]
    wait: Option<u64>,
}

/// The longest `?wait=` (seconds).
pub const MAX_WAIT_SECONDS: u64 = 60;

/// A run.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}",
    tag = "runs",
    summary = "A run",
    params(RunPath, ShowQuery),
    responses(
        (status = 200, description = "OK", body = RunView),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(query): Query<ShowQuery>,
) -> Result<Json<RunView>, ApiError> {
    let wait = query.wait.unwrap_or(0);
    if wait > MAX_WAIT_SECONDS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("wait must be between 0 and {MAX_WAIT_SECONDS} seconds"),
        ));
    }
    let mut run = team_run(&state, team, &id).await?;
    if wait > 0 && !needs_no_wait(&run) {
        run = wait_for_end(&state, run, Duration::from_secs(wait).min(state.max_wait)).await?;
    }
    let by_model = state.engine.ledger.run_usage(run.id).await?;
    let exact: i64 = by_model.iter().map(|u| u.cost_exact).sum();
    let token_cost = crate::domain::team::exact_to_micros(exact);
    let mut body = RunView::from(&run);
    body.usage.by_model = Some(by_model);
    body.cost = Some(CostView {
        fee_micros: run.run_fee_micros,
        token_cost_micros: token_cost,
        total_micros: run.run_fee_micros + token_cost,
    });
    Ok(Json(body))
}

/// A long poll answers at once for a run that has ended or waits for a
/// person's answer: nothing changes until somebody acts.
fn needs_no_wait(run: &Run) -> bool {
    run.status.is_terminal() || run.status == RunStatus::Waiting
}

/// Reads the run again on each signal of a commit of its (and at least
/// every second, for feeds without signals) until it ends, comes to wait
/// for approval, or `wait` is over.
async fn wait_for_end(state: &AppState, mut run: Run, wait: Duration) -> Result<Run, ApiError> {
    use tokio::sync::broadcast::error::RecvError;
    let until = tokio::time::Instant::now() + wait;
    let mut signals = state.engine.feed.subscribe();
    while !needs_no_wait(&run) {
        let left = until.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        let id = run.id;
        let signalled = async {
            loop {
                match signals.recv().await {
                    Ok((signalled, _)) if signalled == id => return,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => return,
                    Err(RecvError::Closed) => std::future::pending::<()>().await,
                }
            }
        };
        let _ = tokio::time::timeout(left.min(Duration::from_secs(1)), signalled).await;
        run =
            state.engine.ledger.get_run(run.id).await?.ok_or_else(|| {
                ApiError::not_found(ErrorCode::RunNotFound, format!("no run {id}"))
            })?;
    }
    Ok(run)
}

/// A run's steps.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/steps",
    tag = "runs",
    summary = "A run's committed steps with their tool calls (a page also ends early rather than exceed 4 MiB)",
    params(
        RunPath,
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 200, description = "page size (default 50)"),
        ("cursor" = Option<String>, Query, pattern = "^[0-9]{1,9}$", description = "next_cursor of the previous page"),
    ),
    responses(
        (status = 200, description = "OK", body = Page<StepView>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn steps(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(page): Query<PageQuery>,
) -> Result<Json<Page<StepView>>, ApiError> {
    let limit = page.size()?;
    let after_step = match page.cursor.as_deref() {
        None => 0,
        Some(cursor) => cursor
            .parse::<i32>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidQuery, "malformed cursor"))?,
    };
    let run = team_run(&state, team, &id).await?;
    let steps = state.engine.ledger.steps(run.id, after_step, limit).await?;
    let full_page = steps.len() as i64 == limit;
    let mut data: Vec<StepView> = steps
        .into_iter()
        .map(|step| StepView::new(run.id, step))
        .collect();
    let cut = fit(&mut data, MAX_RESPONSE_BYTES);
    let next_cursor = (cut || full_page)
        .then(|| data.last().map(|view| view.step.step_no.to_string()))
        .flatten();
    Ok(Json(Page { data, next_cursor }))
}

/// `GET /v1/runs/{id}/output?part=output|raw_output&offset=`: the run's
/// output (as JSON text) or raw output, in parts.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/output",
    tag = "runs",
    summary = "A run's output (as JSON text) or raw output, in parts of at most 1 MiB; for an output too large to show in the run (output_inline false)",
    params(RunPath, OutputQuery),
    responses(
        (status = 200, description = "one part", body = OutputPart),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn output(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(query): Query<OutputQuery>,
) -> Result<Json<OutputPart>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let (which, text) = match query.part.as_deref().unwrap_or("output") {
        "output" => (
            "output",
            run.output
                .as_ref()
                .map(|output| output.to_string())
                .unwrap_or_default(),
        ),
        "raw_output" => ("raw_output", run.raw_output.clone().unwrap_or_default()),
        other => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("part must be output or raw_output, not {other:?}"),
            ))
        }
    };
    Ok(Json(OutputPart {
        run_id: run.id,
        part: which,
        text: part(&text, query.offset.unwrap_or(0)),
    }))
}

/// `GET /v1/runs/{id}/steps/{step}/tool_calls/{index}/result?offset=`: one
/// tool call's whole result, in parts.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/steps/{step_no}/tool_calls/{call_index}/result",
    tag = "runs",
    summary = "One tool call's whole result, in parts of at most 1 MiB (the steps listing cuts results over 32 KiB)",
    params(RunPath, ("step_no" = i32, Path, minimum = -2147483648, maximum = 2147483647), ("call_index" = i32, Path, minimum = -2147483648, maximum = 2147483647), PartQuery),
    responses(
        (status = 200, description = "one part", body = ResultPart),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn tool_result(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path((id, step_no, call_index)): Path<(String, i32, i32)>,
    Query(query): Query<PartQuery>,
) -> Result<Json<ResultPart>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let calls = state.engine.ledger.tool_calls(run.id, step_no).await?;
    let call = calls
        .iter()
        .find(|c| c.call_index == call_index)
        .ok_or_else(|| {
            ApiError::not_found(
                ErrorCode::ToolCallNotFound,
                format!("run {id} has no tool call {call_index} in step {step_no}"),
            )
        })?;
    Ok(Json(ResultPart {
        run_id: run.id,
        step_no,
        call_index,
        text: part(&call.result, query.offset.unwrap_or(0)),
    }))
}

/// The body of `POST /v1/runs/{id}/cancel` (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CancelRequest {
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    reason: Option<String>,
}

/// Cancel a run.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/cancel",
    tag = "runs",
    summary = "Cancel a run",
    params(RunPath),
    request_body(content = Option<CancelRequest>),
    responses(
        (status = 202, description = "OK", body = RunView),
        (status = 404, response = super::error::ErrorBody),
        (status = 409, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CancelRequest = if body.is_empty() {
        CancelRequest::default()
    } else {
        let raw = parse_object(&body, ErrorCode::InvalidBody)?;
        serde_json::from_value(raw)
            .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.to_string()))?
    };
    if let Some(reason) = &request.reason {
        super::check_reason(reason)?;
    }
    let run = team_run(&state, team, &id).await?;
    if run.status.is_terminal() {
        if run.status == RunStatus::Cancelled {
            return Ok((StatusCode::ACCEPTED, Json(RunView::from(&run))).into_response());
        }
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            ErrorCode::RunAlreadyFinished,
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
    Ok((StatusCode::ACCEPTED, Json(RunView::from(&run))).into_response())
}

/// `GET /v1/runs/{id}/webhooks`: the run's webhook delivery (queued when
/// the run ended) with every attempt.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/webhooks",
    tag = "runs",
    summary = "A run's webhook delivery and its attempts",
    params(RunPath),
    responses(
        (status = 200, description = "OK", body = WebhookDeliveries),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn webhooks(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
) -> Result<Json<WebhookDeliveries>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let deliveries = state.engine.ledger.webhook_deliveries(run.id).await?;
    Ok(Json(WebhookDeliveries {
        webhook: run.webhook_url.map(|url| WebhookView { url }),
        data: deliveries,
    }))
}
