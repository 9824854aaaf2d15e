//! `GET /v1/runs/{id}/events`: the run's events as Server-Sent Events.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio_stream::wrappers::ReceiverStream;

use super::auth::Caller;
use super::runs::team_run;
use super::{ApiError, AppState};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    after: Option<i64>,
}

pub async fn stream(
    State(state): State<AppState>,
    Caller(team): Caller,
    Path(id): Path<String>,
    Query(query): Query<EventsQuery>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let run = team_run(&state, team, &id).await?;
    let Some(permit) = state.streams.enter(team) else {
        let mut error = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_streams",
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
                        "invalid_last_event_id",
                        "Last-Event-ID must be an event seq",
                    )
                })?,
        ),
    };
    if query.after.is_some_and(|after| after < 0) {
        return Err(ApiError::bad_request(
            "invalid_query",
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
        tokio::sync::mpsc::channel(1).1
    } else {
        state.followers.subscribe(run.id, after)
    };
    let lifetime = tokio::time::sleep(state.streams.limits.max_lifetime);
    let events = ReceiverStream::new(frames)
        .take_until(lifetime)
        .map(move |frame| {
            // The stream holds its place until it ends.
            let _held = &permit;
            Ok(match frame {
                Ok(frame) => Event::default()
                    .id(frame.id.to_string())
                    .event(&frame.event)
                    .data(&frame.data),
                Err(message) => Event::default().event("error").data(message),
            })
        });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}
