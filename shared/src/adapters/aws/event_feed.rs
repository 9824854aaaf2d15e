//! The DynamoDB events table (`run_id` string, `seq` number): after each
//! ledger commit the feed mirrors the run's new events there (idempotent by
//! seq), and the SSE relay reads them from there. The ledger stays the
//! source of truth: a failed mirror write is caught up at the next publish,
//! and a reader that meets an error, a gap or a long silence reads the
//! ledger instead.
//!
//! Text deltas of streaming agents go to the same table as short-lived
//! items under their own key (`<run_id>/deltas`, seq = microseconds since
//! the epoch, `expires_at` an hour on), at most one write per run every
//! `DELTA_WRITE_EVERY`; a relay watching the run polls them as often (less
//! while none come), and at once before it sends a turn's `llm.completed`,
//! and hands them to its streams. They are never read from the ledger.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, PutRequest, WriteRequest};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::adapters::in_process::DeltaHub;
use crate::domain::{RunEvent, RunId, TextDelta};
use crate::ledger::Ledger;
use crate::policy::full_jitter;
use crate::ports::{EventFeed, EventSource, EventSourceError};

/// A reader that finds nothing new checks the ledger at most this often.
const LEDGER_CHECK_EVERY: Duration = Duration::from_secs(5);

/// An event whose data is longer than this is mirrored without it (marked
/// `data_truncated`): a DynamoDB item holds at most 400 KB, and one item
/// too large fails its whole batch. Readers take such an event from the
/// ledger, which keeps it whole.
pub const MAX_MIRRORED_DATA_BYTES: usize = 300 * 1024;

/// Tries of a batch write whose items DynamoDB left unprocessed
/// (throttling), with a full-jitter backoff from 50 ms doubling to 2 s.
const BATCH_WRITE_TRIES: u32 = 8;

/// A run's deltas are written at most this often (the pieces a model
/// writes in between go in one item), and a relay reads them as often.
pub const DELTA_WRITE_EVERY: Duration = Duration::from_millis(250);

/// Reads that find no delta after which a run is read every
/// `DELTA_IDLE_READ_EVERY` only, until one is found.
const DELTA_READS_BEFORE_IDLE: u32 = 8;
const DELTA_IDLE_READ_EVERY: Duration = Duration::from_secs(1);

/// The longest a stream waits for the relay's reader to catch up.
const CATCH_UP_WITHIN: Duration = Duration::from_secs(2);

/// How long a delta item lives (DynamoDB TTL, `expires_at`).
const DELTA_LIFETIME: Duration = Duration::from_secs(3600);

/// The key under which a run's deltas are kept.
fn deltas_key(run: RunId) -> String {
    format!("{run}/deltas")
}

fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

pub struct DynamoEventFeed {
    client: aws_sdk_dynamodb::Client,
    table: String,
    ledger: Ledger,
    /// Highest seq mirrored per running run (this instance's knowledge).
    mirrored: Mutex<HashMap<RunId, i64>>,
    last_ledger_check: Mutex<HashMap<RunId, Instant>>,
    signals: broadcast::Sender<(RunId, i64)>,
    deltas: DeltaHub,
    /// The delta readers of watched runs, asked to read at once by
    /// `catch_up_deltas` (and acknowledging when they have).
    delta_readers: Arc<Mutex<HashMap<RunId, mpsc::Sender<oneshot::Sender<()>>>>>,
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn number(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

impl DynamoEventFeed {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>, ledger: Ledger) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.into(),
            ledger,
            mirrored: Mutex::new(HashMap::new()),
            last_ledger_check: Mutex::new(HashMap::new()),
            signals: broadcast::channel(1024).0,
            deltas: DeltaHub::default(),
            delta_readers: Arc::default(),
        }
    }

    /// The run's mirrored events after `after`; an event mirrored without
    /// its data comes from the ledger instead.
    async fn query(&self, run: RunId, after: i64, limit: i64) -> Result<Vec<RunEvent>, String> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("run_id = :run AND seq > :after")
            .expression_attribute_values(":run", AttributeValue::S(run.to_string()))
            .expression_attribute_values(":after", AttributeValue::N(after.to_string()))
            .limit(limit.clamp(1, 1000) as i32)
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        let mut events = Vec::with_capacity(output.items().len());
        for item in output.items() {
            let Some(seq) = number(item, "seq") else {
                continue;
            };
            let truncated = item
                .get("data_truncated")
                .and_then(|v| v.as_bool().ok())
                .copied()
                .unwrap_or(false);
            if truncated {
                let whole = self
                    .ledger
                    .events_after(run, seq - 1, 1)
                    .await
                    .map_err(|e| e.to_string())?;
                events.extend(whole.into_iter().filter(|e| e.seq == seq));
                continue;
            }
            let event = (|| {
                Some(RunEvent {
                    run_id: run,
                    seq,
                    kind: text(item, "type")?,
                    step_no: number(item, "step_no").map(|n| n as i32),
                    data: serde_json::from_str(&text(item, "data")?).ok()?,
                    created_at: text(item, "created_at")?.parse().ok()?,
                })
            })();
            events.extend(event);
        }
        Ok(events)
    }

    /// Copies the run's events after what is already mirrored, up to `last_seq`.
    async fn mirror(&self, run: RunId, last_seq: i64) -> Result<(), String> {
        let known = self.mirrored.lock().ok().and_then(|m| m.get(&run).copied());
        let mut done = match known {
            Some(seq) => seq,
            None => {
                let newest = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("run_id = :run")
                    .expression_attribute_values(":run", AttributeValue::S(run.to_string()))
                    .scan_index_forward(false)
                    .limit(1)
                    .send()
                    .await
                    .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
                newest
                    .items()
                    .first()
                    .and_then(|item| number(item, "seq"))
                    .unwrap_or(0)
            }
        };
        let mut ended = false;
        while done < last_seq {
            let events = self
                .ledger
                .events_after(run, done, 100)
                .await
                .map_err(|e| e.to_string())?;
            if events.is_empty() {
                break;
            }
            for chunk in events.chunks(25) {
                let requests: Vec<WriteRequest> = chunk
                    .iter()
                    .map(|event| {
                        let mut data = event.data.to_string();
                        let truncated = data.len() > MAX_MIRRORED_DATA_BYTES;
                        if truncated {
                            data = "null".to_owned();
                        }
                        let mut item = HashMap::from([
                            ("run_id".to_owned(), AttributeValue::S(run.to_string())),
                            ("seq".to_owned(), AttributeValue::N(event.seq.to_string())),
                            ("type".to_owned(), AttributeValue::S(event.kind.clone())),
                            ("data".to_owned(), AttributeValue::S(data)),
                            (
                                "created_at".to_owned(),
                                AttributeValue::S(event.created_at.to_rfc3339()),
                            ),
                        ]);
                        if truncated {
                            item.insert("data_truncated".to_owned(), AttributeValue::Bool(true));
                        }
                        if let Some(step) = event.step_no {
                            item.insert("step_no".to_owned(), AttributeValue::N(step.to_string()));
                        }
                        let put = PutRequest::builder()
                            .set_item(Some(item))
                            .build()
                            .map_err(|e| e.to_string())?;
                        Ok(WriteRequest::builder().put_request(put).build())
                    })
                    .collect::<Result<_, String>>()?;
                self.write_batch(requests).await?;
            }
            ended = events.iter().any(RunEvent::is_terminal);
            done = events.last().map_or(done, |e| e.seq);
            if let Ok(mut mirrored) = self.mirrored.lock() {
                mirrored.insert(run, done);
            }
        }
        if ended {
            if let Ok(mut mirrored) = self.mirrored.lock() {
                mirrored.remove(&run);
            }
        }
        Ok(())
    }

    /// Puts up to 25 items, writing again what DynamoDB left unprocessed
    /// (throttling) with a backoff.
    async fn write_batch(&self, mut requests: Vec<WriteRequest>) -> Result<(), String> {
        for attempt in 1..=BATCH_WRITE_TRIES {
            let output = self
                .client
                .batch_write_item()
                .request_items(&self.table, requests)
                .send()
                .await
                .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
            requests = output
                .unprocessed_items
                .and_then(|mut items| items.remove(&self.table))
                .unwrap_or_default();
            if requests.is_empty() {
                return Ok(());
            }
            if attempt < BATCH_WRITE_TRIES {
                tokio::time::sleep(full_jitter(
                    Duration::from_millis(50),
                    Duration::from_secs(2),
                    attempt,
                ))
                .await;
            }
        }
        Err("the events table kept throttling".to_owned())
    }

    fn ledger_check_due(&self, run: RunId) -> bool {
        let Ok(mut checks) = self.last_ledger_check.lock() else {
            return true;
        };
        let now = Instant::now();
        match checks.get(&run) {
            Some(at) if now.duration_since(*at) < LEDGER_CHECK_EVERY => false,
            _ => {
                checks.insert(run, now);
                true
            }
        }
    }
}

#[async_trait]
impl EventFeed for DynamoEventFeed {
    async fn publish(&self, run: RunId, last_seq: i64) {
        if let Err(error) = self.mirror(run, last_seq).await {
            // The run goes on; the next publish catches up, readers fall back to the ledger.
            tracing::warn!(run_id = %run, %error, "mirroring events to the feed failed");
        }
        let _ = self.signals.send((run, last_seq));
    }

    fn subscribe(&self) -> broadcast::Receiver<(RunId, i64)> {
        self.signals.subscribe()
    }

    fn delta_interval(&self) -> Duration {
        DELTA_WRITE_EVERY
    }

    async fn publish_delta(&self, delta: TextDelta) {
        let now = since_epoch();
        let item = HashMap::from([
            (
                "run_id".to_owned(),
                AttributeValue::S(deltas_key(delta.run_id)),
            ),
            (
                "seq".to_owned(),
                AttributeValue::N(now.as_micros().to_string()),
            ),
            (
                "step_no".to_owned(),
                AttributeValue::N(delta.step_no.to_string()),
            ),
            (
                "offset".to_owned(),
                AttributeValue::N(delta.offset.to_string()),
            ),
            ("text".to_owned(), AttributeValue::S(delta.text)),
            (
                "expires_at".to_owned(),
                AttributeValue::N((now + DELTA_LIFETIME).as_secs().to_string()),
            ),
        ]);
        // A batch of one: the functions write the events table in batches.
        let written = match PutRequest::builder().set_item(Some(item)).build() {
            Ok(put) => {
                self.write_batch(vec![WriteRequest::builder().put_request(put).build()])
                    .await
            }
            Err(error) => Err(error.to_string()),
        };
        if let Err(error) = written {
            // Deltas are best effort: the turn itself is in the ledger.
            tracing::warn!(run_id = %delta.run_id, %error, "writing text deltas failed");
        }
    }

    fn subscribe_deltas(&self, run: RunId) -> broadcast::Receiver<Arc<TextDelta>> {
        let (receiver, channel) = self.deltas.subscribe(run);
        if let Some(channel) = channel {
            let (asks, asked) = mpsc::channel(8);
            if let Ok(mut readers) = self.delta_readers.lock() {
                readers.insert(run, asks.clone());
            }
            let reader = DeltaReader {
                client: self.client.clone(),
                table: self.table.clone(),
                run,
                channel,
            };
            let readers = self.delta_readers.clone();
            tokio::spawn(async move {
                reader.read(asked).await;
                if let Ok(mut readers) = readers.lock() {
                    if readers.get(&run).is_some_and(|a| a.same_channel(&asks)) {
                        readers.remove(&run);
                    }
                }
            });
        }
        receiver
    }

    async fn catch_up_deltas(&self, run: RunId) {
        let asks = self
            .delta_readers
            .lock()
            .ok()
            .and_then(|readers| readers.get(&run).cloned());
        let Some(asks) = asks else {
            return;
        };
        let (done, read) = oneshot::channel();
        let asked = async {
            if asks.send(done).await.is_ok() {
                let _ = read.await;
            }
        };
        // A reader that cannot answer in time leaves the stream as it is.
        let _ = tokio::time::timeout(CATCH_UP_WITHIN, asked).await;
    }
}

/// Reads one run's delta items into its channel, for as long as the
/// channel has receivers.
struct DeltaReader {
    client: aws_sdk_dynamodb::Client,
    table: String,
    run: RunId,
    channel: broadcast::Sender<Arc<TextDelta>>,
}

impl DeltaReader {
    /// Items written from now on, every `DELTA_WRITE_EVERY` and whenever
    /// `asked` (each ask is answered once the items are read).
    async fn read(self, mut asked: mpsc::Receiver<oneshot::Sender<()>>) {
        let key = AttributeValue::S(deltas_key(self.run));
        let newest = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("run_id = :run")
            .expression_attribute_values(":run", key.clone())
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(true)
            .send()
            .await;
        // Deltas written before the stream began are not sent.
        let mut after = match newest {
            Ok(output) => output
                .items()
                .first()
                .and_then(|item| number(item, "seq"))
                .unwrap_or(0),
            Err(_) => since_epoch().as_micros() as i64,
        };
        let mut empty_reads = 0;
        loop {
            // A run whose model is not writing is read less often.
            let every = if empty_reads < DELTA_READS_BEFORE_IDLE {
                DELTA_WRITE_EVERY
            } else {
                DELTA_IDLE_READ_EVERY
            };
            let ask = tokio::select! {
                () = tokio::time::sleep(every) => None,
                Some(ask) = asked.recv() => Some(ask),
            };
            if self.channel.receiver_count() == 0 {
                return;
            }
            // One read answers every stream that asked before it began.
            let asks: Vec<_> = ask
                .into_iter()
                .chain(std::iter::from_fn(|| asked.try_recv().ok()))
                .collect();
            match self.items_after(&key, after).await {
                Ok(deltas) => {
                    empty_reads = if deltas.is_empty() {
                        empty_reads + 1
                    } else {
                        0
                    };
                    for (seq, delta) in deltas {
                        after = after.max(seq);
                        let _ = self.channel.send(Arc::new(delta));
                    }
                }
                Err(error) => {
                    tracing::warn!(run_id = %self.run, %error, "reading text deltas failed")
                }
            }
            for ask in asks {
                let _ = ask.send(());
            }
        }
    }

    async fn items_after(
        &self,
        key: &AttributeValue,
        after: i64,
    ) -> Result<Vec<(i64, TextDelta)>, String> {
        let output = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("run_id = :run AND seq > :after")
            .expression_attribute_values(":run", key.clone())
            .expression_attribute_values(":after", AttributeValue::N(after.to_string()))
            // A turn's last item was written before its llm.completed.
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| aws_sdk_dynamodb::error::DisplayErrorContext(e).to_string())?;
        Ok(output
            .items()
            .iter()
            .filter_map(|item| {
                Some((
                    number(item, "seq")?,
                    TextDelta {
                        run_id: self.run,
                        step_no: i32::try_from(number(item, "step_no")?).ok()?,
                        offset: usize::try_from(number(item, "offset")?).ok()?,
                        text: text(item, "text")?,
                    },
                ))
            })
            .collect())
    }
}

#[async_trait]
impl EventSource for DynamoEventFeed {
    async fn events_after(
        &self,
        run: RunId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RunEvent>, EventSourceError> {
        let from_ledger = || async {
            self.ledger
                .events_after(run, after, limit)
                .await
                .map_err(|e| EventSourceError(e.to_string()))
        };
        match self.query(run, after, limit).await {
            // A gap (a mirror write that has not happened yet) is read from the ledger.
            Ok(events) if events.first().is_some_and(|e| e.seq != after + 1) => from_ledger().await,
            Ok(events) if events.is_empty() && self.ledger_check_due(run) => from_ledger().await,
            Ok(events) => Ok(events),
            Err(error) => {
                tracing::warn!(run_id = %run, %error, "reading the feed failed; reading the ledger");
                from_ledger().await
            }
        }
    }
}
