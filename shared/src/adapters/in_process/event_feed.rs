use tokio::sync::broadcast;

use crate::domain::RunId;
use crate::ports::EventFeed;

/// One broadcast channel for every run's "new events" signal.
pub struct BroadcastFeed {
    sender: broadcast::Sender<(RunId, i64)>,
}

impl BroadcastFeed {
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(4096);
        Self { sender }
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
}
