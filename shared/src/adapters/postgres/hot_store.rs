use async_trait::async_trait;
use deadpool_postgres::Pool;

use crate::ledger::Cached;

use crate::domain::{RunId, TeamId};
use crate::ports::{HotStore, HotStoreError, IdempotencyClaim};

/// Idempotency keys live 24 hours.
const IDEMPOTENCY_TTL: &str = "24 hours";

/// The hot store on PostgreSQL tables (`hot_*`), for the embedded mode.
pub struct PgHotStore {
    pool: Pool,
}

impl PgHotStore {
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, HotStoreError> {
        self.pool
            .get()
            .await
            .map_err(|e| HotStoreError(e.to_string()))
    }
}

fn unavailable(err: tokio_postgres::Error) -> HotStoreError {
    HotStoreError(err.to_string())
}

#[async_trait]
impl HotStore for PgHotStore {
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError> {
        let client = self.client().await?;
        // An expired key is replaced; a live one is kept. Concurrent claimers
        // serialize on the primary key, and exactly one sees its own run id.
        let row = client
            .q_one(
                &format!(
                    "INSERT INTO hot_idempotency_keys (team_id, key, request_hash, run_id, expires_at)
                     VALUES ($1, $2, $3, $4, now() + interval '{IDEMPOTENCY_TTL}')
                     ON CONFLICT (team_id, key) DO UPDATE SET
                         request_hash = CASE WHEN hot_idempotency_keys.expires_at < now()
                                             THEN EXCLUDED.request_hash ELSE hot_idempotency_keys.request_hash END,
                         run_id = CASE WHEN hot_idempotency_keys.expires_at < now()
                                       THEN EXCLUDED.run_id ELSE hot_idempotency_keys.run_id END,
                         expires_at = CASE WHEN hot_idempotency_keys.expires_at < now()
                                           THEN EXCLUDED.expires_at ELSE hot_idempotency_keys.expires_at END
                     RETURNING request_hash, run_id"
                ),
                &[&team.0, &key, &request_hash, &run_id.0],
            )
            .await
            .map_err(unavailable)?;
        let stored_run = RunId(row.get(1));
        if stored_run == run_id {
            Ok(IdempotencyClaim::Claimed)
        } else {
            Ok(IdempotencyClaim::Existing {
                request_hash: row.get(0),
                run_id: stored_run,
            })
        }
    }

    async fn set_cancel_flag(&self, run: RunId, reason: &str) -> Result<(), HotStoreError> {
        self.client()
            .await?
            .exec(
                "INSERT INTO hot_cancel_flags (run_id, reason) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&run.0, &reason],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn cancel_flag(&self, run: RunId) -> Result<Option<String>, HotStoreError> {
        Ok(self
            .client()
            .await?
            .q_opt(
                "SELECT reason FROM hot_cancel_flags WHERE run_id = $1",
                &[&run.0],
            )
            .await
            .map_err(unavailable)?
            .map(|row| row.get(0)))
    }

    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError> {
        self.client()
            .await?
            .exec("DELETE FROM hot_cancel_flags WHERE run_id = $1", &[&run.0])
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
