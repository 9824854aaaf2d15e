//! Hot, ephemeral state: idempotency keys and cancel flags (PostgreSQL tables
//! in the embedded mode, DynamoDB in AWS).

use async_trait::async_trait;

use crate::domain::{RunId, TeamId};

#[derive(Debug, thiserror::Error)]
#[error("hot store unavailable: {0}")]
pub struct HotStoreError(pub String);

/// The answer to "may I create a run for this idempotency key?".
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IdempotencyClaim {
    /// The key is new; the caller owns the run id it offered.
    Claimed,
    /// The key was seen before, for this request hash and run.
    Existing { request_hash: String, run_id: RunId },
}

#[async_trait]
pub trait HotStore: Send + Sync {
    /// Records `key → (request_hash, run_id)` unless the key is already taken
    /// (and not expired); atomic under concurrency.
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError>;

    async fn set_cancel_flag(&self, run: RunId, reason: &str) -> Result<(), HotStoreError>;

    /// The reason, when the run has been asked to stop.
    async fn cancel_flag(&self, run: RunId) -> Result<Option<String>, HotStoreError>;

    /// Drops a finished run's hot entries; idempotent.
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError>;
}
