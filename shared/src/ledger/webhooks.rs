//! The webhook outbox. A delivery is queued by the very update that ends a
//! run (a trigger, `V8__webhooks.sql`); deliverers claim due deliveries
//! with a lease, so one that dies mid-attempt leaves its delivery due again,
//! and every attempt is kept.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Ledger, StoreError};
use crate::domain::RunId;
use crate::secret::Secret;

/// A delivery claimed for one attempt.
#[derive(Clone, Debug)]
pub struct DueDelivery {
    pub id: Uuid,
    pub run_id: RunId,
    /// The run's terminal event (`run.succeeded`, ...) or `approval.requested`.
    pub event: String,
    /// This attempt's number, from 1.
    pub attempt: i32,
    pub created_at: DateTime<Utc>,
    pub url: String,
    pub secret: Secret,
}

/// How an attempt ended, and what becomes of its delivery.
#[derive(Clone, Debug, PartialEq)]
pub enum AttemptOutcome {
    /// The receiver answered 2xx.
    Delivered { status_code: i32 },
    /// It did not; the delivery is tried again at `retry_at`, or given up.
    Failed {
        status_code: Option<i32>,
        error: String,
        retry_at: Option<DateTime<Utc>>,
    },
}

/// One attempt, as `GET /v1/runs/{id}/webhooks` shows it.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct AttemptRecord {
    #[schema(minimum = 1)]
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// `None` while it runs, or when the deliverer died during it.
    pub finished_at: Option<DateTime<Utc>>,
    /// The receiver's answer; `None` when none came.
    pub status_code: Option<i32>,
    pub error: Option<String>,
}

/// A run's delivery with its attempts.
#[derive(Clone, Debug, serde::Serialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// Also `X-Agentrun-Delivery` and the body's `id`: the same on every attempt.
    pub id: Uuid,
    #[schema(value_type = String, pattern = "^(run\\.(succeeded|failed|cancelled|timed_out)|approval\\.requested)$")]
    pub event: String,
    pub url: String,
    /// `pending`, `delivered` or `failed` (given up).
    #[schema(pattern = "^(pending|delivered|failed)$")]
    pub status: String,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub attempts: Vec<AttemptRecord>,
}

fn due_from_row(row: &Row) -> DueDelivery {
    DueDelivery {
        id: row.get("id"),
        run_id: RunId(row.get("run_id")),
        event: row.get("event"),
        attempt: row.get("attempts"),
        created_at: row.get("created_at"),
        url: row.get::<_, Option<String>>("url").unwrap_or_default(),
        secret: Secret::new(row.get::<_, Option<String>>("secret").unwrap_or_default()),
    }
}

impl Ledger {
    /// Claims up to `limit` due deliveries (of one run, or any) and begins
    /// an attempt of each, in one statement. The claim holds for `lease`.
    pub async fn claim_webhook_deliveries(
        &self,
        run: Option<RunId>,
        limit: i64,
        lease: Duration,
    ) -> Result<Vec<DueDelivery>, StoreError> {
        let run = run.map(|r| r.0);
        let rows = self
            .client()
            .await?
            .q(
                "WITH due AS (
                     SELECT id FROM webhook_deliveries
                     WHERE status = 'pending' AND next_attempt_at <= now()
                       AND ($1::uuid IS NULL OR run_id = $1)
                     ORDER BY next_attempt_at LIMIT $2
                     FOR UPDATE SKIP LOCKED),
                 claimed AS (
                     UPDATE webhook_deliveries d
                     SET attempts = d.attempts + 1,
                         next_attempt_at = now() + make_interval(secs => $3)
                     FROM due WHERE d.id = due.id
                     RETURNING d.id, d.run_id, d.event, d.attempts, d.created_at),
                 begun AS (
                     INSERT INTO webhook_attempts (delivery_id, attempt)
                     SELECT id, attempts FROM claimed)
                 SELECT c.id, c.run_id, c.event, c.attempts, c.created_at,
                        r.webhook->>'url' AS url, r.webhook->>'secret' AS secret
                 FROM claimed c JOIN runs r ON r.id = c.run_id",
                &[&run, &limit, &lease.as_secs_f64()],
            )
            .await?;
        Ok(rows.iter().map(due_from_row).collect())
    }

    /// Records how an attempt ended. The delivery changes only if this is
    /// still its latest attempt (a lease that ran out was claimed again).
    pub async fn finish_webhook_attempt(
        &self,
        delivery: &DueDelivery,
        outcome: &AttemptOutcome,
    ) -> Result<(), StoreError> {
        let (status_code, error, status, retry_at) = match outcome {
            AttemptOutcome::Delivered { status_code } => {
                (Some(*status_code), None, "delivered", None)
            }
            AttemptOutcome::Failed {
                status_code,
                error,
                retry_at,
            } => (
                *status_code,
                Some(error.as_str()),
                if retry_at.is_some() {
                    "pending"
                } else {
                    "failed"
                },
                *retry_at,
            ),
        };
        self.client()
            .await?
            .exec(
                "WITH a AS (
                     UPDATE webhook_attempts SET finished_at = now(), status_code = $3, error = $4
                     WHERE delivery_id = $1 AND attempt = $2)
                 UPDATE webhook_deliveries
                 SET status = $5, next_attempt_at = coalesce($6, next_attempt_at),
                     finished_at = CASE WHEN $5 = 'pending' THEN NULL ELSE now() END
                 WHERE id = $1 AND attempts = $2 AND status = 'pending'",
                &[
                    &delivery.id,
                    &delivery.attempt,
                    &status_code,
                    &error,
                    &status,
                    &retry_at,
                ],
            )
            .await?;
        Ok(())
    }

    /// A run's deliveries (its end's, and one per step that asked for
    /// approval) with every attempt, oldest first.
    pub async fn webhook_deliveries(&self, run: RunId) -> Result<Vec<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        let deliveries = client
            .q(
                "SELECT d.id, d.event, d.status, d.created_at, d.finished_at,
                        CASE WHEN d.status = 'pending' THEN d.next_attempt_at END AS next_attempt_at,
                        coalesce(r.webhook->>'url', '') AS url
                 FROM webhook_deliveries d JOIN runs r ON r.id = d.run_id
                 WHERE d.run_id = $1 ORDER BY d.created_at",
                &[&run.0],
            )
            .await?;
        let attempts = client
            .q(
                "SELECT a.delivery_id, a.attempt, a.started_at, a.finished_at, a.status_code, a.error
                 FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id
                 WHERE d.run_id = $1 ORDER BY a.attempt",
                &[&run.0],
            )
            .await?;
        Ok(deliveries
            .iter()
            .map(|row| {
                let id: Uuid = row.get("id");
                DeliveryRecord {
                    id,
                    event: row.get("event"),
                    url: row.get("url"),
                    status: row.get("status"),
                    next_attempt_at: row.get("next_attempt_at"),
                    created_at: row.get("created_at"),
                    finished_at: row.get("finished_at"),
                    attempts: attempts
                        .iter()
                        .filter(|a| a.get::<_, Uuid>("delivery_id") == id)
                        .map(|a| AttemptRecord {
                            attempt: a.get("attempt"),
                            started_at: a.get("started_at"),
                            finished_at: a.get("finished_at"),
                            status_code: a.get("status_code"),
                            error: a.get("error"),
                        })
                        .collect(),
                }
            })
            .collect())
    }
}
