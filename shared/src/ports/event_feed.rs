//! Events for stream readers. `EventFeed` is told after every commit that a
//! run has events up to some seq (a signal in-process; a mirror to the
//! DynamoDB events table in AWS). `EventSource` is where readers read them.
//! The ledger stays the source of truth: a lost signal or a failed mirror
//! write costs latency, never an event. The feed also carries the text
//! deltas of streaming agents, which are never in the ledger: lost ones are
//! lost, as the durable `llm.completed` holds the whole turn.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::domain::{RunEvent, RunId, TextDelta};

#[async_trait]
pub trait EventFeed: Send + Sync {
    /// Called after a commit made events up to `last_seq` durable.
    async fn publish(&self, run: RunId, last_seq: i64);

    /// Signals for every run; readers filter by run id. A feed without
    /// in-process signals returns a receiver that never fires (readers poll).
    fn subscribe(&self) -> broadcast::Receiver<(RunId, i64)>;

    /// How often one run's deltas may be published: the pieces a model
    /// writes in between are sent together.
    fn delta_interval(&self) -> Duration {
        Duration::ZERO
    }

    /// Text a model wrote, for whoever streams its run now.
    async fn publish_delta(&self, delta: TextDelta);

    /// The run's deltas from now on (none published before).
    fn subscribe_deltas(&self, run: RunId) -> broadcast::Receiver<Arc<TextDelta>>;

    /// Hands this process's subscribers of the run every delta published
    /// so far; a stream asks before it sends the event that completes a
    /// turn, so the turn's last deltas come first. (In-process they are
    /// handed over as they are published.)
    async fn catch_up_deltas(&self, _run: RunId) {}
}

#[derive(Debug, thiserror::Error)]
#[error("event source unavailable: {0}")]
pub struct EventSourceError(pub String);

#[async_trait]
pub trait EventSource: Send + Sync {
    /// Events with `seq > after`, oldest first, at most `limit`.
    async fn events_after(
        &self,
        run: RunId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RunEvent>, EventSourceError>;
}
