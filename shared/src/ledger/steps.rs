//! Steps: the per-attempt records that make retries repeat nothing, and the
//! one transaction that commits a step.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::events::append_events;
use super::runs::{run_from_row, terminal_event};
use super::{Cached, Ledger, StoreError};
use crate::domain::{ChatMessage, EventType, NewEvent, RunId, RunStatus, StepOutcome, Terminal};

/// The LLM's answer in a step, kept so a retried attempt reuses it.
#[derive(Clone, Debug)]
pub struct LlmTurn {
    pub agent: String,
    pub model: String,
    pub message: ChatMessage,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub context_trimmed: i32,
}

/// One executed tool call.
#[derive(Clone, Debug, Serialize)]
pub struct ToolCallRecord {
    pub call_index: i32,
    pub tool_call_id: String,
    pub name: String,
    pub arguments: Value,
    pub result: String,
    pub is_error: bool,
    pub attempts: i32,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

/// Everything a step changes, committed at once.
#[derive(Clone, Debug)]
pub struct StepCommit {
    pub run_id: RunId,
    pub step_no: i32,
    pub attempt: i32,
    pub agent: String,
    pub agent_version: i32,
    pub model: String,
    pub started_at: DateTime<Utc>,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub context_trimmed: i32,
    /// Messages this step adds to the conversation, in order.
    pub messages: Vec<ChatMessage>,
    /// Events before the terminal one (which the ledger adds when `terminal` is set).
    pub events: Vec<NewEvent>,
    /// The agent active after this step, when a handoff changed it.
    pub handoff_to: Option<(String, i32)>,
    pub repairs_used: i32,
    pub terminal: Option<Terminal>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum CommitResult {
    Committed {
        outcome: StepOutcome,
        last_seq: i64,
    },
    /// Another attempt committed this step first; its outcome.
    AlreadyCommitted(StepOutcome),
    /// The run ended (cancel, timeout) while the step ran; nothing was written.
    RunEnded(StepOutcome),
}

/// A committed step as `GET /v1/runs/{id}/steps` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct StepRecord {
    pub step_no: i32,
    pub agent: String,
    pub agent_version: i32,
    pub attempt: i32,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub context_trimmed: i32,
    pub outcome: Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub tool_calls: Vec<ToolCallRecord>,
}

fn to_json<T: Serialize>(value: &T) -> Result<Value, StoreError> {
    serde_json::to_value(value).map_err(|e| StoreError::Rejected(e.to_string()))
}

fn outcome_from(value: Value) -> Result<StepOutcome, StoreError> {
    serde_json::from_value(value)
        .map_err(|e| StoreError::Corrupt(format!("stored step outcome: {e}")))
}

fn tool_call_from_row(row: &tokio_postgres::Row) -> ToolCallRecord {
    ToolCallRecord {
        call_index: row.get("call_index"),
        tool_call_id: row.get("tool_call_id"),
        name: row.get("name"),
        arguments: row.get("arguments"),
        result: row.get("result"),
        is_error: row.get("is_error"),
        attempts: row.get("attempts"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    }
}

impl Ledger {
    /// The stored outcome of a committed step.
    pub async fn step_outcome(
        &self,
        run: RunId,
        step_no: i32,
    ) -> Result<Option<StepOutcome>, StoreError> {
        self.client()
            .await?
            .q_opt(
                "SELECT outcome FROM run_steps WHERE run_id = $1 AND step_no = $2",
                &[&run.0, &step_no],
            )
            .await?
            .map(|row| outcome_from(row.get(0)))
            .transpose()
    }

    /// The conversation so far, in order.
    pub async fn messages(&self, run: RunId) -> Result<Vec<ChatMessage>, StoreError> {
        self.client()
            .await?
            .q(
                "SELECT message FROM run_messages WHERE run_id = $1 ORDER BY seq",
                &[&run.0],
            )
            .await?
            .iter()
            .map(|row| {
                serde_json::from_value(row.get(0))
                    .map_err(|e| StoreError::Corrupt(format!("stored message: {e}")))
            })
            .collect()
    }

    /// Records the start of an attempt at a step (event `step.started`) and
    /// returns its attempt number, or `None` when the run is no longer
    /// running or the step is already committed.
    pub async fn begin_step_attempt(
        &self,
        run: RunId,
        step_no: i32,
        agent: &str,
    ) -> Result<Option<(i32, i64)>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .q_opt(
                "SELECT last_seq FROM runs
                 WHERE id = $1 AND status = 'running' AND next_step = $2 FOR UPDATE",
                &[&run.0, &step_no],
            )
            .await?
        else {
            return Ok(None);
        };
        let last_seq: i64 = row.get(0);
        let previous: i64 = tx
            .q_one(
                "SELECT count(*) FROM run_events
                 WHERE run_id = $1 AND type = 'step.started' AND step_no = $2",
                &[&run.0, &step_no],
            )
            .await?
            .get(0);
        let attempt = previous as i32 + 1;
        let event = NewEvent::new(
            EventType::StepStarted,
            Some(step_no),
            serde_json::json!({"step_no": step_no, "agent": agent, "attempt": attempt}),
        );
        let last_seq = append_events(&tx, run, last_seq, &[event]).await?;
        tx.commit().await?;
        Ok(Some((attempt, last_seq)))
    }

    pub async fn llm_turn(&self, run: RunId, step_no: i32) -> Result<Option<LlmTurn>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT agent, model, message, input_tokens, output_tokens, context_trimmed
                 FROM step_llm_turns WHERE run_id = $1 AND step_no = $2",
                &[&run.0, &step_no],
            )
            .await?;
        row.map(|row| {
            Ok(LlmTurn {
                agent: row.get("agent"),
                model: row.get("model"),
                message: serde_json::from_value(row.get("message"))
                    .map_err(|e| StoreError::Corrupt(format!("stored LLM turn: {e}")))?,
                input_tokens: row.get("input_tokens"),
                output_tokens: row.get("output_tokens"),
                context_trimmed: row.get("context_trimmed"),
            })
        })
        .transpose()
    }

    /// Keeps a step's LLM turn and appends `events` (`llm.completed`, tool
    /// starts), so those are written exactly once per step. When another
    /// attempt stored a turn first, that one wins and is returned instead.
    pub async fn save_llm_turn(
        &self,
        run: RunId,
        step_no: i32,
        turn: &LlmTurn,
        events: &[NewEvent],
    ) -> Result<(LlmTurn, Option<i64>), StoreError> {
        let message = to_json(&turn.message)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some(row) = tx
            .q_opt(
                "SELECT last_seq FROM runs WHERE id = $1 AND status = 'running' FOR UPDATE",
                &[&run.0],
            )
            .await?
        else {
            return Ok((turn.clone(), None));
        };
        let inserted = tx
            .exec(
                "INSERT INTO step_llm_turns
                     (run_id, step_no, agent, model, message, input_tokens, output_tokens, context_trimmed)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                &[
                    &run.0,
                    &step_no,
                    &turn.agent,
                    &turn.model,
                    &message,
                    &turn.input_tokens,
                    &turn.output_tokens,
                    &turn.context_trimmed,
                ],
            )
            .await?;
        if inserted == 0 {
            drop(tx);
            let stored = self.llm_turn(run, step_no).await?.ok_or_else(|| {
                StoreError::Corrupt("LLM turn vanished after a conflict".to_owned())
            })?;
            return Ok((stored, None));
        }
        let last_seq = append_events(&tx, run, row.get(0), events).await?;
        tx.commit().await?;
        Ok((turn.clone(), Some(last_seq)))
    }

    pub async fn tool_calls(
        &self,
        run: RunId,
        step_no: i32,
    ) -> Result<Vec<ToolCallRecord>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT * FROM tool_calls WHERE run_id = $1 AND step_no = $2 ORDER BY call_index",
                &[&run.0, &step_no],
            )
            .await?
            .iter()
            .map(tool_call_from_row)
            .collect())
    }

    /// Keeps a finished tool call; the first record for a call index wins.
    pub async fn save_tool_call(
        &self,
        run: RunId,
        step_no: i32,
        call: &ToolCallRecord,
    ) -> Result<(), StoreError> {
        self.client()
            .await?
            .exec(
                "INSERT INTO tool_calls (run_id, step_no, call_index, tool_call_id, name, arguments,
                                         result, is_error, attempts, started_at, finished_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
                &[
                    &run.0,
                    &step_no,
                    &call.call_index,
                    &call.tool_call_id,
                    &call.name,
                    &call.arguments,
                    &call.result,
                    &call.is_error,
                    &call.attempts,
                    &call.started_at,
                    &call.finished_at,
                ],
            )
            .await?;
        Ok(())
    }

    /// Commits a step: step row, messages, events, usage and run state in one
    /// transaction. Exactly one commit per (run, step) ever succeeds.
    pub async fn commit_step(&self, commit: &StepCommit) -> Result<CommitResult, StoreError> {
        let run = commit.run_id;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let row = tx
            .q_one(
                "SELECT status, next_step, last_seq, message_count, team_id FROM runs
                 WHERE id = $1 FOR UPDATE",
                &[&run.0],
            )
            .await?;
        let status: RunStatus = row
            .get::<_, String>("status")
            .parse()
            .map_err(StoreError::Corrupt)?;
        let next_step: i32 = row.get("next_step");
        if next_step > commit.step_no {
            let stored = tx
                .q_one(
                    "SELECT outcome FROM run_steps WHERE run_id = $1 AND step_no = $2",
                    &[&run.0, &commit.step_no],
                )
                .await?;
            return Ok(CommitResult::AlreadyCommitted(outcome_from(stored.get(0))?));
        }
        if status.is_terminal() {
            let ended = self.get_run(run).await?.ok_or_else(|| {
                StoreError::Corrupt("run vanished during a step commit".to_owned())
            })?;
            return Ok(CommitResult::RunEnded(StepOutcome::finished(&ended)));
        }
        if next_step != commit.step_no {
            return Err(StoreError::Corrupt(format!(
                "step {} committed while the run expects step {next_step}",
                commit.step_no
            )));
        }
        let outcome = match &commit.terminal {
            None => StepOutcome::next_step(run, commit.step_no + 1),
            Some(terminal) => StepOutcome {
                run_id: run,
                step_no: commit.step_no + 1,
                next: crate::domain::StepNext::Finish,
                status: Some(terminal.reason.status()),
                stop_reason: Some(terminal.reason),
            },
        };
        tx.exec(
            "INSERT INTO run_steps (run_id, step_no, agent, agent_version, attempt, model,
                                    input_tokens, output_tokens, context_trimmed, outcome, started_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            &[
                &run.0,
                &commit.step_no,
                &commit.agent,
                &commit.agent_version,
                &commit.attempt,
                &commit.model,
                &commit.input_tokens,
                &commit.output_tokens,
                &commit.context_trimmed,
                &to_json(&outcome)?,
                &commit.started_at,
            ],
        )
        .await?;
        let message_count: i32 = row.get("message_count");
        let seqs: Vec<i32> = (1..=commit.messages.len() as i32)
            .map(|i| message_count + i)
            .collect();
        let messages = commit
            .messages
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?;
        tx.exec(
            "INSERT INTO run_messages (run_id, seq, step_no, agent, message)
             SELECT $1, s, $3, $4, m FROM unnest($2::int[], $5::jsonb[]) AS t(s, m)",
            &[&run.0, &seqs, &commit.step_no, &commit.agent, &messages],
        )
        .await?;
        let (active_agent, active_version) = commit.handoff_to.clone().unwrap_or_default();
        let terminal = commit.terminal.as_ref();
        let updated = tx
            .q_one(
                &format!(
                    "UPDATE runs SET
                         next_step = $2,
                         input_tokens = input_tokens + $3,
                         output_tokens = output_tokens + $4,
                         llm_calls = llm_calls + 1,
                         message_count = message_count + $5,
                         active_agent = CASE WHEN $6 = '' THEN active_agent ELSE $6 END,
                         active_version = CASE WHEN $6 = '' THEN active_version ELSE $7 END,
                         handoff_depth = handoff_depth + CASE WHEN $6 = '' THEN 0 ELSE 1 END,
                         repairs_used = $8,
                         status = coalesce($9, status),
                         stop_reason = coalesce($10, stop_reason),
                         stop_detail = coalesce($11, stop_detail),
                         output = coalesce($12, output),
                         raw_output = coalesce($13, raw_output),
                         finished_at = CASE WHEN $9::text IS NULL THEN finished_at ELSE now() END
                     WHERE id = $1 RETURNING {}",
                    super::runs::RUN_COLUMNS
                ),
                &[
                    &run.0,
                    &(commit.step_no + 1),
                    &commit.input_tokens,
                    &commit.output_tokens,
                    &(commit.messages.len() as i32),
                    &active_agent,
                    &active_version,
                    &commit.repairs_used,
                    &terminal.map(|t| t.reason.status().as_str()),
                    &terminal.map(|t| t.reason.as_str()),
                    &terminal.and_then(|t| t.detail.clone()),
                    &terminal.and_then(|t| t.output.clone()),
                    &terminal.and_then(|t| t.raw_output.clone()),
                ],
            )
            .await?;
        let updated = run_from_row(&updated)?;
        let mut events = commit.events.clone();
        if terminal.is_some() {
            events.push(terminal_event(&updated, Some(commit.step_no)));
        }
        let last_seq = append_events(&tx, run, row.get("last_seq"), &events).await?;
        tx.exec(
            "INSERT INTO usage_daily (team_id, day, llm_calls, input_tokens, output_tokens)
             VALUES ($1, CURRENT_DATE, 1, $2, $3)
             ON CONFLICT (team_id, day) DO UPDATE SET
                 llm_calls = usage_daily.llm_calls + 1,
                 input_tokens = usage_daily.input_tokens + EXCLUDED.input_tokens,
                 output_tokens = usage_daily.output_tokens + EXCLUDED.output_tokens",
            &[
                &row.get::<_, uuid::Uuid>("team_id"),
                &commit.input_tokens,
                &commit.output_tokens,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(CommitResult::Committed { outcome, last_seq })
    }

    /// A run's committed steps with their tool calls.
    pub async fn steps(&self, run: RunId) -> Result<Vec<StepRecord>, StoreError> {
        let client = self.client().await?;
        let steps = client
            .q(
                "SELECT * FROM run_steps WHERE run_id = $1 ORDER BY step_no",
                &[&run.0],
            )
            .await?;
        let calls = client
            .q(
                "SELECT * FROM tool_calls WHERE run_id = $1 ORDER BY step_no, call_index",
                &[&run.0],
            )
            .await?;
        Ok(steps
            .iter()
            .map(|row| {
                let step_no: i32 = row.get("step_no");
                StepRecord {
                    step_no,
                    agent: row.get("agent"),
                    agent_version: row.get("agent_version"),
                    attempt: row.get("attempt"),
                    model: row.get("model"),
                    input_tokens: row.get("input_tokens"),
                    output_tokens: row.get("output_tokens"),
                    context_trimmed: row.get("context_trimmed"),
                    outcome: row.get("outcome"),
                    started_at: row.get("started_at"),
                    finished_at: row.get("finished_at"),
                    tool_calls: calls
                        .iter()
                        .filter(|c| c.get::<_, i32>("step_no") == step_no)
                        .map(tool_call_from_row)
                        .collect(),
                }
            })
            .collect())
    }
}
