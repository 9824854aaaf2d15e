//! The event-stream core (DESIGN §7). One follower per run reads the run's
//! events from an event source (the ledger, or the DynamoDB events table) as
//! the feed signals them (or by polling), keeps them, and wakes every
//! subscriber of that run; each subscriber sends what it has not sent yet
//! and ends after the terminal event. So a run watched by many streams costs
//! one reader, not one per stream, and one task routes the feed's signals
//! to the followers of the runs they name, so a signal wakes one follower,
//! not all of them. The HTTP layer and the relay only format frames.
//!
//! A subscriber also gets the run's text deltas live from the feed (never
//! replayed), before the `llm.completed` of their step: the feed is asked
//! to catch up before that event is sent, and a delta that comes after it
//! anyway is not sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use crate::domain::event::LLM_DELTA;
use crate::domain::{EventType, RunEvent, RunId, TextDelta};
use crate::ports::{EventFeed, EventSource};

/// Page size for reading events.
const PAGE: i64 = 500;
/// A safety net: re-read even without a signal this often.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// Consecutive read failures after which a follower gives up.
const MAX_READ_FAILURES: u32 = 30;

/// One SSE frame of a durable event: `id: <seq>`, `event: <type>`,
/// `data: <json>`.
#[derive(Clone, Debug, PartialEq)]
pub struct SseFrame {
    pub id: i64,
    pub event: String,
    pub data: String,
    pub terminal: bool,
    /// The step whose LLM turn this event completes (`llm.completed`).
    pub completes_turn: Option<i32>,
    /// That turn was streamed (it had deltas).
    pub streamed: bool,
}

impl From<&RunEvent> for SseFrame {
    fn from(event: &RunEvent) -> Self {
        Self {
            id: event.seq,
            event: event.kind.clone(),
            data: serde_json::to_string(event).unwrap_or_else(|_| "{}".to_owned()),
            terminal: event.is_terminal(),
            completes_turn: event
                .step_no
                .filter(|_| event.kind == EventType::LlmCompleted.as_str()),
            streamed: event.data["streamed"] == true,
        }
    }
}

/// What a stream sends: a durable event, or an ephemeral text delta
/// (`event: llm.delta`, no `id:`).
#[derive(Clone, Debug, PartialEq)]
pub enum StreamFrame {
    Event(Arc<SseFrame>),
    Delta(Arc<TextDelta>),
}

impl StreamFrame {
    /// The SSE event name.
    pub fn event(&self) -> &str {
        match self {
            StreamFrame::Event(frame) => &frame.event,
            StreamFrame::Delta(_) => LLM_DELTA,
        }
    }

    /// The SSE data.
    pub fn data(&self) -> String {
        match self {
            StreamFrame::Event(frame) => frame.data.clone(),
            StreamFrame::Delta(delta) => {
                serde_json::to_string(delta.as_ref()).unwrap_or_else(|_| "{}".to_owned())
            }
        }
    }

    /// The event's seq; a delta has none.
    pub fn id(&self) -> Option<i64> {
        match self {
            StreamFrame::Event(frame) => Some(frame.id),
            StreamFrame::Delta(_) => None,
        }
    }
}

/// The followers of the runs being streamed in this process.
pub struct RunFollowers {
    source: Arc<dyn EventSource>,
    feed: Arc<dyn EventFeed>,
    active: Mutex<HashMap<RunId, Followed>>,
    /// The task routing the feed's signals, started with the first follower.
    router: OnceLock<()>,
}

/// A followed run: its follower and where its signals go.
struct Followed {
    follower: Weak<Follower>,
    signals: watch::Sender<Signal>,
}

/// The newest seq the feed announced for a run, and a count of the times
/// the feed may have dropped signals (then every follower reads again).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
struct Signal {
    seq: i64,
    lapses: u64,
}

/// What one run's follower has read: frames with `seq > base`, in order.
struct Follower {
    run: RunId,
    base: i64,
    log: Mutex<Log>,
    /// Bumped whenever `log` changes.
    news: watch::Sender<u64>,
}

#[derive(Default)]
struct Log {
    frames: Vec<Arc<SseFrame>>,
    /// Why the follower stopped reading without a terminal event.
    failed: Option<String>,
}

impl RunFollowers {
    pub fn new(source: Arc<dyn EventSource>, feed: Arc<dyn EventFeed>) -> Arc<Self> {
        Arc::new(Self {
            source,
            feed,
            active: Mutex::new(HashMap::new()),
            router: OnceLock::new(),
        })
    }

    /// Followers reading right now (one per streamed run).
    pub fn active(&self) -> usize {
        self.active
            .lock()
            .map(|active| {
                active
                    .values()
                    .filter(|f| f.follower.strong_count() > 0)
                    .count()
            })
            .unwrap_or(0)
    }

    /// Streams a run's events with `seq > after`, and (with `deltas`) its
    /// deltas from now on. Frames arrive on the returned channel; dropping
    /// the receiver ends this subscription only.
    pub fn subscribe(
        self: &Arc<Self>,
        run: RunId,
        after: i64,
        deltas: bool,
    ) -> mpsc::Receiver<Result<StreamFrame, String>> {
        let (tx, rx) = mpsc::channel(64);
        let subscriber = Subscriber {
            run,
            deltas: if deltas {
                self.feed.subscribe_deltas(run)
            } else {
                broadcast::channel(1).1
            },
            feed: self.feed.clone(),
            tx,
            last: after,
            turns_done: 0,
            live: false,
            held: Vec::new(),
        };
        let follower = self.follower(run, after);
        let source = self.source.clone();
        tokio::spawn(relay(follower, source, subscriber));
        rx
    }

    /// The run's follower, started at `after` when there is none.
    fn follower(self: &Arc<Self>, run: RunId, after: i64) -> Arc<Follower> {
        self.router.get_or_init(|| {
            let hub = Arc::downgrade(self);
            tokio::spawn(route_signals(hub, self.feed.subscribe()));
        });
        let mut active = match self.active.lock() {
            Ok(active) => active,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(existing) = active.get(&run).and_then(|f| f.follower.upgrade()) {
            return existing;
        }
        let (news, _) = watch::channel(0);
        let follower = Arc::new(Follower {
            run,
            base: after,
            log: Mutex::new(Log::default()),
            news,
        });
        // Registered before the first read, so no signal falls between the two.
        let (signals, signalled) = watch::channel(Signal::default());
        active.insert(
            run,
            Followed {
                follower: Arc::downgrade(&follower),
                signals,
            },
        );
        let hub = Arc::downgrade(self);
        let weak = Arc::downgrade(&follower);
        let source = self.source.clone();
        tokio::spawn(async move {
            follow(weak.clone(), source, signalled, run, after).await;
            if let Some(hub) = hub.upgrade() {
                if let Ok(mut active) = hub.active.lock() {
                    if active.get(&run).is_some_and(|f| f.follower.ptr_eq(&weak)) {
                        active.remove(&run);
                    }
                }
            }
        });
        follower
    }
}

/// Hands each signal of the feed to the follower of its run, if any.
async fn route_signals(hub: Weak<RunFollowers>, mut feed: broadcast::Receiver<(RunId, i64)>) {
    loop {
        let signal = feed.recv().await;
        let Some(hub) = hub.upgrade() else {
            return;
        };
        let Ok(active) = hub.active.lock() else {
            return;
        };
        match signal {
            Ok((run, seq)) => {
                if let Some(followed) = active.get(&run) {
                    followed.signals.send_if_modified(|signal| {
                        let newer = seq > signal.seq;
                        signal.seq = signal.seq.max(seq);
                        newer
                    });
                }
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                for followed in active.values() {
                    followed.signals.send_modify(|signal| signal.lapses += 1);
                }
            }
            Err(broadcast::error::RecvError::Closed) => return,
        }
    }
}

impl Follower {
    fn append(&self, events: &[RunEvent]) {
        if let Ok(mut log) = self.log.lock() {
            log.frames
                .extend(events.iter().map(|e| Arc::new(SseFrame::from(e))));
        }
        self.news.send_modify(|n| *n += 1);
    }

    fn fail(&self, message: String) {
        if let Ok(mut log) = self.log.lock() {
            log.failed = Some(message);
        }
        self.news.send_modify(|n| *n += 1);
    }

    /// Frames after `last`, and the failure if reading stopped.
    fn since(&self, last: i64) -> (Vec<Arc<SseFrame>>, Option<String>) {
        let Ok(log) = self.log.lock() else {
            return (Vec::new(), Some("event stream state lost".to_owned()));
        };
        let from = log.frames.partition_point(|f| f.id <= last);
        (log.frames[from..].to_vec(), log.failed.clone())
    }
}

/// Reads the run's events for as long as anyone subscribes, until the
/// terminal event.
async fn follow(
    follower: Weak<Follower>,
    source: Arc<dyn EventSource>,
    mut signals: watch::Receiver<Signal>,
    run: RunId,
    mut last: i64,
) {
    let mut failures = 0;
    let mut lapses = 0;
    loop {
        match source.events_after(run, last, PAGE).await {
            Ok(events) => {
                failures = 0;
                let Some(shared) = follower.upgrade() else {
                    return;
                };
                if let Some(newest) = events.last() {
                    last = newest.seq;
                    shared.append(&events);
                }
                if events.iter().any(RunEvent::is_terminal) {
                    return;
                }
                if events.len() as i64 == PAGE {
                    continue;
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(run_id = %run, %error, failures, "reading events failed");
                if failures >= MAX_READ_FAILURES {
                    if let Some(shared) = follower.upgrade() {
                        shared.fail(format!("event store unavailable: {error}"));
                    }
                    return;
                }
            }
        }
        if follower.strong_count() == 0 {
            return;
        }
        // Wait for news of this run past what was read, or the fallback tick.
        let wait = async {
            loop {
                if signals.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                let signal = *signals.borrow_and_update();
                if signal.seq > last || signal.lapses != lapses {
                    lapses = signal.lapses;
                    return;
                }
            }
        };
        tokio::select! {
            () = wait => {}
            () = tokio::time::sleep(FALLBACK_POLL) => {}
        }
    }
}

/// One subscriber: what precedes the follower's window is read once from
/// the source, then frames come from the follower as it reads them, and
/// deltas as the feed hands them over.
async fn relay(follower: Arc<Follower>, source: Arc<dyn EventSource>, mut sub: Subscriber) {
    while sub.last < follower.base {
        let events = match source.events_after(follower.run, sub.last, PAGE).await {
            Ok(events) => events,
            Err(error) => {
                let _ = sub
                    .tx
                    .send(Err(format!("event store unavailable: {error}")))
                    .await;
                return;
            }
        };
        let before = sub.last;
        for event in events.iter().take_while(|e| e.seq <= follower.base) {
            if !sub.event(Arc::new(SseFrame::from(event))).await {
                return;
            }
        }
        if sub.last == before || (events.len() as i64) < PAGE {
            break;
        }
    }
    sub.live = true;
    let mut news = follower.news.subscribe();
    let mut deltas_open = true;
    loop {
        let (frames, failed) = follower.since(sub.last);
        for frame in frames {
            if !sub.event(frame).await {
                return;
            }
        }
        if let Some(message) = failed {
            let _ = sub.tx.send(Err(message)).await;
            return;
        }
        tokio::select! {
            changed = news.changed() => if changed.is_err() { return },
            delta = sub.deltas.recv(), if deltas_open => match delta {
                Ok(delta) => {
                    if !sub.delta(delta).await {
                        return;
                    }
                }
                // Missed by a slow reader: deltas are best effort.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => deltas_open = false,
            },
            () = sub.tx.closed() => return,
        }
    }
}

/// One stream's subscription and where it is: the last seq sent, the
/// newest step whose turn a sent event completed, whether it has caught up
/// with the run (past the replay of what came before it), and deltas of
/// later steps held until the event it is sending has gone.
struct Subscriber {
    run: RunId,
    deltas: broadcast::Receiver<Arc<TextDelta>>,
    feed: Arc<dyn EventFeed>,
    tx: mpsc::Sender<Result<StreamFrame, String>>,
    last: i64,
    turns_done: i32,
    live: bool,
    held: Vec<Arc<TextDelta>>,
}

impl Subscriber {
    /// Sends a durable frame, live after the last deltas of the streamed
    /// turn it completes; false when the stream is over (the subscriber
    /// left, or this was the terminal event).
    async fn event(&mut self, frame: Arc<SseFrame>) -> bool {
        if let Some(step) = frame.completes_turn {
            if self.live && frame.streamed {
                self.feed.catch_up_deltas(self.run).await;
                while let Ok(delta) = self.deltas.try_recv() {
                    if delta.step_no > step {
                        self.held.push(delta);
                    } else if !self.delta(delta).await {
                        return false;
                    }
                }
            }
            self.turns_done = self.turns_done.max(step);
        }
        self.last = frame.id;
        let terminal = frame.terminal;
        if self.tx.send(Ok(StreamFrame::Event(frame))).await.is_err() || terminal {
            return false;
        }
        for delta in std::mem::take(&mut self.held) {
            if !self.delta(delta).await {
                return false;
            }
        }
        true
    }

    /// Sends a delta unless its turn is over; false when the subscriber left.
    async fn delta(&mut self, delta: Arc<TextDelta>) -> bool {
        if delta.step_no <= self.turns_done {
            return true;
        }
        self.tx.send(Ok(StreamFrame::Delta(delta))).await.is_ok()
    }
}
