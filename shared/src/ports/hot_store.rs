//! Hot, ephemeral state, one small trait per capability: idempotency keys,
//! cancel flags, concurrent-run slots, daily token reservations, rate-limit
//! buckets and LLM circuit states (PostgreSQL tables in the embedded mode,
//! DynamoDB in AWS). The ledger stays the source of truth: reconciliation
//! repairs this state from it, and while the store cannot be reached the
//! engine runs on answers derived from the ledger (`adapters::degraded`).

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{RunId, TeamId};

type Source = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HotStoreError {
    /// The store could not be reached (connection, timeout, a 5xx): the
    /// degraded mode answers from the ledger instead.
    #[error("hot store unreachable: {0}")]
    Unreachable(#[source] Source),
    /// The store answered, but with an error a retry would meet again.
    #[error("hot store failed: {0}")]
    Failed(#[source] Source),
}

impl HotStoreError {
    pub fn unreachable(error: impl Into<Source>) -> Self {
        HotStoreError::Unreachable(error.into())
    }

    pub fn failed(error: impl Into<Source>) -> Self {
        HotStoreError::Failed(error.into())
    }

    pub fn is_unreachable(&self) -> bool {
        matches!(self, HotStoreError::Unreachable(_))
    }
}

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

/// A provider endpoint and model's circuit, as shared between processes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitState {
    /// Failed calls in a row.
    pub failures: u32,
    /// Set while the circuit is open: no call until then.
    pub open_until: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait IdempotencyKeys: Send + Sync {
    /// Records `key → (request_hash, run_id)` unless the key is already taken
    /// (and not expired); atomic under concurrency.
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError>;
}

#[async_trait]
pub trait CancelFlags: Send + Sync {
    async fn set_cancel_flag(&self, run: RunId, reason: &str) -> Result<(), HotStoreError>;

    /// The reason, when the run has been asked to stop.
    async fn cancel_flag(&self, run: RunId) -> Result<Option<String>, HotStoreError>;
}

#[async_trait]
pub trait RunSlots: Send + Sync {
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
}

#[async_trait]
pub trait TokenBudget: Send + Sync {
    /// Sets tokens aside for a step unless that would take the team's day
    /// past `budget` (false). A step that already has a reservation, settled
    /// or not, keeps it (true): retries are not charged twice.
    async fn reserve_tokens(
        &self,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError>;

    /// Settles the previous step's reservation (`settle`: its step and
    /// actual tokens; once, as `settle_tokens`) and reserves for this one, as
    /// `reserve_tokens` — in one round trip where the store can.
    async fn settle_and_reserve(
        &self,
        settle: Option<(i32, u64)>,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError> {
        if let Some((step_no, actual)) = settle {
            self.settle_tokens(reservation.run, step_no, actual).await?;
        }
        self.reserve_tokens(reservation, budget).await
    }

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
}

#[async_trait]
pub trait RateLimits: Send + Sync {
    /// Takes one token from the team's bucket (`rate` per second, at most
    /// `burst`). `None`: allowed; `Some(wait)`: limited, retry after `wait`.
    async fn take_rate_token(
        &self,
        team: TeamId,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, HotStoreError>;
}

#[async_trait]
pub trait CircuitStates: Send + Sync {
    /// The shared state of the circuit named `key`, if any was recorded.
    async fn circuit(&self, key: &str) -> Result<Option<CircuitState>, HotStoreError>;

    /// Records the circuit's state for every process.
    async fn set_circuit(&self, key: &str, state: CircuitState) -> Result<(), HotStoreError>;
}

/// Whether the hot store answers, for `/healthz`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HotHealth {
    /// False while answers come from the ledger instead.
    pub reachable: bool,
    /// Answers the ledger gave in its place so far.
    pub fallbacks: u64,
}

/// Every capability, and what spans them.
#[async_trait]
pub trait HotStore:
    IdempotencyKeys + CancelFlags + RunSlots + TokenBudget + RateLimits + CircuitStates
{
    /// Drops a finished run's hot entries — cancel flag, slot, outstanding
    /// reservations; idempotent.
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError>;

    /// Whether it answers (an unreachable store may be tried again here).
    async fn health(&self) -> HotHealth {
        HotHealth {
            reachable: true,
            fallbacks: 0,
        }
    }
}
