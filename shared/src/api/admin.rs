//! `/v1/admin`: the operator's API (admin key only) — teams, limits, kill
//! switches, keys, prices, plans.

use crate::domain::ErrorCode;
use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::views::{IssuedKeyView, Page, Reconciled, TeamView, TokensToday};
use super::{ApiError, AppState};
use crate::domain::{AgentName, TeamId, TeamLimits};
use crate::ledger::{KeyInfo, ModelPrice, Plan};
use crate::ledger::{Team, TeamChange};

/// Parses a JSON body into `T`, refusing unknown fields with a clear 400.
pub fn parse_body<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiError> {
    let raw = super::parse_object(body, ErrorCode::InvalidBody)?;
    serde_json::from_value(raw)
        .map_err(|e| ApiError::bad_request(ErrorCode::InvalidBody, e.to_string()))
}

fn team_id(raw: &str) -> Result<TeamId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::not_found(ErrorCode::TeamNotFound, format!("no team {raw}")))
}

async fn team_view(state: &AppState, team: Team) -> Result<TeamView, ApiError> {
    let running = state.engine.hot.running_runs(team.id).await?;
    let today = chrono::Utc::now().date_naive();
    let (used, reserved) = state.engine.hot.tokens_of_day(team.id, today).await?;
    Ok(TeamView {
        team,
        running_runs: running,
        tokens_today: TokensToday {
            day: today,
            used,
            reserved,
            daily_budget: None,
        },
    })
}

/// The body of `POST /v1/admin/teams`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CreateTeam {
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// An existing plan; `default` without it.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    plan: Option<String>,
    #[serde(default)]
    limits: Option<TeamLimits>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/teams",
    tag = "admin",
    summary = "Create a team",
    security(("admin" = [])),
    request_body = CreateTeam,
    responses(
        (status = 201, description = "OK", body = TeamView),
        (status = 404, response = super::error::ErrorBody),
        (status = 409, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn create_team(
    State(state): State<AppState>,
    _: Admin,
    body: Bytes,
) -> Result<(StatusCode, Json<TeamView>), ApiError> {
    let request: CreateTeam = parse_body(&body)?;
    let name = request.name.trim();
    if name.is_empty() || request.name.chars().count() > 100 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidBody,
            "name must be 1-100 characters",
        ));
    }
    let limits = request.limits.unwrap_or_default();
    limits.validate().map_err(|problems| {
        ApiError::bad_request(ErrorCode::InvalidLimits, "the limits have problems")
            .with_details(json!({"problems": problems}))
    })?;
    let plan = request.plan.unwrap_or_else(|| "standard".to_owned());
    ensure_plan(&state, &plan).await?;
    let team = state
        .engine
        .ledger
        .create_team(name, &plan, &limits)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::CONFLICT,
                ErrorCode::TeamExists,
                format!("a team named {name:?} exists"),
            )
        })?;
    Ok((StatusCode::CREATED, Json(team_view(&state, team).await?)))
}

async fn ensure_plan(state: &AppState, plan: &str) -> Result<(), ApiError> {
    let plans = state.engine.ledger.list_plans().await?;
    if plans.iter().any(|p| p.name == plan) {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            ErrorCode::UnknownPlan,
            format!("no plan named {plan:?}"),
        ))
    }
}

#[utoipa::path(
    get,
    path = "/v1/admin/teams",
    tag = "admin",
    summary = "List teams",
    security(("admin" = [])),
    responses(
        (status = 200, description = "OK", body = Page<TeamView>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn list_teams(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Page<TeamView>>, ApiError> {
    let mut data = Vec::new();
    for team in state.engine.ledger.list_teams().await? {
        data.push(team_view(&state, team).await?);
    }
    Ok(Json(Page {
        data,
        next_cursor: None,
    }))
}

#[utoipa::path(
    get,
    path = "/v1/admin/teams/{id}",
    tag = "admin",
    summary = "A team, its running runs and today's tokens",
    security(("admin" = [])),
    params(("id" = TeamId, Path, description = "the team")),
    responses(
        (status = 200, description = "OK", body = TeamView),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn show_team(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<TeamView>, ApiError> {
    let team = state
        .engine
        .ledger
        .team(team_id(&id)?)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TeamNotFound, format!("no team {id}")))?;
    Ok(Json(team_view(&state, team).await?))
}

/// Limits to change; fields left out (or null) stay as they are.
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[schema(as = TeamLimitsPatch)]
#[serde(deny_unknown_fields)]
struct LimitsPatch {
    #[schema(minimum = 1, maximum = 100000)]
    max_concurrent_runs: Option<i32>,
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    daily_token_budget: Option<i64>,
    #[schema(exclusive_minimum = 0, maximum = 1000000)]
    runs_per_second: Option<f64>,
    #[schema(minimum = 1, maximum = 1000000)]
    run_burst: Option<i32>,
}

/// An agent's kill switch.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct AgentSwitch {
    disabled: bool,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    reason: Option<String>,
}

/// The body of `PATCH /v1/admin/teams/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct ChangeTeam {
    /// An existing plan.
    #[serde(default)]
    #[schema(min_length = 1, max_length = 64)]
    plan: Option<String>,
    #[serde(default)]
    limits: Option<LimitsPatch>,
    /// The operator kill switch for the whole team.
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(default)]
    #[schema(max_length = 1000, pattern = "^[^\\u0000]*$")]
    reason: Option<String>,
    /// Kill switches per agent, by agent name.
    #[serde(default)]
    #[schema(schema_with = agent_switches)]
    agents: BTreeMap<String, AgentSwitch>,
}

/// `{"<agent name>": AgentSwitch}`.
fn agent_switches() -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .additional_properties(Some(<AgentSwitch as utoipa::PartialSchema>::schema()))
        .property_names(Some(super::openapi::agent_name_string()))
        .build()
}

const DEFAULT_SWITCH_REASON: &str = "switched off by an operator";

#[utoipa::path(
    patch,
    path = "/v1/admin/teams/{id}",
    tag = "admin",
    summary = "Change a team's plan and limits; switch the team or its agents off and on",
    security(("admin" = [])),
    params(("id" = TeamId, Path, description = "the team")),
    request_body = ChangeTeam,
    responses(
        (status = 200, description = "OK", body = TeamView),
        (status = 404, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn change_team(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<TeamView>, ApiError> {
    let request: ChangeTeam = parse_body(&body)?;
    let reasons = request
        .reason
        .iter()
        .chain(request.agents.values().filter_map(|s| s.reason.as_ref()));
    for reason in reasons {
        super::check_reason(reason)?;
    }
    let ledger = &state.engine.ledger;
    let id = team_id(&id)?;
    let current = ledger
        .team(id)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TeamNotFound, format!("no team {id}")))?;
    let limits = request.limits.map(|patch| TeamLimits {
        max_concurrent_runs: patch
            .max_concurrent_runs
            .unwrap_or(current.limits.max_concurrent_runs),
        daily_token_budget: patch
            .daily_token_budget
            .unwrap_or(current.limits.daily_token_budget),
        runs_per_second: patch
            .runs_per_second
            .unwrap_or(current.limits.runs_per_second),
        run_burst: patch.run_burst.unwrap_or(current.limits.run_burst),
    });
    if let Some(limits) = &limits {
        limits.validate().map_err(|problems| {
            ApiError::bad_request(ErrorCode::InvalidLimits, "the limits have problems")
                .with_details(json!({"problems": problems}))
        })?;
    }
    if let Some(plan) = &request.plan {
        ensure_plan(&state, plan).await?;
    }
    let mut agents = BTreeMap::new();
    for (name, switch) in request.agents {
        let name = AgentName::parse(&name)
            .map_err(|m| ApiError::bad_request(ErrorCode::InvalidAgentName, m))?;
        let value = switch.disabled.then(|| {
            switch
                .reason
                .unwrap_or_else(|| DEFAULT_SWITCH_REASON.to_owned())
        });
        agents.insert(name.to_string(), value);
    }
    let change = TeamChange {
        plan: request.plan,
        limits,
        disabled: request.disabled.map(|off| {
            off.then(|| {
                request
                    .reason
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SWITCH_REASON.to_owned())
            })
        }),
        agents,
    };
    let team = ledger
        .change_team(id, &change)
        .await?
        .ok_or_else(|| ApiError::not_found(ErrorCode::TeamNotFound, format!("no team {id}")))?;
    tracing::info!(team_id = %id, disabled = ?team.disabled_reason, agents_off = ?team.disabled_agents, "team changed by an operator");
    Ok(Json(team_view(&state, team).await?))
}

/// The body of `POST /v1/admin/teams/{id}/keys` (optional).
#[derive(Deserialize, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct IssueKey {
    /// When the key stops working (RFC 3339): in the future, within ten
    /// years.
    #[serde(default)]
    expires_at: Option<DateTime<Utc>>,
}

#[utoipa::path(
    post,
    path = "/v1/admin/teams/{id}/keys",
    tag = "admin",
    summary = "Issue an API key (shown once)",
    security(("admin" = [])),
    params(("id" = TeamId, Path, description = "the team")),
    request_body(content = Option<IssueKey>),
    responses(
        (status = 201, description = "OK", body = IssuedKeyView),
        (status = 404, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn issue_key(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<IssuedKeyView>), ApiError> {
    let ledger = &state.engine.ledger;
    let id = team_id(&id)?;
    let request: IssueKey = if body.is_empty() {
        IssueKey::default()
    } else {
        parse_body(&body)?
    };
    if let Some(expires_at) = request.expires_at {
        let now = Utc::now();
        if expires_at <= now || expires_at > now + chrono::Duration::days(3650) {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidBody,
                "expires_at must be in the future and within ten years",
            ));
        }
    }
    if ledger.team(id).await?.is_none() {
        return Err(ApiError::not_found(
            ErrorCode::TeamNotFound,
            format!("no team {id}"),
        ));
    }
    let key = ledger.issue_api_key(id, request.expires_at).await?;
    Ok((
        StatusCode::CREATED,
        Json(IssuedKeyView {
            id: key.id,
            team_id: id,
            prefix: key.prefix,
            key: key.secret,
            expires_at: request.expires_at,
            note: "the key is shown only now; agentrun keeps a hash",
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/teams/{id}/keys",
    tag = "admin",
    summary = "A team's keys (never the secrets)",
    security(("admin" = [])),
    params(("id" = TeamId, Path, description = "the team")),
    responses(
        (status = 200, description = "OK", body = Page<KeyInfo>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn list_keys(
    State(state): State<AppState>,
    _: Admin,
    Path(id): Path<String>,
) -> Result<Json<Page<KeyInfo>>, ApiError> {
    let id = team_id(&id)?;
    if state.engine.ledger.team(id).await?.is_none() {
        return Err(ApiError::not_found(
            ErrorCode::TeamNotFound,
            format!("no team {id}"),
        ));
    }
    let keys = state.engine.ledger.list_keys(id).await?;
    Ok(Json(Page {
        data: keys,
        next_cursor: None,
    }))
}

#[utoipa::path(
    delete,
    path = "/v1/admin/keys/{key_id}",
    tag = "admin",
    summary = "Revoke a key, at once",
    security(("admin" = [])),
    params(("key_id" = uuid::Uuid, Path, description = "the key")),
    responses(
        (status = 204, description = "revoked"),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn revoke_key(
    State(state): State<AppState>,
    _: Admin,
    Path(key_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let missing = || ApiError::not_found(ErrorCode::KeyNotFound, format!("no key {key_id}"));
    let id: uuid::Uuid = key_id.parse().map_err(|_| missing())?;
    if state.engine.ledger.revoke_key(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(missing())
    }
}

/// The body of `PUT /v1/admin/prices/{model}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPrice {
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    input_micros_per_mtok: i64,
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    output_micros_per_mtok: i64,
}

#[utoipa::path(
    put,
    path = "/v1/admin/prices/{model}",
    tag = "admin",
    summary = "Set a model's price (micro-units per million tokens)",
    security(("admin" = [])),
    params(("model" = String, Path, min_length = 1, max_length = 200, description = "the model")),
    request_body = SetPrice,
    responses(
        (status = 200, description = "OK", body = ModelPrice),
        (status = 404, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn set_price(
    State(state): State<AppState>,
    _: Admin,
    Path(model): Path<String>,
    body: Bytes,
) -> Result<Json<ModelPrice>, ApiError> {
    let price: SetPrice = parse_body(&body)?;
    if model.is_empty() || model.chars().count() > 200 || model.contains('\0') {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPrice,
            "model names are 1-200 characters",
        ));
    }
    if price.input_micros_per_mtok < 0 || price.output_micros_per_mtok < 0 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPrice,
            "prices must not be negative",
        ));
    }
    let stored = state
        .engine
        .ledger
        .set_price(
            &model,
            price.input_micros_per_mtok,
            price.output_micros_per_mtok,
        )
        .await?;
    Ok(Json(stored))
}

#[utoipa::path(
    get,
    path = "/v1/admin/prices",
    tag = "admin",
    summary = "Model prices",
    security(("admin" = [])),
    responses(
        (status = 200, description = "OK", body = Page<ModelPrice>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn list_prices(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Page<ModelPrice>>, ApiError> {
    let prices = state.engine.ledger.list_prices().await?;
    Ok(Json(Page {
        data: prices,
        next_cursor: None,
    }))
}

/// The body of `PUT /v1/admin/plans/{name}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct SetPlan {
    #[schema(minimum = 0, maximum = 9223372036854775807_i64)]
    run_fee_micros: i64,
}

#[utoipa::path(
    put,
    path = "/v1/admin/plans/{name}",
    tag = "admin",
    summary = "Set a plan's fee per run (micro-units)",
    security(("admin" = [])),
    params(("name" = String, Path, min_length = 1, max_length = 64, description = "the plan")),
    request_body = SetPlan,
    responses(
        (status = 200, description = "OK", body = Plan),
        (status = 404, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn set_plan(
    State(state): State<AppState>,
    _: Admin,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Json<Plan>, ApiError> {
    let plan: SetPlan = parse_body(&body)?;
    if plan.run_fee_micros < 0 {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPlan,
            "run_fee_micros must not be negative",
        ));
    }
    if name.is_empty() || name.chars().count() > 64 || name.contains('\0') {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidPlan,
            "plan names are 1-64 characters",
        ));
    }
    Ok(Json(
        state
            .engine
            .ledger
            .set_plan(&name, plan.run_fee_micros)
            .await?,
    ))
}

#[utoipa::path(
    get,
    path = "/v1/admin/plans",
    tag = "admin",
    summary = "Plans",
    security(("admin" = [])),
    responses(
        (status = 200, description = "OK", body = Page<Plan>),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn list_plans(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Page<Plan>>, ApiError> {
    let plans = state.engine.ledger.list_plans().await?;
    Ok(Json(Page {
        data: plans,
        next_cursor: None,
    }))
}

/// Frees hot state left by runs that ended without releasing it (crashes).
#[utoipa::path(
    post,
    path = "/v1/admin/reconcile",
    tag = "admin",
    summary = "Free hot state of runs that ended in a crash",
    security(("admin" = [])),
    responses(
        (status = 200, description = "OK", body = Reconciled),
        (status = 404, response = super::error::ErrorBody),
        (status = 413, response = super::error::ErrorBody),
    )
)]
pub async fn reconcile(
    State(state): State<AppState>,
    _: Admin,
) -> Result<Json<Reconciled>, ApiError> {
    let released = state
        .engine
        .reconcile(crate::engine::ORPHAN_SLOT_GRACE)
        .await?;
    Ok(Json(Reconciled {
        released_slots: released,
    }))
}
