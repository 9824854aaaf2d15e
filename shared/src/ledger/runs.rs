//! Runs: creation, reads, the start transition and settlement.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::Row;

use super::events::append_events;
use super::steps::bill_kept_turn;
use super::{Ledger, StoreError};
use crate::domain::event::terminal_event;
use crate::domain::{
    EventType, Run, RunId, RunLimits, RunStatus, StopReason, TeamId, Terminal, ThreadId, Webhook,
};

pub(super) const RUN_COLUMNS: &str =
    "id, team_id, agent, version, active_agent, active_version, status,
    stop_reason, stop_detail, input, output, raw_output, metadata, limits, next_step,
        handoff_depth, repairs_used, input_tokens, output_tokens, llm_calls, last_seq,
    run_fee_micros, created_at, started_at, deadline, finished_at,
    webhook->>'url' AS webhook_url, wound_down,
    COALESCE(thread_id, id) AS thread_id, previous_run_id";

pub(super) fn run_from_row(row: &Row) -> Result<Run, StoreError> {
    let corrupt = |what: &str, e: String| StoreError::Corrupt(format!("run {what}: {e}"));
    let status: String = row.get("status");
    let stop_reason: Option<String> = row.get("stop_reason");
    Ok(Run {
        id: RunId(row.get("id")),
        team_id: TeamId(row.get("team_id")),
        agent: row.get("agent"),
        version: row.get("version"),
        active_agent: row.get("active_agent"),
        active_version: row.get("active_version"),
        status: status.parse().map_err(|e| corrupt("status", e))?,
        stop_reason: stop_reason
            .map(|r| r.parse::<StopReason>())
            .transpose()
            .map_err(|e| corrupt("stop_reason", e))?,
        stop_detail: row.get("stop_detail"),
        input: row.get("input"),
        output: row.get("output"),
        raw_output: row.get("raw_output"),
        metadata: row.get("metadata"),
        limits: serde_json::from_value(row.get("limits"))
            .map_err(|e| corrupt("limits", e.to_string()))?,
        next_step: row.get("next_step"),
        handoff_depth: row.get("handoff_depth"),
        repairs_used: row.get("repairs_used"),
        input_tokens: row.get("input_tokens"),
        output_tokens: row.get("output_tokens"),
        llm_calls: row.get("llm_calls"),
        last_seq: row.get("last_seq"),
        run_fee_micros: row.get("run_fee_micros"),
        created_at: row.get("created_at"),
        started_at: row.get("started_at"),
        deadline: row.get("deadline"),
        finished_at: row.get("finished_at"),
        webhook_url: row.get("webhook_url"),
        wound_down: row.get("wound_down"),
        thread_id: ThreadId(row.get("thread_id")),
        previous_run_id: row
            .get::<_, Option<uuid::Uuid>>("previous_run_id")
            .map(RunId),
    })
}

/// A run about to be created.
#[derive(Clone, Debug)]
pub struct NewRun {
    pub id: RunId,
    pub team_id: TeamId,
    pub agent: String,
    pub version: i32,
    pub input: Value,
    pub metadata: Value,
    pub limits: RunLimits,
    /// The team plan's fee, fixed at acceptance.
    pub run_fee_micros: i64,
    /// The request's Idempotency-Key and body hash, kept with the run (the
    /// answer to a repeated key while the hot store cannot be reached).
    pub idempotency: Option<(String, String)>,
    /// Where the run's end is announced.
    pub webhook: Option<Webhook>,
    /// The run it continues (an ended run of the team, not continued yet),
    /// whose thread it joins; without it the run begins a thread of its own.
    pub continues: Option<RunId>,
}

/// The constraint that lets a run be continued once.
const PREVIOUS_RUN_UNIQUE: &str = "runs_previous_run_id_key";

/// What `create_run` did.
#[derive(Clone, Debug)]
pub enum Creation {
    Created(Box<Run>),
    /// A run with this id exists already.
    Exists,
    /// Another run holds the Idempotency-Key.
    KeyTaken {
        run_id: RunId,
        request_hash: String,
    },
    /// Another run continues the run to continue.
    PreviousTaken,
    /// The run to continue has not ended (or is not the team's).
    PreviousNotEnded,
}

/// Which of a team's runs a listing shows; every part is optional.
#[derive(Clone, Debug, Default)]
pub struct RunFilter {
    pub status: Option<RunStatus>,
    /// The agent the run was started with.
    pub agent: Option<String>,
    /// Created at or after.
    pub created_after: Option<DateTime<Utc>>,
    /// Created before.
    pub created_before: Option<DateTime<Utc>>,
    /// A metadata key whose value is this string.
    pub metadata: Option<(String, String)>,
}

/// One page of a run listing, newest first.
#[derive(Clone, Debug)]
pub struct RunPage {
    pub runs: Vec<Run>,
    pub next_cursor: Option<String>,
}

/// A page cursor's time and run id, as statement parameters.
fn cursor_parts(
    cursor: Option<(DateTime<Utc>, RunId)>,
) -> (Option<DateTime<Utc>>, Option<uuid::Uuid>) {
    cursor.map_or((None, None), |(at, id)| (Some(at), Some(id.0)))
}

/// At most `limit` runs of `rows` (which has one more when there is a
/// next page), and the cursor of the next page.
fn page_of(rows: &[Row], limit: i64) -> Result<RunPage, StoreError> {
    let mut runs = rows
        .iter()
        .map(run_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let next_cursor = if runs.len() as i64 > limit {
        runs.truncate(limit as usize);
        runs.last().map(|r| encode_cursor(r.created_at, r.id))
    } else {
        None
    };
    Ok(RunPage { runs, next_cursor })
}

/// The user message a run's input becomes.
pub fn input_message(input: &Value) -> String {
    match input {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

impl Ledger {
    /// Creates a run (status `queued`, its input as the first message, event
    /// `run.queued`) with its Idempotency-Key, in one statement. The ledger
    /// has the last word on a key: a run is created only if the key is free,
    /// expired or already its own, so two runs never share a live key even
    /// when the hot store's answer was lost in between.
    pub async fn create_run(&self, new: &NewRun) -> Result<Creation, StoreError> {
        let limits = serde_json::to_value(&new.limits)
            .map_err(|e| StoreError::Rejected(format!("limits do not serialize: {e}")))?;
        let message = serde_json::to_value(crate::domain::ChatMessage::User {
            content: input_message(&new.input),
        })
        .map_err(|e| StoreError::Rejected(e.to_string()))?;
        let queued = json!({"agent": new.agent, "version": new.version});
        let (key, request_hash) = new
            .idempotency
            .as_ref()
            .map(|(key, hash)| (Some(key.as_str()), Some(hash.as_str())))
            .unwrap_or_default();
        let webhook = new
            .webhook
            .as_ref()
            .map(serde_json::to_value)
            .transpose()
            .map_err(|e| StoreError::Rejected(format!("webhook does not serialize: {e}")))?;
        let client = self.client().await?;
        let row = client
            .q_opt(
                &format!(
                    "WITH p AS (
                         SELECT seq, agent, message FROM run_messages
                         WHERE run_id = $15 AND EXISTS (
                             SELECT 1 FROM runs WHERE id = $15 AND team_id = $2
                                 AND status NOT IN ('queued', 'running', 'waiting'))),
                     n AS (SELECT count(*)::int AS copied FROM p),
                     k AS (
                         INSERT INTO run_idempotency_keys (team_id, key, request_hash, run_id)
                         SELECT $2, $9, $10, $1
                         WHERE $9::text IS NOT NULL AND ($15::uuid IS NULL OR EXISTS (SELECT 1 FROM p))
                         ON CONFLICT (team_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                             run_id = EXCLUDED.run_id, created_at = now()
                         WHERE run_idempotency_keys.created_at < now() - interval '24 hours'
                            OR run_idempotency_keys.run_id = EXCLUDED.run_id
                         RETURNING run_id),
                     r AS (
                         INSERT INTO runs (id, team_id, agent, version, active_agent, active_version,
                                           status, input, metadata, limits, message_count, last_seq,
                                           run_fee_micros, webhook, thread_id, previous_run_id)
                         SELECT $1, $2, $3, $4, $3, $4, 'queued', $5, $6, $7,
                                (SELECT copied FROM n) + 1, 1, $8, $14,
                                COALESCE((SELECT COALESCE(thread_id, id) FROM runs WHERE id = $15), $1), $15
                         WHERE ($9::text IS NULL OR EXISTS (SELECT 1 FROM k))
                           AND ($15::uuid IS NULL OR EXISTS (SELECT 1 FROM p))
                         -- A run continued already fails the statement (the
                         -- unique previous_run_id), so the key is not kept.
                         ON CONFLICT (id) DO NOTHING
                         RETURNING {RUN_COLUMNS}),
                     c AS (
                         INSERT INTO run_messages (run_id, seq, step_no, agent, message)
                         SELECT $1, p.seq, 0, p.agent, p.message FROM p, r),
                     m AS (
                         INSERT INTO run_messages (run_id, seq, step_no, agent, message)
                         SELECT $1, n.copied + 1, 0, $3, $11 FROM r, n),
                     e AS (
                         INSERT INTO run_events (run_id, seq, type, step_no, data)
                         SELECT $1, 1, $12, NULL, $13 FROM r)
                     SELECT * FROM r"
                ),
                &[
                    &new.id.0,
                    &new.team_id.0,
                    &new.agent,
                    &new.version,
                    &new.input,
                    &new.metadata,
                    &limits,
                    &new.run_fee_micros,
                    &key,
                    &request_hash,
                    &message,
                    &EventType::RunQueued.as_str(),
                    &queued,
                    &webhook,
                    &new.continues.map(|previous| previous.0),
                ],
            )
            .await;
        let row = match row {
            Err(error)
                if error
                    .as_db_error()
                    .and_then(|db| db.constraint())
                    .is_some_and(|name| name == PREVIOUS_RUN_UNIQUE) =>
            {
                return Ok(Creation::PreviousTaken);
            }
            other => other?,
        };
        if let Some(row) = row {
            return Ok(Creation::Created(Box::new(run_from_row(&row)?)));
        }
        if let Some(key) = key {
            let holder = client
                .q_opt(
                    "SELECT request_hash, run_id FROM run_idempotency_keys
                     WHERE team_id = $1 AND key = $2",
                    &[&new.team_id.0, &key],
                )
                .await?;
            if let Some(holder) = holder {
                let run_id = RunId(holder.get(1));
                if run_id != new.id {
                    return Ok(Creation::KeyTaken {
                        run_id,
                        request_hash: holder.get(0),
                    });
                }
            }
        }
        if new.continues.is_some() {
            let created = client
                .q_opt("SELECT 1 FROM runs WHERE id = $1", &[&new.id.0])
                .await?;
            if created.is_none() {
                return Ok(Creation::PreviousNotEnded);
            }
        }
        Ok(Creation::Exists)
    }

    /// The statuses of `runs` (one statement); a run not in the ledger is
    /// left out.
    pub async fn run_statuses(
        &self,
        runs: &[RunId],
    ) -> Result<std::collections::HashMap<RunId, RunStatus>, StoreError> {
        if runs.is_empty() {
            return Ok(Default::default());
        }
        let ids: Vec<uuid::Uuid> = runs.iter().map(|run| run.0).collect();
        let rows = self
            .client()
            .await?
            .q("SELECT id, status FROM runs WHERE id = ANY($1)", &[&ids])
            .await?;
        rows.iter()
            .map(|row| {
                let status: String = row.get(1);
                status
                    .parse()
                    .map(|status| (RunId(row.get(0)), status))
                    .map_err(|e| StoreError::Corrupt(format!("run status: {e}")))
            })
            .collect()
    }

    /// Runs not yet ended, all teams: (queued, running).
    pub async fn open_run_counts(&self) -> Result<(i64, i64), StoreError> {
        let row = self
            .client()
            .await?
            .q_one(
                "SELECT count(*) FILTER (WHERE status = 'queued'),
                        count(*) FILTER (WHERE status = 'running')
                 FROM runs WHERE status IN ('queued', 'running')",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    }

    pub async fn get_run(&self, run: RunId) -> Result<Option<Run>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE id = $1"),
                &[&run.0],
            )
            .await?;
        row.as_ref().map(run_from_row).transpose()
    }

    /// A team's run; another team's run is `None`, exactly like a missing one.
    pub async fn get_team_run(&self, team: TeamId, run: RunId) -> Result<Option<Run>, StoreError> {
        Ok(self.get_run(run).await?.filter(|r| r.team_id == team))
    }

    /// A team's runs that pass `filter`, newest first. `cursor` is the
    /// `next_cursor` of the previous page.
    pub async fn list_runs(
        &self,
        team: TeamId,
        filter: &RunFilter,
        cursor: Option<(DateTime<Utc>, RunId)>,
        limit: i64,
    ) -> Result<RunPage, StoreError> {
        let (cursor_at, cursor_id) = cursor_parts(cursor);
        let status = filter.status.map(RunStatus::as_str);
        let (metadata_key, metadata_value) = match &filter.metadata {
            Some((key, value)) => (Some(key.as_str()), Some(value.as_str())),
            None => (None, None),
        };
        let rows = self
            .client()
            .await?
            .q(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE team_id = $1
                       AND ($2::text IS NULL OR status = $2)
                       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                       AND ($6::text IS NULL OR agent = $6)
                       AND ($7::timestamptz IS NULL OR created_at >= $7)
                       AND ($8::timestamptz IS NULL OR created_at < $8)
                       AND ($9::text IS NULL OR metadata->$9 = to_jsonb($10::text))
                     ORDER BY created_at DESC, id DESC LIMIT $5"
                ),
                &[
                    &team.0,
                    &status,
                    &cursor_at,
                    &cursor_id,
                    &(limit + 1),
                    &filter.agent.as_deref(),
                    &filter.created_after,
                    &filter.created_before,
                    &metadata_key,
                    &metadata_value,
                ],
            )
            .await?;
        page_of(&rows, limit)
    }

    /// One page of a team's thread, newest first (a statement of its own,
    /// so it keeps to the thread's index).
    pub async fn thread_runs(
        &self,
        team: TeamId,
        thread: ThreadId,
        cursor: Option<(DateTime<Utc>, RunId)>,
        limit: i64,
    ) -> Result<RunPage, StoreError> {
        let (cursor_at, cursor_id) = cursor_parts(cursor);
        let rows = self
            .client()
            .await?
            .q(
                &format!(
                    "SELECT {RUN_COLUMNS} FROM runs
                     WHERE team_id = $1 AND (thread_id = $2 OR (id = $2 AND thread_id IS NULL))
                       AND ($3::timestamptz IS NULL OR (created_at, id) < ($3, $4))
                     ORDER BY created_at DESC, id DESC LIMIT $5"
                ),
                &[&team.0, &thread.0, &cursor_at, &cursor_id, &(limit + 1)],
            )
            .await?;
        page_of(&rows, limit)
    }

    /// The newest run of a team's thread: the one no run continues, as a
    /// run is continued only once it has ended.
    pub async fn thread_head(
        &self,
        team: TeamId,
        thread: ThreadId,
    ) -> Result<Option<Run>, StoreError> {
        let page = self.thread_runs(team, thread, None, 1).await?;
        Ok(page.runs.into_iter().next())
    }

    /// Runs not yet finished, waiting ones among them (for resuming after a
    /// restart).
    pub async fn unfinished_runs(&self) -> Result<Vec<RunId>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT id FROM runs WHERE status IN ('queued', 'running', 'waiting') ORDER BY created_at",
                &[],
            )
            .await?
            .iter()
            .map(|row| RunId(row.get(0)))
            .collect())
    }

    /// Runs still `queued` that were created more than `age` ago, oldest
    /// first: accepted runs whose start was lost (the starter's work list).
    pub async fn stale_queued_runs(
        &self,
        age: std::time::Duration,
        limit: i64,
    ) -> Result<Vec<RunId>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT id FROM runs
                 WHERE status = 'queued' AND created_at < now() - make_interval(secs => $1)
                 ORDER BY created_at LIMIT $2",
                &[&age.as_secs_f64(), &limit],
            )
            .await?
            .iter()
            .map(|row| RunId(row.get(0)))
            .collect())
    }

    /// Moves a queued run to `running` (setting its deadline, event
    /// `run.started`); returns the run as it now is, and whether this call
    /// started it. Idempotent.
    pub async fn mark_started(&self, run: RunId) -> Result<Option<(Run, bool)>, StoreError> {
        let started = self
            .client()
            .await?
            .q_opt(
                &format!(
                    "WITH r AS (
                         UPDATE runs SET status = 'running', started_at = now(), last_seq = last_seq + 1,
                             deadline = now() + make_interval(secs => (limits->>'timeout_seconds')::double precision)
                         WHERE id = $1 AND status = 'queued'
                         RETURNING {RUN_COLUMNS}),
                     e AS (
                         INSERT INTO run_events (run_id, seq, type, step_no, data)
                         SELECT $1, r.last_seq, $2, NULL, '{{}}'::jsonb FROM r)
                     SELECT * FROM r"
                ),
                &[&run.0, &EventType::RunStarted.as_str()],
            )
            .await?;
        match started {
            Some(row) => Ok(Some((run_from_row(&row)?, true))),
            None => Ok(self.get_run(run).await?.map(|run| (run, false))),
        }
    }

    /// Ends a run unless it has ended already: status, stop reason, the
    /// usage of a kept turn its step could not commit, and the terminal
    /// event in one transaction. Returns the run if this call ended it.
    pub async fn settle_run(
        &self,
        run: RunId,
        terminal: &Terminal,
    ) -> Result<Option<Run>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .q_opt(
                "SELECT status, last_seq FROM runs WHERE id = $1 FOR UPDATE",
                &[&run.0],
            )
            .await?
        else {
            return Ok(None);
        };
        let status: String = row.get(0);
        if status
            .parse::<RunStatus>()
            .map_err(StoreError::Corrupt)?
            .is_terminal()
        {
            return Ok(None);
        }
        bill_kept_turn(&tx, run).await?;
        let row = tx
            .q_one(
                &format!(
                    "UPDATE runs SET status = $2, stop_reason = $3, stop_detail = $4,
                         output = coalesce($5, output), raw_output = coalesce($6, raw_output),
                         finished_at = now(), started_at = coalesce(started_at, now())
                     WHERE id = $1 RETURNING {RUN_COLUMNS}"
                ),
                &[
                    &run.0,
                    &terminal.reason.status().as_str(),
                    &terminal.reason.as_str(),
                    &terminal.detail,
                    &terminal.output,
                    &terminal.raw_output,
                ],
            )
            .await?;
        let mut settled = run_from_row(&row)?;
        let event = terminal_event(&settled, None);
        settled.last_seq = append_events(&tx, run, settled.last_seq, &[event]).await?;
        tx.commit().await?;
        Ok(Some(settled))
    }
}

/// `next_cursor` is `<created_at micros>_<run id>`.
pub fn encode_cursor(at: DateTime<Utc>, id: RunId) -> String {
    format!("{}_{}", at.timestamp_micros(), id)
}

pub fn decode_cursor(cursor: &str) -> Option<(DateTime<Utc>, RunId)> {
    let (micros, id) = cursor.split_once('_')?;
    let at = DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let id = RunId::new();
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("garbage"), None);
        assert_eq!(decode_cursor("12_notanid"), None);
    }

    #[test]
    fn string_input_is_the_message_and_json_is_serialized() {
        assert_eq!(input_message(&json!("hello")), "hello");
        assert_eq!(input_message(&json!({"a": 1})), r#"{"a":1}"#);
    }
}
