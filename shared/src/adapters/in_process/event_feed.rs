use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

use crate::domain::{RunId, TextDelta};
use crate::ports::EventFeed;

/// One broadcast channel for every run's "new events" signal, and the
/// in-process deltas.
pub struct BroadcastFeed {
    sender: broadcast::Sender<(RunId, i64)>,
    deltas: DeltaHub,
}

impl BroadcastFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self {
            sender,
            deltas: DeltaHub::default(),
        }
    }
}

impl Default for BroadcastFeed {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait::async_trait]
impl EventFeed for BroadcastFeed {
    async fn publish(&self, run: RunId, last_seq: i64) {
        // No receivers is fine: nobody is streaming this run.
        let _ = self.sender.send((run, last_seq));
    }

    fn subscribe(&self) -> broadcast::Receiver<(RunId, i64)> {
        self.sender.subscribe()
    }

    async fn publish_delta(&self, delta: TextDelta) {
        self.deltas.send(Arc::new(delta));
    }

    fn subscribe_deltas(&self, run: RunId) -> broadcast::Receiver<Arc<TextDelta>> {
        self.deltas.subscribe(run).0
    }
}

/// Pieces of a run's deltas kept for a subscriber that reads slowly; one
/// further behind skips ahead.
const DELTAS_BUFFERED: usize = 256;

/// Deltas handed to the subscribers of their run in this process: one
/// channel per watched run, so a delta wakes only its run's streams.
#[derive(Default)]
pub struct DeltaHub {
    runs: Mutex<HashMap<RunId, broadcast::Sender<Arc<TextDelta>>>>,
}

impl DeltaHub {
    /// To the run's subscribers, if it has any.
    pub fn send(&self, delta: Arc<TextDelta>) {
        let Ok(mut runs) = self.runs.lock() else {
            return;
        };
        let run = delta.run_id;
        if let Some(sender) = runs.get(&run) {
            if sender.send(delta).is_err() {
                runs.remove(&run);
            }
        }
    }

    /// A receiver of the run's deltas; with the run's new channel when no
    /// one in this process watched the run (for a reader that feeds it
    /// from elsewhere, until it has no receivers).
    pub fn subscribe(
        &self,
        run: RunId,
    ) -> (
        broadcast::Receiver<Arc<TextDelta>>,
        Option<broadcast::Sender<Arc<TextDelta>>>,
    ) {
        let mut runs = match self.runs.lock() {
            Ok(runs) => runs,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(sender) = runs.get(&run).filter(|s| s.receiver_count() > 0) {
            return (sender.subscribe(), None);
        }
        // Runs nobody watches any more are forgotten here.
        runs.retain(|_, sender| sender.receiver_count() > 0);
        let (sender, receiver) = broadcast::channel(DELTAS_BUFFERED);
        runs.insert(run, sender.clone());
        (receiver, Some(sender))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(run: RunId, text: &str) -> Arc<TextDelta> {
        Arc::new(TextDelta {
            run_id: run,
            step_no: 1,
            offset: 0,
            text: text.into(),
        })
    }

    #[test]
    fn deltas_reach_the_subscribers_of_their_run_only() {
        let hub = DeltaHub::default();
        let (a, b) = (RunId::new(), RunId::new());
        let (mut first, channel) = hub.subscribe(a);
        let channel = channel.expect("the run's first subscriber opens its channel");
        let (mut second, again) = hub.subscribe(a);
        assert!(again.is_none(), "a watched run keeps its channel");
        let (mut other, _) = hub.subscribe(b);
        hub.send(delta(a, "hi"));
        assert_eq!(first.try_recv().unwrap().text, "hi");
        assert_eq!(second.try_recv().unwrap().text, "hi");
        assert!(other.try_recv().is_err());
        drop((first, second));
        assert_eq!(
            channel.receiver_count(),
            0,
            "its reader can tell it may stop"
        );
        assert!(hub.subscribe(a).1.is_some(), "an unwatched run starts over");
    }
}
