//! `/v1/usage`: what a team used and spent, per day and per run. Money is
//! integer micro-units; a run is counted on the UTC day it was accepted.

use crate::domain::ErrorCode;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{Datelike, Days, NaiveDate, TimeZone, Utc};
use serde::Deserialize;

use super::auth::Caller;
use super::views::{DailyUsage, Statement, TokensToday, UsageDay};
use super::{ApiError, AppState};
use crate::domain::limits::{DEFAULT_STATEMENT_PAGE, MAX_STATEMENT_PAGE};
use crate::ledger::UsageTotals;

const MAX_DAYS: u64 = 366;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DailyQuery {
    /// 1970-01-01 to 9999-12-31; from <= to, at most 366 days apart.
    #[param(format = Date)]
    from: Option<String>,
    /// 1970-01-01 to 9999-12-31; from <= to, at most 366 days apart.
    #[param(format = Date)]
    to: Option<String>,
}

/// Years a usage query may name (the ledger's timestamps fit well inside).
const YEARS: std::ops::RangeInclusive<i32> = 1970..=9999;

fn parse_day(raw: &str, what: &str) -> Result<NaiveDate, ApiError> {
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .filter(|day| YEARS.contains(&day.year()) && raw.len() == 10)
        .ok_or_else(|| {
            ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("{what} must be a date YYYY-MM-DD between 1970-01-01 and 9999-12-31"),
            )
        })
}

fn start_of(day: NaiveDate) -> chrono::DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}

/// `GET /v1/usage?from=&to=`: one entry per day (inclusive range, default
/// the last 30 days), plus totals and today's token budget.
#[utoipa::path(
    get,
    path = "/v1/usage",
    tag = "usage",
    summary = "Per-day runs, tokens and cost (inclusive range; default the last 30 days), totals, and today's token budget",
    params(DailyQuery),
    responses((status = 200, description = "OK", body = DailyUsage))
)]
pub async fn daily(
    State(state): State<AppState>,
    Caller(team): Caller,
    Query(query): Query<DailyQuery>,
) -> Result<Json<DailyUsage>, ApiError> {
    let today = Utc::now().date_naive();
    let to = query
        .to
        .as_deref()
        .map(|d| parse_day(d, "to"))
        .transpose()?
        .unwrap_or(today);
    let from = match query.from.as_deref() {
        Some(day) => parse_day(day, "from")?,
        None => to.checked_sub_days(Days::new(29)).unwrap_or(to),
    };
    if from > to {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "from must not be after to",
        ));
    }
    if (to - from).num_days() as u64 >= MAX_DAYS {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("at most {MAX_DAYS} days at a time"),
        ));
    }
    let end = to.checked_add_days(Days::new(1)).unwrap_or(to);
    let by_day = state
        .engine
        .ledger
        .daily_usage(team, start_of(from), start_of(end))
        .await?;
    let mut days = Vec::new();
    let mut totals = UsageTotals::default();
    let mut day = from;
    let mut recorded = by_day.iter().peekable();
    while day <= to {
        let of_day = match recorded.peek() {
            Some((recorded_day, usage)) if *recorded_day == day => {
                recorded.next();
                usage.clone()
            }
            _ => UsageTotals::default(),
        };
        totals.add(&of_day);
        days.push(UsageDay { day, usage: of_day });
        day = match day.succ_opt() {
            Some(next) => next,
            None => break,
        };
    }
    let budget = state
        .engine
        .ledger
        .team(team)
        .await?
        .map(|t| t.limits.daily_token_budget)
        .unwrap_or_default();
    let (used, reserved) = state.engine.hot.tokens_of_day(team, today).await?;
    Ok(Json(DailyUsage {
        data: days,
        totals,
        money_unit: "micros",
        tokens_today: TokensToday {
            day: today,
            used,
            reserved,
            daily_budget: Some(budget),
        },
    }))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct StatementQuery {
    /// `YYYY-MM` (UTC); this month without it.
    #[param(pattern = "^(19[7-9][0-9]|[2-9][0-9]{3})-(0[1-9]|1[0-2])$")]
    month: Option<String>,
    /// `json` or `csv`.
    #[param(pattern = "^(json|csv)$")]
    format: Option<String>,
    #[param(minimum = 1, maximum = 10000, default = 1000)]
    limit: Option<i64>,
    /// `next_cursor` of the previous page.
    #[param(
        pattern = "^[0-9]{1,16}_[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"
    )]
    cursor: Option<String>,
}

const CSV_HEADER: &str = "run_id,created_at,agent,version,status,input_tokens,output_tokens,llm_calls,fee_micros,token_cost_micros,cost_micros";

/// `GET /v1/usage/runs?month=YYYY-MM[&limit=&cursor=]`: the month's
/// statement, one line per run, oldest first, in pages (default 1,000
/// lines, at most 10,000), as JSON (`next_cursor`, and the whole month's
/// `totals`) or (`format=csv` or `Accept: text/csv`) CSV, each page with
/// its header line and the next page in a `Link: <…>; rel="next"` header.
#[utoipa::path(
    get,
    path = "/v1/usage/runs",
    tag = "usage",
    summary = "The month's statement: one line per run, oldest first, in pages (JSON, or CSV with format=csv or Accept: text/csv; a CSV page repeats the header and names the next page in a Link header)",
    params(StatementQuery),
    responses((
        status = 200,
        description = "statement",
        content((Statement = "application/json"), (String = "text/csv")),
        headers(("Link" = String, description = "on a CSV page that has a next one: `</v1/usage/runs?...&cursor=...>; rel=\"next\"`"))
    ))
)]
pub async fn statement(
    State(state): State<AppState>,
    Caller(team): Caller,
    Query(query): Query<StatementQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let now = Utc::now().date_naive();
    let first = match query.month.as_deref() {
        Some(month) => NaiveDate::parse_from_str(&format!("{month}-01"), "%Y-%m-%d")
            .ok()
            .filter(|first| YEARS.contains(&first.year()) && month.len() == 7)
            .ok_or_else(|| {
                ApiError::bad_request(
                    ErrorCode::InvalidQuery,
                    "month must be YYYY-MM between 1970-01 and 9999-12",
                )
            })?,
        None => now.with_day(1).unwrap_or(now),
    };
    let next = first
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(first);
    let limit = query.limit.unwrap_or(DEFAULT_STATEMENT_PAGE);
    if !(1..=MAX_STATEMENT_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            format!("limit must be between 1 and {MAX_STATEMENT_PAGE}"),
        ));
    }
    let after = query
        .cursor
        .as_deref()
        .map(|c| {
            crate::ledger::decode_cursor(c)
                .ok_or_else(|| ApiError::bad_request(ErrorCode::InvalidQuery, "malformed cursor"))
        })
        .transpose()?;
    let charges = state
        .engine
        .ledger
        .run_charges(team, start_of(first), start_of(next), after, limit)
        .await?;
    let next_cursor = (charges.len() as i64 == limit)
        .then(|| charges.last())
        .flatten()
        .map(|c| crate::ledger::encode_cursor(c.created_at, c.run_id));
    let wants_csv = match query.format.as_deref() {
        None | Some("json") => false,
        Some("csv") => true,
        Some(other) => {
            return Err(ApiError::bad_request(
                ErrorCode::InvalidQuery,
                format!("format must be json or csv, not {other:?}"),
            ))
        }
    };
    let wants_csv = wants_csv
        || headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("text/csv"));
    let month = first.format("%Y-%m").to_string();
    if wants_csv {
        let mut csv = String::from(CSV_HEADER);
        csv.push('\n');
        for c in &charges {
            csv.push_str(&format!(
                "{},{},{},{},{},{},{},{},{},{},{}\n",
                c.run_id,
                c.created_at
                    .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                c.agent,
                c.version,
                c.status,
                c.input_tokens,
                c.output_tokens,
                c.llm_calls,
                c.fee_micros,
                c.token_cost_micros,
                c.cost_micros
            ));
        }
        let disposition = format!("attachment; filename=\"agentrun-{month}.csv\"");
        let mut response = (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
                (header::CONTENT_DISPOSITION, disposition),
            ],
            csv,
        )
            .into_response();
        if let Some(cursor) = &next_cursor {
            let link = format!(
                "</v1/usage/runs?month={month}&format=csv&limit={limit}&cursor={cursor}>; rel=\"next\""
            );
            if let Ok(value) = link.parse() {
                response.headers_mut().insert(header::LINK, value);
            }
        }
        return Ok(response);
    }
    // The whole month's totals, summed per run as the lines are.
    let mut totals = UsageTotals::default();
    state
        .engine
        .ledger
        .daily_usage(team, start_of(first), start_of(next))
        .await?
        .iter()
        .for_each(|(_, day)| totals.add(day));
    Ok(Json(Statement {
        month: month.to_string(),
        data: charges,
        totals,
        money_unit: "micros",
        next_cursor,
    })
    .into_response())
}
