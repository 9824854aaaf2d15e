//! A streamed call's text on its way to the run's stream subscribers: the
//! pieces the provider sends are published as `llm.delta`s, at most one
//! per the feed's interval (pieces in between wait for the next one, or
//! for the end of the call).

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::domain::{RunId, TextDelta};
use crate::ports::{EventFeed, TextDeltas};

pub(super) struct StepDeltas<'a> {
    feed: &'a dyn EventFeed,
    run: RunId,
    step_no: i32,
    every: Duration,
    pending: Mutex<Pending>,
}

/// What the current attempt wrote and has not published yet.
#[derive(Default)]
struct Pending {
    /// Characters the attempt wrote so far.
    written: usize,
    /// Where `text` starts in the attempt's text.
    offset: usize,
    text: String,
    last_published: Option<Instant>,
}

impl<'a> StepDeltas<'a> {
    pub(super) fn new(feed: &'a dyn EventFeed, run: RunId, step_no: i32) -> Self {
        Self {
            feed,
            run,
            step_no,
            every: feed.delta_interval(),
            pending: Mutex::new(Pending::default()),
        }
    }

    /// The pending text as one delta, if there is some and it is time
    /// (or `now`).
    fn take(&self, now: bool) -> Option<TextDelta> {
        let mut pending = self.pending.lock().ok()?;
        let early = pending
            .last_published
            .is_some_and(|at| at.elapsed() < self.every);
        if pending.text.is_empty() || (early && !now) {
            return None;
        }
        pending.last_published = Some(Instant::now());
        let written = pending.written;
        let offset = std::mem::replace(&mut pending.offset, written);
        Some(TextDelta {
            run_id: self.run,
            step_no: self.step_no,
            offset,
            text: std::mem::take(&mut pending.text),
        })
    }

    /// Publishes what is pending: the call has answered.
    pub(super) async fn finish(&self) {
        if let Some(delta) = self.take(true) {
            self.publish(delta).await;
        }
    }

    /// Best effort, and briefly: the provider's stream is read meanwhile.
    async fn publish(&self, delta: TextDelta) {
        if tokio::time::timeout(PUBLISH_WITHIN, self.feed.publish_delta(delta))
            .await
            .is_err()
        {
            tracing::warn!(run_id = %self.run, step_no = self.step_no, "publishing a text delta took too long; it was dropped");
        }
    }
}

/// The longest a delta's publishing may hold up the reading of the answer.
const PUBLISH_WITHIN: Duration = Duration::from_millis(500);

#[async_trait]
impl TextDeltas for StepDeltas<'_> {
    async fn write(&self, text: &str) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.text.push_str(text);
            pending.written += text.chars().count();
        }
        if let Some(delta) = self.take(false) {
            self.publish(delta).await;
        }
    }

    fn restart(&self) {
        // What a failed attempt left unpublished is not its answer.
        if let Ok(mut pending) = self.pending.lock() {
            let last_published = pending.last_published;
            *pending = Pending {
                last_published,
                ..Pending::default()
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::sync::broadcast;

    use super::*;
    use crate::adapters::in_process::BroadcastFeed;

    /// A feed that batches like the AWS one: one delta per second at most.
    struct Slow(BroadcastFeed);

    #[async_trait]
    impl EventFeed for Slow {
        async fn publish(&self, run: RunId, last_seq: i64) {
            self.0.publish(run, last_seq).await
        }
        fn subscribe(&self) -> broadcast::Receiver<(RunId, i64)> {
            self.0.subscribe()
        }
        fn delta_interval(&self) -> Duration {
            Duration::from_secs(1)
        }
        async fn publish_delta(&self, delta: TextDelta) {
            self.0.publish_delta(delta).await
        }
        fn subscribe_deltas(&self, run: RunId) -> broadcast::Receiver<Arc<TextDelta>> {
            self.0.subscribe_deltas(run)
        }
    }

    fn received(deltas: &mut broadcast::Receiver<Arc<TextDelta>>) -> Vec<(usize, String)> {
        std::iter::from_fn(|| deltas.try_recv().ok())
            .map(|d| (d.offset, d.text.clone()))
            .collect()
    }

    #[tokio::test]
    async fn pieces_are_published_with_their_offsets_and_batched_to_the_interval() {
        let run = RunId::new();
        let instant = BroadcastFeed::new();
        let mut seen = instant.subscribe_deltas(run);
        let deltas = StepDeltas::new(&instant, run, 2);
        deltas.write("Hé").await;
        deltas.write("llo").await;
        deltas.finish().await;
        assert_eq!(
            received(&mut seen),
            [(0, "Hé".to_owned()), (2, "llo".to_owned())]
        );

        let slow = Slow(BroadcastFeed::new());
        let mut seen = slow.subscribe_deltas(run);
        let deltas = StepDeltas::new(&slow, run, 2);
        deltas.write("a").await; // the first goes at once
        deltas.write("b").await;
        deltas.write("").await; // an event without text: not yet time
        deltas.restart(); // a retried attempt: "b" was not its answer
        deltas.write("xy").await;
        deltas.write("z").await;
        assert_eq!(received(&mut seen), [(0, "a".to_owned())]);
        deltas.finish().await;
        assert_eq!(received(&mut seen), [(0, "xyz".to_owned())]);
    }
}
