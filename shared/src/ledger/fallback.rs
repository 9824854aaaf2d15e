//! What the ledger can tell in place of the hot store while that cannot be
//! reached (`adapters::degraded`): idempotency keys (written with each run),
//! the team's runs in progress, the day's tokens, recent admissions, and
//! cancellations (recorded when the run is settled).

use chrono::{DateTime, Days, NaiveDate, TimeZone, Utc};

use super::{Ledger, StoreError};
use crate::domain::{RunId, TeamId};
use crate::ports::IdempotencyClaim;

impl Ledger {
    /// Claims `key` for `run` unless a run took it in the last 24 hours.
    pub async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run: RunId,
    ) -> Result<IdempotencyClaim, StoreError> {
        let client = self.client().await?;
        let claimed = client
            .q_opt(
                "INSERT INTO run_idempotency_keys (team_id, key, request_hash, run_id)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (team_id, key) DO UPDATE SET request_hash = EXCLUDED.request_hash,
                     run_id = EXCLUDED.run_id, created_at = now()
                 WHERE run_idempotency_keys.created_at < now() - interval '24 hours'
                    OR run_idempotency_keys.run_id = EXCLUDED.run_id
                 RETURNING run_id",
                &[&team.0, &key, &request_hash, &run.0],
            )
            .await?;
        if claimed.is_some() {
            return Ok(IdempotencyClaim::Claimed);
        }
        let existing = client
            .q_one(
                "SELECT request_hash, run_id FROM run_idempotency_keys
                 WHERE team_id = $1 AND key = $2",
                &[&team.0, &key],
            )
            .await?;
        Ok(IdempotencyClaim::Existing {
            request_hash: existing.get(0),
            run_id: RunId(existing.get(1)),
        })
    }

    /// The team's runs that hold a slot: queued or running.
    pub async fn active_runs(&self, team: TeamId) -> Result<u32, StoreError> {
        let count: i64 = self
            .client()
            .await?
            .q_one(
                "SELECT count(*) FROM runs WHERE team_id = $1 AND status IN ('queued', 'running')",
                &[&team.0],
            )
            .await?
            .get(0);
        Ok(count.max(0) as u32)
    }

    /// Tokens the team's runs accepted on `day` have used so far.
    pub async fn tokens_used_on(&self, team: TeamId, day: NaiveDate) -> Result<u64, StoreError> {
        let start = start_of(day);
        let end = start_of(day.checked_add_days(Days::new(1)).unwrap_or(day));
        let used: i64 = self
            .client()
            .await?
            .q_one(
                "SELECT coalesce(sum(input_tokens + output_tokens), 0)::bigint FROM runs
                 WHERE team_id = $1 AND created_at >= $2 AND created_at < $3",
                &[&team.0, &start, &end],
            )
            .await?
            .get(0);
        Ok(used.max(0) as u64)
    }

    /// Runs the team had accepted since `since`.
    pub async fn runs_accepted_since(
        &self,
        team: TeamId,
        since: DateTime<Utc>,
    ) -> Result<u64, StoreError> {
        let count: i64 = self
            .client()
            .await?
            .q_one(
                "SELECT count(*) FROM runs WHERE team_id = $1 AND created_at >= $2",
                &[&team.0, &since],
            )
            .await?
            .get(0);
        Ok(count.max(0) as u64)
    }

    /// Why the run was cancelled, once it was.
    pub async fn cancel_reason(&self, run: RunId) -> Result<Option<String>, StoreError> {
        Ok(self
            .client()
            .await?
            .q_opt(
                "SELECT coalesce(stop_detail, 'cancelled') FROM runs
                 WHERE id = $1 AND status = 'cancelled'",
                &[&run.0],
            )
            .await?
            .map(|row| row.get(0)))
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    Utc.from_utc_datetime(&day.and_hms_opt(0, 0, 0).unwrap_or_default())
}
