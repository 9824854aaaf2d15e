//! `GET /v1/runs/{id}/events`: the run's events as Server-Sent Events. A
//! stream that ends before its run (its maximum life, or idle for too long)
//! ends with a `retry:` hint, and the client resumes with Last-Event-ID.
//! Where streams are served elsewhere (the relay's URL, in AWS), the
//! endpoint answers 307 with that URL instead of a stream it could not
//! keep open.

use crate::domain::ErrorCode;
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::auth::{Caller, StreamReader};
use super::runs::team_run;
use super::streams::{StreamPermit, RESUME_AFTER};
use super::views::{StreamElsewhere, StreamToken};
use super::{ApiError, AppState};
use crate::sse::StreamFrame;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Replay from after this seq (as Last-Event-ID).
    #[param(minimum = 0, maximum = 9223372036854775807_i64)]
    after: Option<i64>,
    /// A stream token (`POST /v1/runs/{id}/stream-token`) in place of the
    /// Authorization header, for clients that cannot send one.
    #[param(pattern = "^st_[A-Za-z0-9]{40}$")]
    #[allow(dead_code)] // read by `StreamReader`, before the query is
    token: Option<String>,
}

/// One Server-Sent Event of `GET /v1/runs/{id}/events`.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
struct EventFrame {
    /// The event's seq; absent on `llm.delta`, which is ephemeral.
    #[schema(pattern = "^[0-9]+$", nullable = false)]
    id: Option<String>,
    /// Its type (`step.completed`, `run.succeeded`, ... and `llm.delta`:
    /// text a streaming agent's model is writing, `{run_id, step_no,
    /// offset, text}`, never stored or replayed).
    event: String,
    /// The event as JSON.
    #[schema(content_media_type = "application/json")]
    data: String,
}

/// The run's events.
#[utoipa::path(
    get,
    path = "/v1/runs/{id}/events",
    tag = "runs",
    summary = "The run's events as Server-Sent Events (`id: <seq>`, `event: <type>`, `data: <json>`); replays after Last-Event-ID or `after`, follows live, ends after the terminal event, at once for a finished run read from its end, or after its maximum life (10 min; resume with Last-Event-ID); 429 too_many_streams over 100 open streams per team",
    params(
        super::runs::RunPath,
        ("Last-Event-ID" = Option<String>, Header, pattern = "^[0-9]{1,18}$", description = "the seq of the last event received"),
        EventsQuery,
    ),
    responses(
        (status = 200, description = "Server-Sent Events: `id` is the event seq, `event` its type, `data` the event as JSON", content_type = "text/event-stream", body = EventFrame),
        (status = 307, description = "Streams are served by the relay at stream_url", body = StreamElsewhere),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn stream(
    State(state): State<AppState>,
    reader: StreamReader,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let team = reader.team;
    let run = team_run(&state, team, &id).await?;
    if reader.only_run.is_some_and(|only| only != run.id) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "this stream token is for another run",
        ));
    }
    if let Some(base) = &state.stream_url {
        return Ok(elsewhere(base, &id, query.after, reader.token.as_deref()));
    }
    let Some(permit) = state.streams.enter(team) else {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::TooManyStreams,
            format!(
                "too many open event streams (at most {} per team); close one or retry later",
                state.streams.limits.per_team
            ),
        );
        error.retry_after = Some(5);
        return Err(error);
    };
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(value) => Some(
            value
                .to_str()
                .ok()
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<i64>().ok())
                .ok_or_else(|| {
                    ApiError::bad_request(
                        ErrorCode::InvalidLastEventId,
                        "Last-Event-ID must be an event seq",
                    )
                })?,
        ),
    };
    if query.after.is_some_and(|after| after < 0) {
        return Err(ApiError::bad_request(
            ErrorCode::InvalidQuery,
            "after must be an event seq (0 or more)",
        ));
    }
    // A cursor past the run's last event means "from the end".
    let after = last_event_id
        .or(query.after)
        .unwrap_or(0)
        .clamp(0, run.last_seq.max(0));
    // A finished run read from its end has nothing more to say.
    let finished = run.status.is_terminal() && after >= run.last_seq;
    let frames = if finished {
        mpsc::channel(1).1
    } else {
        // Deltas are watched for where the run's agent streams, or may hand
        // off to one that does (an unreadable agent is watched too).
        let agent = state
            .engine
            .ledger
            .get_agent(team, &run.active_agent, Some(run.active_version))
            .await;
        let deltas = match agent {
            Ok(Some(agent)) => agent.spec.stream || !agent.spec.handoffs.is_empty(),
            Ok(None) | Err(_) => true,
        };
        state.followers.subscribe(run.id, after, deltas)
    };
    let limits = state.streams.limits;
    let watched = Watched {
        frames,
        ends_at: Instant::now() + limits.max_lifetime,
        max_idle: limits.max_idle,
        done: false,
        _permit: permit,
    };
    let events = futures_util::stream::unfold(watched, next_event);
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// A stream being sent: its frames, until when, and its place (held until
/// the stream ends).
struct Watched {
    frames: mpsc::Receiver<Result<StreamFrame, String>>,
    ends_at: Instant,
    max_idle: Option<Duration>,
    done: bool,
    _permit: StreamPermit,
}

/// The next SSE event: a frame, or — at the stream's end of life or after
/// it idled too long — a `retry:` hint before closing.
async fn next_event(mut watched: Watched) -> Option<(Result<Event, Infallible>, Watched)> {
    if watched.done {
        return None;
    }
    let idle_until = watched
        .max_idle
        .map(|idle| (Instant::now() + idle).min(watched.ends_at))
        .unwrap_or(watched.ends_at);
    tokio::select! {
        frame = watched.frames.recv() => {
            let event = match frame? {
                Ok(frame) => {
                    let event = Event::default().event(frame.event()).data(frame.data());
                    match frame.id() {
                        Some(id) => event.id(id.to_string()),
                        None => event,
                    }
                }
                Err(message) => Event::default().event("error").data(message),
            };
            Some((Ok(event), watched))
        }
        () = tokio::time::sleep_until(idle_until) => {
            watched.done = true;
            let hint = Event::default()
                .retry(RESUME_AFTER)
                .comment("the stream ends here; resume with Last-Event-ID");
            Some((Ok(hint), watched))
        }
    }
}

/// Where this run's events are streamed: `base` (the relay, in AWS) or,
/// without one, this server's own path; with `after` and the stream token
/// when given.
fn events_location(
    base: Option<&str>,
    id: &str,
    after: Option<i64>,
    token: Option<&str>,
) -> String {
    let base = base.map_or("", |b| b.trim_end_matches('/'));
    let mut url = format!("{base}/v1/runs/{id}/events");
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    if let Some(after) = after {
        query.append_pair("after", &after.to_string());
    }
    if let Some(token) = token {
        query.append_pair("token", token);
    }
    let query = query.finish();
    if !query.is_empty() {
        url.push('?');
        url.push_str(&query);
    }
    url
}

/// 307 to where this run's events are streamed (with the stream token, when
/// it came with one); the body says the same.
fn elsewhere(base: &str, id: &str, after: Option<i64>, token: Option<&str>) -> Response {
    let url = events_location(Some(base), id, after, token);
    let mut response = (
        StatusCode::TEMPORARY_REDIRECT,
        Json(StreamElsewhere {
            stream_url: url.clone(),
            message: "event streams are served at stream_url (with the same key and Last-Event-ID); this endpoint cannot hold a stream open",
        }),
    )
        .into_response();
    if let Ok(location) = url.parse() {
        response.headers_mut().insert(header::LOCATION, location);
    }
    response
}

/// A token to stream one run's events without an Authorization header.
#[utoipa::path(
    post,
    path = "/v1/runs/{id}/stream-token",
    tag = "runs",
    summary = "A short-lived, read-only token to stream one run's events (`?token=` on its events; for a browser's EventSource, which cannot send an Authorization header)",
    params(super::runs::RunPath),
    responses(
        (status = 201, description = "Valid for 5 minutes, for this run's events only", body = StreamToken),
        (status = 404, response = super::error::ErrorBody),
    )
)]
pub async fn stream_token(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<StreamToken>), ApiError> {
    let run = team_run(&state, team, &id).await?;
    let (token, expires_at) = state.engine.ledger.issue_stream_token(team, run.id).await?;
    // Straight to the relay where there is one: a browser's EventSource
    // then needs no cross-origin redirect.
    let events_url = events_location(
        state.stream_url.as_deref(),
        &run.id.to_string(),
        None,
        Some(&token),
    );
    Ok((
        StatusCode::CREATED,
        Json(StreamToken {
            token,
            run_id: run.id,
            expires_at,
            events_url,
        }),
    ))
}
