//! The event-stream core (DESIGN §7): replays a run's events after a given
//! seq from an event source (the ledger, or the DynamoDB events table), then
//! follows new ones as the feed signals them (or by polling), and ends after
//! the terminal event. The HTTP layer and the relay only format frames.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};

use crate::domain::{RunEvent, RunId};
use crate::ports::{EventFeed, EventSource};

/// Page size for reading events from the ledger.
const PAGE: i64 = 500;
/// A safety net: re-read even without a signal this often.
const FALLBACK_POLL: Duration = Duration::from_secs(1);

/// One SSE frame: `id: <seq>`, `event: <type>`, `data: <json>`.
#[derive(Clone, Debug, PartialEq)]
pub struct SseFrame {
    pub id: i64,
    pub event: String,
    pub data: String,
}

impl From<&RunEvent> for SseFrame {
    fn from(event: &RunEvent) -> Self {
        Self {
            id: event.seq,
            event: event.kind.clone(),
            data: serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()),
        }
    }
}

/// Starts streaming a run's events with `seq > after`. Frames arrive on the
/// returned channel; dropping the receiver stops the reader and nothing else.
pub fn stream_run_events(
    source: Arc<dyn EventSource>,
    feed: Arc<dyn EventFeed>,
    run: RunId,
    after: i64,
) -> mpsc::Receiver<Result<SseFrame, String>> {
    let (tx, rx) = mpsc::channel(64);
    // Subscribe before the first read so no signal falls between the two.
    let signals = feed.subscribe();
    tokio::spawn(async move {
        follow(source, signals, run, after, tx).await;
    });
    rx
}

async fn follow(
    source: Arc<dyn EventSource>,
    mut signals: broadcast::Receiver<(RunId, i64)>,
    run: RunId,
    mut last: i64,
    tx: mpsc::Sender<Result<SseFrame, String>>,
) {
    let mut failures = 0;
    loop {
        match source.events_after(run, last, PAGE).await {
            Ok(events) => {
                failures = 0;
                for event in &events {
                    if tx.send(Ok(SseFrame::from(event))).await.is_err() {
                        return;
                    }
                    last = event.seq;
                    if event.is_terminal() {
                        return;
                    }
                }
                if events.len() as i64 == PAGE {
                    continue;
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(run_id = %run, %error, failures, "reading events failed");
                if failures >= 30 {
                    let _ = tx
                        .send(Err(format!("event store unavailable: {error}")))
                        .await;
                    return;
                }
            }
        }
        // Wait for news of this run, the fallback tick, or the reader leaving.
        let wait = async {
            loop {
                match signals.recv().await {
                    Ok((signalled, seq)) if signalled == run && seq > last => return,
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(_)) => return,
                    Err(broadcast::error::RecvError::Closed) => {
                        std::future::pending::<()>().await;
                    }
                }
            }
        };
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(FALLBACK_POLL) => {}
            () = tx.closed() => return,
        }
    }
}
