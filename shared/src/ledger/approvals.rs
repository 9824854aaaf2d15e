//! Approval requests and their answers. Each change locks the run's row
//! first, so a park, an answer, a kept task token and a cancel are
//! serialized: whichever comes second sees what the first did.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use tokio_postgres::Row;
use uuid::Uuid;

use super::conn::Tx;
use super::events::append_events;
use super::runs::{run_from_row, RUN_COLUMNS};
use super::{Ledger, StoreError};
use crate::domain::{
    Approval, ApprovalAnswer, ApprovalKind, ApprovalStatus, EventType, NewEvent, Run, RunId,
    RunStatus, TeamId,
};

/// A call about to wait for approval.
#[derive(Clone, Debug)]
pub struct ApprovalRequest {
    pub request_id: Uuid,
    pub call_index: i32,
    pub kind: ApprovalKind,
    pub name: String,
    pub arguments: Value,
}

/// What answering a request came to.
#[derive(Clone, Debug, PartialEq)]
pub enum Answered {
    /// Recorded. With `resume`, it was the step's last open request: the
    /// run may go on (with the state machine's task token, when kept).
    Recorded {
        approval: Approval,
        resume: Option<Resume>,
        last_seq: i64,
    },
    RunNotFound,
    RequestNotFound,
    /// Answered before; the answer given then. With `resume`, the run still
    /// waits at that step with every request answered (an earlier answer's
    /// resume did not go through): it may go on now.
    AlreadyAnswered {
        approval: Approval,
        resume: Option<Resume>,
    },
    /// Past `expires_at`: the run is ending `approval_timeout`.
    Expired(Approval),
    /// The run ended first (a cancel, its deadline).
    RunEnded(RunStatus),
}

/// A waiting run whose requests are all answered.
#[derive(Clone, Debug, PartialEq)]
pub struct Resume {
    pub run: RunId,
    pub step_no: i32,
    pub wait_token: Option<String>,
}

/// What keeping a wait's task token found.
#[derive(Clone, Debug, PartialEq)]
pub enum WaitToken {
    /// Kept; `answered`: every request was answered already (the keeper
    /// resumes the execution itself).
    Kept { answered: bool },
    /// The run no longer waits at that step.
    NotWaiting,
}

fn approval_from_row(row: &Row) -> Result<Approval, StoreError> {
    let corrupt = |e: String| StoreError::Corrupt(format!("approval: {e}"));
    let kind: String = row.get("kind");
    let status: String = row.get("status");
    Ok(Approval {
        request_id: row.get("id"),
        run_id: RunId(row.get("run_id")),
        step_no: row.get("step_no"),
        call_index: row.get("call_index"),
        kind: match kind.as_str() {
            "handoff" => ApprovalKind::Handoff,
            _ => ApprovalKind::Tool,
        },
        name: row.get("name"),
        arguments: row.get("arguments"),
        status: status.parse().map_err(corrupt)?,
        comment: row.get("comment"),
        approved_arguments: row.get("approved_arguments"),
        requested_at: row.get("requested_at"),
        expires_at: row.get("expires_at"),
        answered_at: row.get("answered_at"),
    })
}

const APPROVAL_COLUMNS: &str = "id, run_id, step_no, call_index, kind, name, arguments, status,
    comment, approved_arguments, requested_at, expires_at, answered_at";

/// The run's row, locked: (status, next_step, last_seq, wait_token).
async fn lock_run(
    tx: &Tx<'_>,
    run: RunId,
    team: Option<TeamId>,
) -> Result<Option<(RunStatus, i32, i64, Option<String>)>, StoreError> {
    let row = tx
        .q_opt(
            "SELECT status, next_step, last_seq, wait_token FROM runs
             WHERE id = $1 AND ($2::uuid IS NULL OR team_id = $2) FOR UPDATE",
            &[&run.0, &team.map(|t| t.0)],
        )
        .await?;
    row.map(|row| {
        let status: String = row.get(0);
        Ok((
            status.parse().map_err(StoreError::Corrupt)?,
            row.get(1),
            row.get(2),
            row.get(3),
        ))
    })
    .transpose()
}

async fn open_requests(tx: &Tx<'_>, run: RunId, step_no: i32) -> Result<i64, StoreError> {
    Ok(tx
        .q_one(
            "SELECT count(*) FROM approvals WHERE run_id = $1 AND step_no = $2 AND status = 'pending'",
            &[&run.0, &step_no],
        )
        .await?
        .get(0))
}

impl Ledger {
    /// Parks a running run at `step_no` for `requests`: the requests, the
    /// status `waiting`, their events and (when the run has a webhook) an
    /// `approval.requested` delivery, in one transaction. `None` when the
    /// run no longer runs that step.
    pub async fn park_for_approval(
        &self,
        run: RunId,
        step_no: i32,
        requests: &[ApprovalRequest],
        expires_at: DateTime<Utc>,
        events: &[NewEvent],
    ) -> Result<Option<i64>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some((status, next_step, last_seq, _)) = lock_run(&tx, run, None).await? else {
            return Ok(None);
        };
        if status != RunStatus::Running || next_step != step_no {
            return Ok(None);
        }
        let rows: Vec<Value> = requests
            .iter()
            .map(|r| {
                json!({
                    "id": r.request_id,
                    "call_index": r.call_index,
                    "kind": r.kind.as_str(),
                    "name": r.name,
                    "arguments": r.arguments,
                })
            })
            .collect();
        tx.exec(
            "INSERT INTO approvals (id, run_id, step_no, call_index, kind, name, arguments, expires_at)
             SELECT x.id, $1, $2, x.call_index, x.kind, x.name, x.arguments, $4
             FROM jsonb_to_recordset($3::jsonb) AS x(id uuid, call_index int, kind text, name text, arguments jsonb)
             ON CONFLICT (run_id, step_no, call_index) DO NOTHING",
            &[&run.0, &step_no, &Value::Array(rows), &expires_at],
        )
        .await?;
        tx.exec(
            "WITH r AS (UPDATE runs SET status = 'waiting', wait_token = NULL WHERE id = $1
                        RETURNING team_id, webhook)
             INSERT INTO webhook_deliveries (id, run_id, team_id, event)
             SELECT md5($1::uuid::text || ':approval:' || $2::int::text)::uuid, $1, r.team_id, 'approval.requested'
             FROM r WHERE r.webhook IS NOT NULL
             ON CONFLICT (id) DO NOTHING",
            &[&run.0, &step_no],
        )
        .await?;
        let last_seq = append_events(&tx, run, last_seq, events).await?;
        tx.commit().await?;
        Ok(Some(last_seq))
    }

    /// A step's requests, by call.
    pub async fn step_approvals(
        &self,
        run: RunId,
        step_no: i32,
    ) -> Result<Vec<Approval>, StoreError> {
        self.client()
            .await?
            .q(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1 AND step_no = $2
                     ORDER BY call_index"
                ),
                &[&run.0, &step_no],
            )
            .await?
            .iter()
            .map(approval_from_row)
            .collect()
    }

    /// Every request of a run, oldest first.
    pub async fn run_approvals(&self, run: RunId) -> Result<Vec<Approval>, StoreError> {
        self.client()
            .await?
            .q(
                &format!(
                    "SELECT {APPROVAL_COLUMNS} FROM approvals WHERE run_id = $1
                     ORDER BY step_no, call_index"
                ),
                &[&run.0],
            )
            .await?
            .iter()
            .map(approval_from_row)
            .collect()
    }

    /// Records `team`'s answer to a request of its run, once, with its
    /// `approval.answered` event.
    pub async fn answer_approval(
        &self,
        team: TeamId,
        run: RunId,
        request_id: Uuid,
        answer: &ApprovalAnswer,
    ) -> Result<Answered, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some((status, next_step, last_seq, wait_token)) =
            lock_run(&tx, run, Some(team)).await?
        else {
            return Ok(Answered::RunNotFound);
        };
        let Some(row) = tx
            .q_opt(
                &format!(
                    "SELECT {APPROVAL_COLUMNS}, expires_at <= now() AS expired
                     FROM approvals WHERE id = $1 AND run_id = $2"
                ),
                &[&request_id, &run.0],
            )
            .await?
        else {
            return Ok(Answered::RequestNotFound);
        };
        let approval = approval_from_row(&row)?;
        if approval.status != ApprovalStatus::Pending {
            let waits_here = status == RunStatus::Waiting && approval.step_no == next_step;
            let resume = (waits_here && open_requests(&tx, run, approval.step_no).await? == 0)
                .then_some(Resume {
                    run,
                    step_no: approval.step_no,
                    wait_token,
                });
            return Ok(Answered::AlreadyAnswered { approval, resume });
        }
        if status.is_terminal() {
            return Ok(Answered::RunEnded(status));
        }
        if row.get::<_, bool>("expired") {
            return Ok(Answered::Expired(approval));
        }
        let answered = if answer.approve {
            ApprovalStatus::Approved
        } else {
            ApprovalStatus::Rejected
        };
        let arguments = answer.arguments.as_ref().filter(|_| answer.approve);
        let row = tx
            .q_one(
                &format!(
                    "UPDATE approvals SET status = $2, comment = $3, approved_arguments = $4,
                         answered_at = now()
                     WHERE id = $1 RETURNING {APPROVAL_COLUMNS}"
                ),
                &[&request_id, &answered.as_str(), &answer.comment, &arguments],
            )
            .await?;
        let approval = approval_from_row(&row)?;
        let mut data = json!({
            "request_id": approval.request_id,
            "call_index": approval.call_index,
            "name": approval.name,
            "approved": answer.approve,
            "arguments_changed": arguments.is_some(),
        });
        if let Some(comment) = &answer.comment {
            data["comment"] = json!(comment);
        }
        let event = NewEvent::new(EventType::ApprovalAnswered, Some(approval.step_no), data);
        let last_seq = append_events(&tx, run, last_seq, &[event]).await?;
        let resume = (open_requests(&tx, run, approval.step_no).await? == 0).then_some(Resume {
            run,
            step_no: approval.step_no,
            wait_token,
        });
        tx.commit().await?;
        Ok(Answered::Recorded {
            approval,
            resume,
            last_seq,
        })
    }

    /// Keeps the state machine's task token of a run waiting at `step_no`.
    pub async fn keep_wait_token(
        &self,
        run: RunId,
        step_no: i32,
        token: &str,
    ) -> Result<WaitToken, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let Some((status, next_step, _, _)) = lock_run(&tx, run, None).await? else {
            return Ok(WaitToken::NotWaiting);
        };
        if status != RunStatus::Waiting || next_step != step_no {
            return Ok(WaitToken::NotWaiting);
        }
        tx.exec(
            "UPDATE runs SET wait_token = $2 WHERE id = $1",
            &[&run.0, &token],
        )
        .await?;
        let answered = open_requests(&tx, run, step_no).await? == 0;
        tx.commit().await?;
        Ok(WaitToken::Kept { answered })
    }

    /// Moves a waiting run whose requests at `step_no` are all answered
    /// back to `running` (event `run.resumed`); the run as it now is, or
    /// `None` when it does not wait so.
    pub async fn resume_from_wait(
        &self,
        run: RunId,
        step_no: i32,
    ) -> Result<Option<Run>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                &format!(
                    "WITH r AS (
                         UPDATE runs SET status = 'running', wait_token = NULL, last_seq = last_seq + 1
                         WHERE id = $1 AND status = 'waiting' AND next_step = $2
                           AND NOT EXISTS (SELECT 1 FROM approvals
                                           WHERE run_id = $1 AND step_no = $2 AND status = 'pending')
                         RETURNING {RUN_COLUMNS}),
                     e AS (
                         INSERT INTO run_events (run_id, seq, type, step_no, data)
                         SELECT $1, r.last_seq, $3, $2, '{{}}'::jsonb FROM r)
                     SELECT * FROM r"
                ),
                &[&run.0, &step_no, &EventType::RunResumed.as_str()],
            )
            .await?;
        row.map(|row| run_from_row(&row)).transpose()
    }
}
