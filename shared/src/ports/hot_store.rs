//! Hot, ephemeral state: idempotency keys, cancel flags, concurrent-run
//! slots, daily token reservations and rate-limit buckets (PostgreSQL
//! tables in the embedded mode, DynamoDB in AWS). The ledger stays the source
//! of truth; reconciliation repairs this state from it.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

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

/// A run holding one of its team's concurrent-run slots.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlotHolder {
    pub team: TeamId,
    pub run: RunId,
    pub since: DateTime<Utc>,
}

/// Tokens set aside for one step's LLM call against the team's day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenReservation {
    pub team: TeamId,
    pub run: RunId,
    pub step_no: i32,
    pub day: NaiveDate,
    pub tokens: u64,
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

    /// Gives `run` one of `team`'s slots if fewer than `limit` are taken;
    /// a run that already holds one keeps it (true).
    async fn acquire_run_slot(
        &self,
        team: TeamId,
        run: RunId,
        limit: u32,
    ) -> Result<bool, HotStoreError>;

    /// Slots `team` holds now.
    async fn running_runs(&self, team: TeamId) -> Result<u32, HotStoreError>;

    /// Every slot holder, for reconciliation.
    async fn slot_holders(&self) -> Result<Vec<SlotHolder>, HotStoreError>;

    /// Sets tokens aside for a step unless that would take the team's day
    /// past `budget` (false). A step that already has a reservation, settled
    /// or not, keeps it (true): retries are not charged twice.
    async fn reserve_tokens(
        &self,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError>;

    /// Turns a step's reservation into `actual` usage, once.
    async fn settle_tokens(
        &self,
        run: RunId,
        step_no: i32,
        actual: u64,
    ) -> Result<(), HotStoreError>;

    /// Drops a step's unsettled reservation (its LLM call failed).
    async fn cancel_reservation(&self, run: RunId, step_no: i32) -> Result<(), HotStoreError>;

    /// (used, reserved) tokens of a team's day.
    async fn tokens_of_day(
        &self,
        team: TeamId,
        day: NaiveDate,
    ) -> Result<(u64, u64), HotStoreError>;

    /// Takes one token from the team's bucket (`rate` per second, at most
    /// `burst`). `None`: allowed; `Some(wait)`: limited, retry after `wait`.
    async fn take_rate_token(
        &self,
        team: TeamId,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, HotStoreError>;

    /// Drops a finished run's hot entries — cancel flag, slot, outstanding
    /// reservations; idempotent.
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError>;
}
