//! Appending and reading run events. Appends happen inside a transaction that
//! holds the run row lock, which is what keeps `seq` gap-free.

use serde_json::Value;

use super::{Ledger, StoreError, Tx};
use crate::domain::{NewEvent, RunEvent, RunId};

/// Appends `events` after `last_seq` and returns the new last seq. The caller
/// holds the run row lock and stores the returned value in `runs.last_seq`.
pub(super) async fn append_events(
    tx: &Tx<'_>,
    run: RunId,
    last_seq: i64,
    events: &[NewEvent],
) -> Result<i64, StoreError> {
    if events.is_empty() {
        return Ok(last_seq);
    }
    let seqs: Vec<i64> = (1..=events.len() as i64).map(|i| last_seq + i).collect();
    let types: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    let steps: Vec<Option<i32>> = events.iter().map(|e| e.step_no).collect();
    let data: Vec<&Value> = events.iter().map(|e| &e.data).collect();
    let new_last = last_seq + events.len() as i64;
    tx.exec(
        "WITH e AS (
             INSERT INTO run_events (run_id, seq, type, step_no, data)
             SELECT $1, * FROM unnest($2::bigint[], $3::text[], $4::int[], $5::jsonb[]))
         UPDATE runs SET last_seq = $6 WHERE id = $1",
        &[&run.0, &seqs, &types, &steps, &data, &new_last],
    )
    .await?;
    Ok(new_last)
}

impl Ledger {
    /// Events with `seq > after`, oldest first, at most `limit`.
    pub async fn events_after(
        &self,
        run: RunId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RunEvent>, StoreError> {
        let rows = self
            .client()
            .await?
            .q(
                "SELECT seq, type, step_no, data, created_at FROM run_events
                 WHERE run_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
                &[&run.0, &after, &limit],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| RunEvent {
                run_id: run,
                seq: row.get("seq"),
                kind: row.get("type"),
                step_no: row.get("step_no"),
                data: row.get("data"),
                created_at: row.get("created_at"),
            })
            .collect())
    }

    /// Appends events to a running run outside a step commit (attempt
    /// markers); returns the new last seq, or `None` when the run has ended.
    pub async fn append_run_events(
        &self,
        run: RunId,
        events: &[NewEvent],
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .q_opt(
                "SELECT last_seq FROM runs WHERE id = $1 AND status = 'running' FOR UPDATE",
                &[&run.0],
            )
            .await?
        else {
            return Ok(None);
        };
        let last = append_events(&tx, run, row.get(0), events).await?;
        tx.commit().await?;
        Ok(Some(last))
    }
}

/// The ledger is the event source of the embedded server (and the fallback
/// everywhere).
#[async_trait::async_trait]
impl crate::ports::EventSource for Ledger {
    async fn events_after(
        &self,
        run: RunId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RunEvent>, crate::ports::EventSourceError> {
        Ledger::events_after(self, run, after, limit)
            .await
            .map_err(|e| crate::ports::EventSourceError(e.to_string()))
    }
}
