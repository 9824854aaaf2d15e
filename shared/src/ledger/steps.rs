//! Steps: the per-attempt records that make retries repeat nothing, and the
//! one transaction that commits a step.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::runs::{run_from_row, RUN_COLUMNS};
use super::{Ledger, StoreError};
use crate::domain::{ChatMessage, NewEvent, Run, RunId, StepNext, StepOutcome, Terminal};

/// How an LLM call's tokens are added to the run's usage by model, priced
/// at the model's price: the body of a CTE after `r` (the run's update),
/// given the parameters that hold the model and the input and output
/// tokens (`$1` is the run).
macro_rules! usage_upsert {
    ($model:literal, $input:literal, $output:literal) => {
        concat!(
            "INSERT INTO run_usage (run_id, model, input_tokens, output_tokens, cost_exact)
                     SELECT $1, ",
            $model,
            ", ",
            $input,
            ", ",
            $output,
            ",
                            ",
            $input,
            " * coalesce(p.input_micros_per_mtok, 0) + ",
            $output,
            " * coalesce(p.output_micros_per_mtok, 0)
                     FROM r LEFT JOIN model_prices p ON p.model = ",
            $model,
            "
                     ON CONFLICT (run_id, model) DO UPDATE SET
                         input_tokens = run_usage.input_tokens + EXCLUDED.input_tokens,
                         output_tokens = run_usage.output_tokens + EXCLUDED.output_tokens,
                         cost_exact = run_usage.cost_exact + EXCLUDED.cost_exact"
        )
    };
}

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

/// What a step starts from (see `Ledger::step_context`).
#[derive(Clone, Debug)]
pub struct StepContext {
    pub run: Run,
    pub committed: Option<StepOutcome>,
    pub daily_token_budget: u64,
    /// Why an operator switched the team or the active agent off.
    pub switched_off: Option<String>,
    /// Messages of the conversation so far.
    pub message_count: i64,
    /// Attempts begun at this step so far, if any.
    pub attempts: Option<i32>,
    /// Tokens of the step before, when it is committed (its reservation is
    /// settled as this step reserves).
    pub previous_tokens: Option<i64>,
    /// An earlier attempt kept this step's LLM turn: no call is made.
    pub turn_kept: bool,
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
    /// The response was longer than the tool's cap; `result` is its start.
    pub truncated: bool,
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
    /// Every event of the step, the terminal one included, in order.
    pub events: Vec<NewEvent>,
    /// The step's tool calls; those already kept by `save_tool_call` stay as they are.
    pub tool_calls: Vec<ToolCallRecord>,
    /// The agent active after this step, when a handoff changed it.
    pub handoff_to: Option<(String, i32)>,
    pub repairs_used: i32,
    pub terminal: Option<Terminal>,
    /// The terminal answer came from the final turn without tools.
    pub wound_down: bool,
    /// The next step's first attempt begins with this commit (its
    /// `step.started`): for a driver that runs it right after.
    pub begin_next: bool,
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

/// A committed step with its tool calls (`api::views::StepView` shows it,
/// with each call's result cut to the listing's bound).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct StepRecord {
    pub step_no: i32,
    pub agent: String,
    pub agent_version: i32,
    pub attempt: i32,
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub context_trimmed: i32,
    /// What the step decided (`tools`, `handoff`, `final`, ...).
    #[schema(value_type = Object)]
    pub outcome: Value,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    #[serde(skip)]
    #[schema(ignore)]
    pub tool_calls: Vec<ToolCallRecord>,
}

/// Event types and data as parallel arrays, for `unnest`.
fn event_columns(events: &[NewEvent]) -> (Vec<&'static str>, Vec<&Value>) {
    events.iter().map(|e| (e.kind.as_str(), &e.data)).unzip()
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
        truncated: row.get("truncated"),
        attempts: row.get("attempts"),
        started_at: row.get("started_at"),
        finished_at: row.get("finished_at"),
    }
}

/// Adds the LLM turn an earlier attempt kept for the run's current step,
/// never committed, to the run's usage and cost: the run ends (a cancel, a
/// timeout, an unanswered approval) before that step could commit it, and
/// the call was made all the same.
pub(super) async fn bill_kept_turn(tx: &super::Tx<'_>, run: RunId) -> Result<(), StoreError> {
    tx.exec(
        "WITH t AS (
             SELECT t.model, t.input_tokens, t.output_tokens
             FROM runs r JOIN step_llm_turns t ON t.run_id = r.id AND t.step_no = r.next_step
             WHERE r.id = $1
               AND NOT EXISTS (SELECT 1 FROM run_steps s WHERE s.run_id = $1 AND s.step_no = r.next_step)),
         r AS (
             UPDATE runs SET input_tokens = runs.input_tokens + t.input_tokens,
                             output_tokens = runs.output_tokens + t.output_tokens,
                             llm_calls = runs.llm_calls + 1
             FROM t WHERE runs.id = $1 RETURNING runs.id)
         INSERT INTO run_usage (run_id, model, input_tokens, output_tokens, cost_exact)
         SELECT $1, t.model, t.input_tokens, t.output_tokens,
                t.input_tokens * coalesce(p.input_micros_per_mtok, 0)
                    + t.output_tokens * coalesce(p.output_micros_per_mtok, 0)
         FROM t JOIN r ON true LEFT JOIN model_prices p ON p.model = t.model
         ON CONFLICT (run_id, model) DO UPDATE SET
             input_tokens = run_usage.input_tokens + EXCLUDED.input_tokens,
             output_tokens = run_usage.output_tokens + EXCLUDED.output_tokens,
             cost_exact = run_usage.cost_exact + EXCLUDED.cost_exact",
        &[&run.0],
    )
    .await?;
    Ok(())
}

impl Ledger {
    /// Tokens a committed step used.
    pub async fn step_tokens(&self, run: RunId, step_no: i32) -> Result<Option<i64>, StoreError> {
        Ok(self
            .client()
            .await?
            .q_opt(
                "SELECT input_tokens + output_tokens FROM run_steps WHERE run_id = $1 AND step_no = $2",
                &[&run.0, &step_no],
            )
            .await?
            .map(|row| row.get(0)))
    }

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

    /// What a step starts from, in one read: the run, the step's stored
    /// outcome if it is committed, and the team's switches and budget.
    pub async fn step_context(
        &self,
        run: RunId,
        step_no: i32,
    ) -> Result<Option<StepContext>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                &format!(
                    "SELECT {RUN_COLUMNS},
                         (SELECT outcome FROM run_steps WHERE run_id = $1 AND step_no = $2) AS committed,
                         (SELECT daily_token_budget FROM teams WHERE id = runs.team_id) AS daily_token_budget,
                         (SELECT 'the team was switched off by an operator: ' || disabled_reason
                          FROM teams WHERE id = runs.team_id AND disabled_reason IS NOT NULL) AS team_off,
                         (SELECT 'agent ' || agent || ' was switched off by an operator: ' || disabled_reason
                          FROM agent_switches WHERE team_id = runs.team_id AND agent = runs.active_agent) AS agent_off,
                         message_count::bigint AS message_count,
                         CASE WHEN attempt_step = $2 THEN step_attempts END AS attempts,
                         (SELECT input_tokens + output_tokens FROM run_steps
                          WHERE run_id = $1 AND step_no = $2 - 1) AS previous_tokens,
                         EXISTS (SELECT 1 FROM step_llm_turns
                                 WHERE run_id = $1 AND step_no = $2) AS turn_kept
                     FROM runs WHERE id = $1"
                ),
                &[&run.0, &step_no],
            )
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let committed = row
            .get::<_, Option<Value>>("committed")
            .map(outcome_from)
            .transpose()?;
        Ok(Some(StepContext {
            run: run_from_row(&row)?,
            committed,
            daily_token_budget: row.get::<_, i64>("daily_token_budget").max(0) as u64,
            switched_off: row
                .get::<_, Option<String>>("team_off")
                .or(row.get("agent_off")),
            message_count: row.get("message_count"),
            attempts: row.get("attempts"),
            previous_tokens: row.get("previous_tokens"),
            turn_kept: row.get("turn_kept"),
        }))
    }

    /// Records the start of an attempt at a step (event `step.started`) and
    /// returns its attempt number and seq, or `None` when the run is no
    /// longer running or the step is already committed. One statement: the
    /// run row update is the lock that keeps `seq` gap-free.
    pub async fn begin_step_attempt(
        &self,
        run: RunId,
        step_no: i32,
        agent: &str,
    ) -> Result<Option<(i32, i64)>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                "WITH r AS (
                     UPDATE runs SET
                         last_seq = last_seq + 1,
                         step_attempts = CASE WHEN attempt_step = $2 THEN step_attempts + 1 ELSE 1 END,
                         attempt_step = $2
                     WHERE id = $1 AND status = 'running' AND next_step = $2
                     RETURNING last_seq, step_attempts)
                 INSERT INTO run_events (run_id, seq, type, step_no, data)
                 SELECT $1, r.last_seq, 'step.started', $2,
                        jsonb_build_object('step_no', $2::int, 'agent', $3::text, 'attempt', r.step_attempts)
                 FROM r
                 RETURNING seq, (data->>'attempt')::int",
                &[&run.0, &step_no, &agent],
            )
            .await?;
        Ok(row.map(|row| (row.get(1), row.get(0))))
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
    /// starts) in one statement, so those are written exactly once per step.
    /// When another attempt stored a turn first, that one wins and is
    /// returned instead (with no events written).
    pub async fn save_llm_turn(
        &self,
        run: RunId,
        step_no: i32,
        turn: &LlmTurn,
        events: &[NewEvent],
    ) -> Result<(LlmTurn, Option<i64>), StoreError> {
        let message = to_json(&turn.message)?;
        let (types, data) = event_columns(events);
        let rows = self
            .client()
            .await?
            .q(
                "WITH t AS (
                     INSERT INTO step_llm_turns
                         (run_id, step_no, agent, model, message, input_tokens, output_tokens, context_trimmed)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING RETURNING run_id),
                 r AS (
                     UPDATE runs SET last_seq = last_seq + cardinality($9::text[])
                     WHERE id = $1 AND status = 'running' AND EXISTS (SELECT 1 FROM t)
                     RETURNING last_seq)
                 INSERT INTO run_events (run_id, seq, type, step_no, data)
                 SELECT $1, r.last_seq - cardinality($9::text[]) + e.ord, e.type, $2, e.data
                 FROM r, unnest($9::text[], $10::jsonb[]) WITH ORDINALITY AS e(type, data, ord)
                 RETURNING seq",
                &[
                    &run.0,
                    &step_no,
                    &turn.agent,
                    &turn.model,
                    &message,
                    &turn.input_tokens,
                    &turn.output_tokens,
                    &turn.context_trimmed,
                    &types,
                    &data,
                ],
            )
            .await?;
        if let Some(last) = rows.iter().map(|row| row.get::<_, i64>(0)).max() {
            return Ok((turn.clone(), Some(last)));
        }
        let stored = self
            .llm_turn(run, step_no)
            .await?
            .unwrap_or_else(|| turn.clone());
        Ok((stored, None))
    }

    /// Keeps a summary made by step `step_no` as the conversation's next
    /// message (none for a summary not kept), with its call's tokens on the
    /// run (and their cost) and its event — unless the conversation has
    /// moved past `message_count` messages or the run is no longer at that
    /// step (`None`).
    #[allow(clippy::too_many_arguments)]
    pub async fn save_summary(
        &self,
        run: RunId,
        step_no: i32,
        agent: &str,
        summary: Option<&ChatMessage>,
        message_count: i32,
        model: &str,
        tokens: (i64, i64),
        event: &NewEvent,
    ) -> Result<Option<i64>, StoreError> {
        let message = summary.map(to_json).transpose()?;
        let (types, data) = event_columns(std::slice::from_ref(event));
        let rows = self
            .client()
            .await?
            .q(
                concat!(
                    "WITH r AS (
                     UPDATE runs SET
                         input_tokens = input_tokens + $4,
                         output_tokens = output_tokens + $5,
                         llm_calls = llm_calls + 1,
                         message_count = message_count + CASE WHEN $8::jsonb IS NULL THEN 0 ELSE 1 END,
                         last_seq = last_seq + 1
                     WHERE id = $1 AND status = 'running' AND next_step = $2 AND message_count = $6
                     RETURNING last_seq, message_count),
                 m AS (
                     INSERT INTO run_messages (run_id, seq, step_no, agent, message)
                     SELECT $1, r.message_count, $2, $7, $8 FROM r WHERE $8::jsonb IS NOT NULL),
                 u AS (", usage_upsert!("$3", "$4", "$5"), ")
                 INSERT INTO run_events (run_id, seq, type, step_no, data)
                 SELECT $1, r.last_seq, e.type, $2, e.data
                 FROM r, unnest($9::text[], $10::jsonb[]) AS e(type, data)
                 RETURNING seq"
                ),
                &[
                    &run.0,
                    &step_no,
                    &model,
                    &tokens.0,
                    &tokens.1,
                    &message_count,
                    &agent,
                    &message,
                    &types,
                    &data,
                ],
            )
            .await?;
        Ok(rows.first().map(|row| row.get::<_, i64>(0)))
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
                                         result, is_error, attempts, started_at, finished_at, truncated)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) ON CONFLICT DO NOTHING",
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
                    &call.truncated,
                ],
            )
            .await?;
        Ok(())
    }

    /// Commits a step — step row, messages, tool calls, usage and cost,
    /// events and run state — in one
    /// statement guarded by `status = 'running' AND next_step = step_no`, so
    /// exactly one commit per (run, step) ever succeeds.
    pub async fn commit_step(&self, commit: &StepCommit) -> Result<CommitResult, StoreError> {
        let run = commit.run_id;
        let messages = commit
            .messages
            .iter()
            .map(to_json)
            .collect::<Result<Vec<_>, _>>()?;
        let mut events = commit.events.clone();
        let mut event_steps = vec![commit.step_no; events.len()];
        if commit.begin_next {
            let next_agent = commit
                .handoff_to
                .as_ref()
                .map_or(commit.agent.as_str(), |(name, _)| name.as_str());
            events.push(NewEvent::new(
                crate::domain::EventType::StepStarted,
                Some(commit.step_no + 1),
                serde_json::json!({"step_no": commit.step_no + 1, "agent": next_agent, "attempt": 1}),
            ));
            event_steps.push(commit.step_no + 1);
        }
        let (types, data) = event_columns(&events);
        let outcome = match &commit.terminal {
            None => StepOutcome::next_step(run, commit.step_no + 1),
            Some(terminal) => StepOutcome {
                run_id: run,
                step_no: commit.step_no + 1,
                next: StepNext::Finish,
                status: Some(terminal.reason.status()),
                stop_reason: Some(terminal.reason),
                wait_seconds: None,
            },
        };
        let (active_agent, active_version) = commit.handoff_to.clone().unwrap_or_default();
        let terminal = commit.terminal.as_ref();
        let rows = self
            .client()
            .await?
            .q(
                concat!(
                    "WITH r AS (
                     UPDATE runs SET
                         next_step = $2 + 1,
                         input_tokens = input_tokens + $3,
                         output_tokens = output_tokens + $4,
                         llm_calls = llm_calls + 1,
                         message_count = message_count + cardinality($5::jsonb[]),
                         last_seq = last_seq + cardinality($6::text[]),
                         active_agent = CASE WHEN $7 = '' THEN active_agent ELSE $7 END,
                         active_version = CASE WHEN $7 = '' THEN active_version ELSE $8 END,
                         handoff_depth = handoff_depth + CASE WHEN $7 = '' THEN 0 ELSE 1 END,
                         repairs_used = $9,
                         status = coalesce($10, status),
                         stop_reason = coalesce($11, stop_reason),
                         stop_detail = coalesce($12, stop_detail),
                         output = coalesce($13, output),
                         raw_output = coalesce($14, raw_output),
                         finished_at = CASE WHEN $10::text IS NULL THEN finished_at ELSE now() END,
                         wound_down = wound_down OR $26,
                         attempt_step = CASE WHEN $25 THEN $2 + 1 ELSE attempt_step END,
                         step_attempts = CASE WHEN $25 THEN 1 ELSE step_attempts END
                     WHERE id = $1 AND status = 'running' AND next_step = $2
                     RETURNING last_seq, message_count),
                 s AS (
                     INSERT INTO run_steps (run_id, step_no, agent, agent_version, attempt, model,
                                            input_tokens, output_tokens, context_trimmed, outcome, started_at)
                     SELECT $1, $2, $15, $16, $17, $18, $3, $4, $19, $20, $21 FROM r),
                 m AS (
                     INSERT INTO run_messages (run_id, seq, step_no, agent, message)
                     SELECT $1, r.message_count - cardinality($5::jsonb[]) + t.ord, $2, $15, t.message
                     FROM r, unnest($5::jsonb[]) WITH ORDINALITY AS t(message, ord)),
                 c AS (
                     INSERT INTO tool_calls (run_id, step_no, call_index, tool_call_id, name, arguments,
                                             result, is_error, truncated, attempts, started_at, finished_at)
                     SELECT $1, $2, x.* FROM r, jsonb_to_recordset($23::jsonb) AS x(
                         call_index int, tool_call_id text, name text, arguments jsonb, result text,
                         is_error boolean, truncated boolean, attempts int, started_at timestamptz,
                         finished_at timestamptz)
                     ON CONFLICT DO NOTHING),
                 u AS (", usage_upsert!("$18", "$3", "$4"), ")
                 INSERT INTO run_events (run_id, seq, type, step_no, data)
                 SELECT $1, r.last_seq - cardinality($6::text[]) + e.ord, e.type, e.step_no, e.data
                 FROM r, unnest($6::text[], $22::jsonb[], $24::int[]) WITH ORDINALITY AS e(type, data, step_no, ord)
                 RETURNING seq"
                ),
                &[
                    &run.0,
                    &commit.step_no,
                    &commit.input_tokens,
                    &commit.output_tokens,
                    &messages,
                    &types,
                    &active_agent,
                    &active_version,
                    &commit.repairs_used,
                    &terminal.map(|t| t.reason.status().as_str()),
                    &terminal.map(|t| t.reason.as_str()),
                    &terminal.and_then(|t| t.detail.clone()),
                    &terminal.and_then(|t| t.output.clone()),
                    &terminal.and_then(|t| t.raw_output.clone()),
                    &commit.agent,
                    &commit.agent_version,
                    &commit.attempt,
                    &commit.model,
                    &commit.context_trimmed,
                    &to_json(&outcome)?,
                    &commit.started_at,
                    &data,
                    &to_json(&commit.tool_calls)?,
                    &event_steps,
                    &commit.begin_next,
                    &commit.wound_down,
                ],
            )
            .await?;
        if let Some(last_seq) = rows.iter().map(|row| row.get::<_, i64>(0)).max() {
            return Ok(CommitResult::Committed { outcome, last_seq });
        }
        // Nothing written: the step was committed by another attempt, or the run ended.
        if let Some(stored) = self.step_outcome(run, commit.step_no).await? {
            return Ok(CommitResult::AlreadyCommitted(stored));
        }
        let current = self
            .get_run(run)
            .await?
            .ok_or_else(|| StoreError::Corrupt("run vanished during a step commit".to_owned()))?;
        if current.status.is_terminal() {
            return Ok(CommitResult::RunEnded(StepOutcome::finished(&current)));
        }
        Err(StoreError::Corrupt(format!(
            "step {} committed while the run expects step {}",
            commit.step_no, current.next_step
        )))
    }

    /// A run's committed steps with their tool calls.
    pub async fn steps(
        &self,
        run: RunId,
        after_step: i32,
        limit: i64,
    ) -> Result<Vec<StepRecord>, StoreError> {
        let client = self.client().await?;
        let steps = client
            .q(
                "SELECT * FROM run_steps WHERE run_id = $1 AND step_no > $2
                 ORDER BY step_no LIMIT $3",
                &[&run.0, &after_step, &limit],
            )
            .await?;
        let last_step: i32 = steps.last().map(|r| r.get("step_no")).unwrap_or(after_step);
        let calls = client
            .q(
                "SELECT * FROM tool_calls WHERE run_id = $1 AND step_no > $2 AND step_no <= $3
                 ORDER BY step_no, call_index",
                &[&run.0, &after_step, &last_step],
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
