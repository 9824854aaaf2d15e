//! The hot store with a way down: while it cannot be reached, each
//! capability answers from the ledger instead, slower and coarser but with
//! nothing lost, and the engine and the API go on.
//!
//! | capability | while unreachable |
//! |---|---|
//! | idempotency keys | the ledger's unique key (written with every run) |
//! | cancel flags | the run's status in the ledger (a cancel settles it there) |
//! | slots | the team's queued and running runs, counted |
//! | token budget | the tokens of the team's runs accepted today, summed; nothing reserved |
//! | rate limit | runs accepted in the last second, counted against the rate |
//! | circuits | this process's own view only |
//!
//! A release that could not be made is made when the store answers again;
//! reconciliation needs the store itself and waits for it. The change of
//! state is logged once each way and counted; `/healthz` says `degraded`.
//! Once unreachable, the store is tried again at most every
//! `PROBE_EVERY` (one probe at a time), so a dead endpoint costs no
//! timeout per call.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{NaiveDate, Utc};

use crate::domain::{RunId, TeamId};
use crate::ledger::{Ledger, StoreError};
use crate::ports::{
    CancelFlags, CircuitState, CircuitStates, HotHealth, HotStore, HotStoreError, IdempotencyClaim,
    IdempotencyKeys, RateLimits, RunSlots, SlotHolder, TokenBudget, TokenReservation,
};

/// How often an unreachable store is tried again.
pub const PROBE_EVERY: Duration = Duration::from_secs(2);

pub struct Degradable {
    primary: Arc<dyn HotStore>,
    ledger: Ledger,
    state: Mutex<State>,
    /// Answers given from the ledger.
    fallbacks: AtomicU64,
}

#[derive(Default)]
struct State {
    /// Since when the store has not answered.
    down_since: Option<Instant>,
    last_probe: Option<Instant>,
    /// Finished runs whose hot entries could not be given back meanwhile.
    unreleased: Vec<RunId>,
}

fn from_ledger(error: StoreError) -> HotStoreError {
    match error {
        StoreError::Unavailable(detail) => HotStoreError::unreachable(detail),
        other => HotStoreError::failed(other),
    }
}

impl Degradable {
    pub fn new(primary: Arc<dyn HotStore>, ledger: Ledger) -> Self {
        Self {
            primary,
            ledger,
            state: Mutex::new(State::default()),
            fallbacks: AtomicU64::new(0),
        }
    }

    /// Answers given from the ledger so far.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks.load(Ordering::Relaxed)
    }

    /// Whether to ask the store: always while it answers, then once per
    /// `PROBE_EVERY`.
    fn ask_primary(&self) -> bool {
        let Ok(mut state) = self.state.lock() else {
            return true;
        };
        if state.down_since.is_none() {
            return true;
        }
        let now = Instant::now();
        if state
            .last_probe
            .is_some_and(|at| now.duration_since(at) < PROBE_EVERY)
        {
            return false;
        }
        state.last_probe = Some(now);
        true
    }

    /// The store answered: leaves the degraded mode (once) and gives back
    /// what runs that finished meanwhile still hold there.
    async fn answered(&self) {
        let unreleased = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let Some(since) = state.down_since.take() else {
                return;
            };
            tracing::warn!(down_for = ?since.elapsed(), fallbacks = self.fallbacks(),
                "the hot store answers again; back from the degraded mode");
            std::mem::take(&mut state.unreleased)
        };
        for run in unreleased {
            match self.primary.release_run(run).await {
                Ok(()) => {}
                // Gone again: kept for the next time it answers.
                Err(error) if error.is_unreachable() => {
                    self.unreachable("release", &error);
                    if let Ok(mut state) = self.state.lock() {
                        state.unreleased.push(run);
                    }
                }
                Err(error) => {
                    tracing::warn!(run_id = %run, %error, "could not give back a run's hot state; reconciliation will")
                }
            }
        }
    }

    fn unreachable(&self, what: &str, error: &HotStoreError) {
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.down_since.is_none() {
            tracing::error!(what, %error,
                "the hot store cannot be reached; running degraded on the ledger");
            state.down_since = Some(Instant::now());
            state.last_probe = Some(Instant::now());
        }
    }

    /// The store's answer, or — when it cannot be reached — the ledger's.
    async fn route<T>(
        &self,
        what: &'static str,
        primary: impl Future<Output = Result<T, HotStoreError>>,
        fallback: impl Future<Output = Result<T, HotStoreError>>,
    ) -> Result<T, HotStoreError> {
        if self.ask_primary() {
            match primary.await {
                Ok(answer) => {
                    self.answered().await;
                    return Ok(answer);
                }
                Err(error) if error.is_unreachable() => self.unreachable(what, &error),
                Err(error) => return Err(error),
            }
        }
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
        fallback.await
    }
}

#[async_trait]
impl IdempotencyKeys for Degradable {
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError> {
        self.route(
            "idempotency key",
            self.primary
                .claim_idempotency_key(team, key, request_hash, run_id),
            async {
                self.ledger
                    .claim_idempotency_key(team, key, request_hash, run_id)
                    .await
                    .map_err(from_ledger)
            },
        )
        .await
    }
}

#[async_trait]
impl CancelFlags for Degradable {
    async fn set_cancel_flag(&self, run: RunId, reason: &str) -> Result<(), HotStoreError> {
        // The cancel settles the run in the ledger, which is what the
        // degraded reads look at.
        self.route(
            "cancel flag",
            self.primary.set_cancel_flag(run, reason),
            async { Ok(()) },
        )
        .await
    }

    async fn cancel_flag(&self, run: RunId) -> Result<Option<String>, HotStoreError> {
        self.route("cancel flag", self.primary.cancel_flag(run), async {
            self.ledger.cancel_reason(run).await.map_err(from_ledger)
        })
        .await
    }
}

#[async_trait]
impl RunSlots for Degradable {
    async fn acquire_run_slot(
        &self,
        team: TeamId,
        run: RunId,
        limit: u32,
    ) -> Result<bool, HotStoreError> {
        // Counted, not reserved: requests at the same instant may each see
        // room for one more.
        self.route(
            "run slot",
            self.primary.acquire_run_slot(team, run, limit),
            async {
                let active = self.ledger.active_runs(team).await.map_err(from_ledger)?;
                Ok(active < limit)
            },
        )
        .await
    }

    async fn running_runs(&self, team: TeamId) -> Result<u32, HotStoreError> {
        self.route("run slots", self.primary.running_runs(team), async {
            self.ledger.active_runs(team).await.map_err(from_ledger)
        })
        .await
    }

    async fn slot_holders(&self) -> Result<Vec<SlotHolder>, HotStoreError> {
        // Reconciliation repairs the store itself: it waits until the store
        // answers again.
        self.route("slot holders", self.primary.slot_holders(), async {
            Err(HotStoreError::unreachable(
                "the hot store cannot be reached: reconciliation waits for it",
            ))
        })
        .await
    }
}

#[async_trait]
impl TokenBudget for Degradable {
    async fn reserve_tokens(
        &self,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError> {
        self.route(
            "token reservation",
            self.primary.reserve_tokens(reservation, budget),
            async {
                let used = self
                    .ledger
                    .tokens_used_on(reservation.team, reservation.day)
                    .await
                    .map_err(from_ledger)?;
                Ok(used.saturating_add(reservation.tokens) <= budget)
            },
        )
        .await
    }

    async fn settle_and_reserve(
        &self,
        settle: Option<(i32, u64)>,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError> {
        self.route(
            "token reservation",
            self.primary.settle_and_reserve(settle, reservation, budget),
            async {
                let used = self
                    .ledger
                    .tokens_used_on(reservation.team, reservation.day)
                    .await
                    .map_err(from_ledger)?;
                Ok(used.saturating_add(reservation.tokens) <= budget)
            },
        )
        .await
    }

    async fn settle_tokens(
        &self,
        run: RunId,
        step_no: i32,
        actual: u64,
    ) -> Result<(), HotStoreError> {
        // The ledger counts the step's tokens when it is committed.
        self.route(
            "token settlement",
            self.primary.settle_tokens(run, step_no, actual),
            async { Ok(()) },
        )
        .await
    }

    async fn cancel_reservation(&self, run: RunId, step_no: i32) -> Result<(), HotStoreError> {
        self.route(
            "token reservation",
            self.primary.cancel_reservation(run, step_no),
            async { Ok(()) },
        )
        .await
    }

    async fn tokens_of_day(
        &self,
        team: TeamId,
        day: NaiveDate,
    ) -> Result<(u64, u64), HotStoreError> {
        self.route(
            "tokens of the day",
            self.primary.tokens_of_day(team, day),
            async {
                let used = self
                    .ledger
                    .tokens_used_on(team, day)
                    .await
                    .map_err(from_ledger)?;
                Ok((used, 0))
            },
        )
        .await
    }
}

#[async_trait]
impl RateLimits for Degradable {
    async fn take_rate_token(
        &self,
        team: TeamId,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, HotStoreError> {
        self.route(
            "rate limit",
            self.primary.take_rate_token(team, rate, burst),
            async {
                let since = Utc::now() - chrono::Duration::seconds(1);
                let recent = self
                    .ledger
                    .runs_accepted_since(team, since)
                    .await
                    .map_err(from_ledger)?;
                let allowed = (rate.ceil() as u64).clamp(1, u64::from(burst.max(1)));
                Ok((recent >= allowed).then_some(Duration::from_secs(1)))
            },
        )
        .await
    }
}

#[async_trait]
impl CircuitStates for Degradable {
    async fn circuit(&self, key: &str) -> Result<Option<CircuitState>, HotStoreError> {
        self.route("circuit", self.primary.circuit(key), async { Ok(None) })
            .await
    }

    async fn set_circuit(&self, key: &str, state: CircuitState) -> Result<(), HotStoreError> {
        self.route("circuit", self.primary.set_circuit(key, state), async {
            Ok(())
        })
        .await
    }
}

#[async_trait]
impl HotStore for Degradable {
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError> {
        // What the run held stays in the store until it answers again, and
        // is given back then.
        self.route("release", self.primary.release_run(run), async {
            // Deferred only while the store is still marked down, under the
            // lock `answered` takes the deferred list with: a store that came
            // back meanwhile gets the release at once, none is left behind.
            let deferred = match self.state.lock() {
                Ok(mut state) if state.down_since.is_some() => {
                    state.unreleased.push(run);
                    true
                }
                _ => false,
            };
            if deferred {
                Ok(())
            } else {
                self.primary.release_run(run).await
            }
        })
        .await
    }

    async fn health(&self) -> HotHealth {
        let down = || {
            self.state
                .lock()
                .map(|state| state.down_since.is_some())
                .unwrap_or(false)
        };
        if down() {
            // A cheap read as the probe, at most once per PROBE_EVERY.
            let _ = self
                .route(
                    "probe",
                    self.primary.cancel_flag(RunId(uuid::Uuid::nil())),
                    async { Ok(None) },
                )
                .await;
        }
        HotHealth {
            reachable: !down(),
            fallbacks: self.fallbacks(),
        }
    }
}
