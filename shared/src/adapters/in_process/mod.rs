//! In-process adapters for the embedded mode.

mod event_feed;
mod orchestrator;

pub use event_feed::{BroadcastFeed, DeltaHub};
pub use orchestrator::EmbeddedOrchestrator;
