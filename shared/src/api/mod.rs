//! The HTTP API (DESIGN §8): one axum router, served in-process by
//! `agentrun dev` and behind API Gateway by the api function.

mod admin;
mod agents;
mod approvals;
mod auth;
mod console;
mod error;
mod events;
pub mod openapi;
mod parts;
pub mod request_id;
mod runs;
mod streams;
mod usage;

use crate::domain::ErrorCode;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

pub use error::ApiError;
pub mod views;
pub use streams::{StreamGate, StreamLimits};

use crate::engine::Engine;
use crate::metrics::{
    Gauge, CIRCUITS_OPEN, CIRCUITS_OPENED, HOT_STORE_DEGRADED, OLDEST_QUEUED_STEP, RUNS_ACTIVE,
    SLOTS_IN_USE, SSE_CONNECTIONS,
};
use crate::ports::{EventSource, Orchestrator};
use crate::sse::RunFollowers;
use views::Health;

/// What every handler may use.
#[derive(Clone)]
pub struct AppState {
    pub engine: Engine,
    pub orchestrator: Arc<dyn Orchestrator>,
    /// The operator's key for `/v1/admin`; without it the admin API is off.
    pub admin_key: Option<Arc<str>>,
    /// One reader per streamed run, shared by all its streams.
    pub followers: Arc<RunFollowers>,
    /// Bounds on open event streams.
    pub streams: Arc<StreamGate>,
    /// Where event streams are served when not here (the relay's URL in
    /// AWS, where this router answers buffered): `/v1/runs/{id}/events`
    /// answers 307 with it.
    pub stream_url: Option<Arc<str>>,
    /// The longest a `GET /v1/runs/{id}?wait=` holds its answer (API
    /// Gateway ends a request at 30 s).
    pub max_wait: std::time::Duration,
    /// Whether `/metrics` answers (the embedded mode: one process holds
    /// them all; Lambda functions write EMF lines instead).
    pub serve_metrics: bool,
}

impl AppState {
    /// Streams read from the ledger.
    pub fn new(
        engine: Engine,
        orchestrator: Arc<dyn Orchestrator>,
        admin_key: Option<Arc<str>>,
    ) -> Self {
        let followers = RunFollowers::new(Arc::new(engine.ledger.clone()), engine.feed.clone());
        Self {
            engine,
            orchestrator,
            admin_key,
            followers,
            streams: StreamGate::new(StreamLimits::default()),
            stream_url: None,
            serve_metrics: false,
            max_wait: std::time::Duration::from_secs(runs::MAX_WAIT_SECONDS),
        }
    }

    /// Streams read from `source` instead of the ledger.
    pub fn reading_events_from(mut self, source: Arc<dyn EventSource>) -> Self {
        self.followers = RunFollowers::new(source, self.engine.feed.clone());
        self
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route("/console", get(console::index))
        .route("/console/", get(console::index))
        .route("/console/console.js", get(console::script))
        .route("/console/console.css", get(console::style))
        .route("/v1/runs", post(runs::create).get(runs::list))
        .route("/v1/runs/{id}", get(runs::show))
        .route("/v1/threads/{id}", get(runs::thread))
        .route("/v1/runs/{id}/steps", get(runs::steps))
        .route("/v1/runs/{id}/output", get(runs::output))
        .route(
            "/v1/runs/{id}/steps/{step_no}/tool_calls/{call_index}/result",
            get(runs::tool_result),
        )
        .route("/v1/runs/{id}/events", get(events::stream))
        .route("/v1/runs/{id}/stream-token", post(events::stream_token))
        .route("/v1/runs/{id}/cancel", post(runs::cancel))
        .route("/v1/runs/{id}/webhooks", get(runs::webhooks))
        .route("/v1/runs/{id}/approvals", get(approvals::list))
        .route(
            "/v1/runs/{id}/approvals/{request_id}",
            post(approvals::answer),
        )
        .route("/v1/agents", get(agents::list))
        .route("/v1/agents/{name}", axum::routing::put(agents::put))
        .route("/v1/agents/{name}/versions/{version}", get(agents::show))
        .route("/v1/usage", get(usage::daily))
        .route("/v1/usage/runs", get(usage::statement))
        .route(
            "/v1/admin/teams",
            post(admin::create_team).get(admin::list_teams),
        )
        .route(
            "/v1/admin/teams/{id}",
            get(admin::show_team).patch(admin::change_team),
        )
        .route(
            "/v1/admin/teams/{id}/keys",
            post(admin::issue_key).get(admin::list_keys),
        )
        .route(
            "/v1/admin/keys/{key_id}",
            axum::routing::delete(admin::revoke_key),
        )
        .route("/v1/admin/prices", get(admin::list_prices))
        .route(
            "/v1/admin/prices/{model}",
            axum::routing::put(admin::set_price),
        )
        .route("/v1/admin/plans", get(admin::list_plans))
        .route(
            "/v1/admin/plans/{name}",
            axum::routing::put(admin::set_plan),
        )
        .route("/v1/admin/reconcile", post(admin::reconcile))
        .fallback(|| async { ApiError::not_found(ErrorCode::RouteNotFound, "no such endpoint") })
        .layer(DefaultBodyLimit::max(crate::domain::limits::MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(error::envelope))
        .layer(request_log())
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// One log line per answered request (method, route, status, latency),
/// in a span that carries the request id.
fn request_log() -> tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    impl Fn(&axum::extract::Request) -> tracing::Span + Clone,
    (),
    tower_http::trace::DefaultOnResponse,
    (),
    (),
    (),
> {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|request: &axum::extract::Request| {
            let request_id = request
                .extensions()
                .get::<request_id::RequestId>()
                .map_or("", |id| id.0.as_str());
            let route = request
                .extensions()
                .get::<axum::extract::MatchedPath>()
                .map_or("unmatched", |path| path.as_str());
            tracing::info_span!("request", method = %request.method(), route, request_id)
        })
        .on_request(())
        .on_response(
            tower_http::trace::DefaultOnResponse::new()
                .level(tracing::Level::INFO)
                .latency_unit(tower_http::LatencyUnit::Millis),
        )
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// The SSE relay: only the event stream (and health).
pub fn relay_router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/v1/runs/{id}/events", get(events::stream))
        .fallback(|| async { ApiError::not_found(ErrorCode::RouteNotFound, "no such endpoint") })
        .layer(axum::middleware::map_response(error::envelope))
        .layer(axum::middleware::map_response(readable_from_any_origin))
        .layer(request_log())
        .layer(axum::middleware::from_fn(request_id::assign))
        .with_state(state)
}

/// The console on the API's origin reads the relay's streams with a stream
/// token in the URL (an EventSource sends no Authorization header and no
/// cookie), so any origin may read what the relay answers. A request with an
/// Authorization header from another origin's page still needs a preflight,
/// which the relay does not grant.
async fn readable_from_any_origin(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN,
        axum::http::HeaderValue::from_static("*"),
    );
    response
}

/// `ok`; `degraded` (200) while the hot store cannot be reached (runs go on
/// with answers from the ledger); `degraded` with 503 when the ledger does
/// not answer. The cause is logged, never shown.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "ops",
    summary = "Health: ok; degraded (200) while the hot store is away; degraded (503) while the database does not answer",
    security(()),
    responses(
        (status = 200, description = "OK", body = views::Health),
        (status = 503, description = "the database does not answer", body = views::Health, headers(("Retry-After" = String))),
    )
)]
async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    match state.engine.ledger.ping().await {
        Ok(()) => {
            let hot = state.engine.hot.health().await;
            let body = if hot.reachable {
                Health {
                    status: "ok",
                    hot_store: None,
                    hot_store_fallbacks: None,
                }
            } else {
                Health {
                    status: "degraded",
                    hot_store: Some("unreachable"),
                    hot_store_fallbacks: Some(hot.fallbacks),
                }
            };
            (axum::http::StatusCode::OK, Json(body)).into_response()
        }
        Err(error) => {
            tracing::warn!(%error, "health check: the ledger does not answer");
            (
                axum::http::StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(Health {
                    status: "degraded",
                    hot_store: None,
                    hot_store_fallbacks: None,
                }),
            )
                .into_response()
        }
    }
}

/// `limit` and `cursor` of a list endpoint.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

impl PageQuery {
    /// The page size asked for (default 50, at most 200).
    pub fn size(&self) -> Result<i64, ApiError> {
        use crate::domain::limits::{DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE};
        let limit = self.limit.unwrap_or(DEFAULT_PAGE_SIZE);
        if !(1..=MAX_PAGE_SIZE).contains(&limit) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("limit must be between 1 and {MAX_PAGE_SIZE}"),
            ));
        }
        Ok(limit)
    }
}

/// A cancel or switch-off reason (shown to teams) within its bound.
pub fn check_reason(reason: &str) -> Result<(), ApiError> {
    use crate::domain::limits::MAX_REASON_CHARS;
    if reason.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            format!("a reason must be at most {MAX_REASON_CHARS} characters"),
        ));
    }
    Ok(())
}

/// A request body: a JSON object (`code` names what is wrong otherwise),
/// without NUL characters, with whole-number floats (`3.0`) read as the
/// integers they are (JSON does not tell them apart).
pub fn parse_object(body: &[u8], code: ErrorCode) -> Result<serde_json::Value, ApiError> {
    fn whole_numbers(value: &mut serde_json::Value) {
        match value {
            serde_json::Value::Number(number) => {
                if let Some(float) = number.as_f64().filter(|_| number.is_f64()) {
                    let fits = float.fract() == 0.0 && float.abs() < 9.0e15;
                    if fits {
                        *value = serde_json::Value::from(float as i64);
                    }
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
            serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers),
            _ => {}
        }
    }
    let mut value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(code, format!("body is not JSON: {e}")))?;
    if !value.is_object() {
        return Err(ApiError::bad_request(
            code,
            "the body must be a JSON object",
        ));
    }
    reject_nul(&value)?;
    whole_numbers(&mut value);
    Ok(value)
}

/// PostgreSQL cannot store NUL in text: a NUL in any string or key of a
/// request body is refused up front (400) instead of failing deeper down.
fn reject_nul(value: &serde_json::Value) -> Result<(), ApiError> {
    fn has_nul(value: &serde_json::Value) -> bool {
        match value {
            serde_json::Value::String(text) => text.contains('\0'),
            serde_json::Value::Array(items) => items.iter().any(has_nul),
            serde_json::Value::Object(map) => map
                .iter()
                .any(|(key, value)| key.contains('\0') || has_nul(value)),
            _ => false,
        }
    }
    if has_nul(value) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "strings must not contain the NUL character (\\u0000)",
        ));
    }
    Ok(())
}

/// Prometheus text: the counters and histograms of this process and the
/// gauges read now. The operator's key is required when one is set.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "admin",
    summary = "Prometheus text of this process's metrics (agentrun dev; the admin key as the bearer token)",
    security(("admin" = [])),
    responses(
        (status = 200, description = "OK", content_type = "text/plain", body = String),
        (status = 404, response = error::ErrorBody),
    )
)]
async fn metrics(
    State(state): State<AppState>,
    operator: Result<auth::Admin, ApiError>,
) -> Response {
    if !state.serve_metrics {
        return ApiError::not_found(ErrorCode::RouteNotFound, "no such endpoint").into_response();
    }
    // Cross-team figures: only for the operator (without an admin key, for
    // nobody).
    if let Err(error) = operator {
        return error.into_response();
    }
    let gauges = gauges(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.engine.metrics.prometheus(&gauges),
    )
        .into_response()
}

/// The metrics read when shown (a store that does not answer leaves its
/// gauge out).
pub async fn gauges(state: &AppState) -> Vec<Gauge> {
    let engine = &state.engine;
    let mut gauges = vec![
        Gauge::new(SSE_CONNECTIONS, state.streams.open() as f64),
        Gauge::new(CIRCUITS_OPEN, engine.circuits.open_now() as f64),
        Gauge::counted(CIRCUITS_OPENED, engine.circuits.opened()),
    ];
    let hot = engine.hot.health().await;
    gauges.push(Gauge::new(
        HOT_STORE_DEGRADED,
        if hot.reachable { 0.0 } else { 1.0 },
    ));
    if let Ok((queued, running)) = engine.ledger.open_run_counts().await {
        gauges.push(Gauge::new(RUNS_ACTIVE, queued as f64).with("status", "queued"));
        gauges.push(Gauge::new(RUNS_ACTIVE, running as f64).with("status", "running"));
    }
    if let Ok(holders) = engine.hot.slot_holders().await {
        gauges.push(Gauge::new(SLOTS_IN_USE, holders.len() as f64));
    }
    if let Some(age) = state.orchestrator.oldest_queued_step() {
        gauges.push(Gauge::new(OLDEST_QUEUED_STEP, age.as_secs_f64()));
    }
    gauges
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}
