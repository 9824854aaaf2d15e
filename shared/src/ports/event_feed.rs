//! Tells stream readers that a run has new committed events. Carries no event
//! data: readers fetch from the ledger, so a missed signal costs latency, never
//! an event.

use tokio::sync::broadcast;

use crate::domain::RunId;

pub trait EventFeed: Send + Sync {
    /// Called after a commit made events up to `last_seq` durable.
    fn publish(&self, run: RunId, last_seq: i64);

    /// Signals for every run; readers filter by run id.
    fn subscribe(&self) -> broadcast::Receiver<(RunId, i64)>;
}
