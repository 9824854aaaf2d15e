use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use deadpool_postgres::Pool;

use crate::domain::{RunId, TeamId};
use crate::ledger::{build_pool, Conn, Param, StatementMode, StoreError};
use crate::ports::{
    CancelFlags, CircuitState, CircuitStates, HotStore, HotStoreError, IdempotencyClaim,
    IdempotencyKeys, RateLimits, RunSlots, SlotHolder, TokenBudget, TokenReservation,
};

/// The hot store on PostgreSQL tables (`hot_*`), for the embedded mode.
pub struct PgHotStore {
    pool: Pool,
}

impl PgHotStore {
    /// Its own pool, with `synchronous_commit` off: these rows are
    /// ephemeral (reconciliation repairs them from the ledger), and waiting
    /// for a disk flush while holding a team-wide row would serialize the team.
    pub fn connect(database_url: &str, max_connections: usize) -> Result<Self, StoreError> {
        Ok(Self {
            pool: build_pool(
                database_url,
                max_connections,
                Some("-c synchronous_commit=off"),
            )?,
        })
    }

    /// Embedded only (its advisory locks are session state anyway), so its
    /// statements are prepared once per connection.
    async fn client(&self) -> Result<Conn, HotStoreError> {
        let object = self.pool.get().await.map_err(HotStoreError::unreachable)?;
        Ok(Conn::new(object, StatementMode::Cached))
    }
}

/// A server that answered with an SQL error failed the request; anything
/// else (a closed or refused connection, a timeout) means it is unreachable.
fn unavailable(err: tokio_postgres::Error) -> HotStoreError {
    if err.code().is_some() {
        HotStoreError::failed(err)
    } else {
        HotStoreError::unreachable(err)
    }
}

#[async_trait]
impl IdempotencyKeys for PgHotStore {
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError> {
        // An expired key is replaced; a live one is kept. Concurrent claimers
        // serialize on the primary key, and exactly one sees its own run id.
        let row = self
            .client()
            .await?
            .q_one(
                "INSERT INTO hot_idempotency_keys (team_id, key, request_hash, run_id, expires_at)
                 VALUES ($1, $2, $3, $4, now() + interval '24 hours')
                 ON CONFLICT (team_id, key) DO UPDATE SET
                     request_hash = CASE WHEN hot_idempotency_keys.expires_at < now()
                                         THEN EXCLUDED.request_hash ELSE hot_idempotency_keys.request_hash END,
                     run_id = CASE WHEN hot_idempotency_keys.expires_at < now()
                                   THEN EXCLUDED.run_id ELSE hot_idempotency_keys.run_id END,
                     expires_at = CASE WHEN hot_idempotency_keys.expires_at < now()
                                       THEN EXCLUDED.expires_at ELSE hot_idempotency_keys.expires_at END
                 RETURNING request_hash, run_id",
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
}

#[async_trait]
impl CancelFlags for PgHotStore {
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
}

#[async_trait]
impl RunSlots for PgHotStore {
    async fn acquire_run_slot(
        &self,
        team: TeamId,
        run: RunId,
        limit: u32,
    ) -> Result<bool, HotStoreError> {
        // The team's counter row, locked for the statement, is what
        // serializes grants. With room left, the slot is this run's even when
        // the insert met a row: only this run's own concurrent grant can
        // have put it there.
        let grant = "WITH held AS (SELECT 1 FROM hot_run_slots WHERE run_id = $2),
                          counter AS (SELECT in_use < $3::bigint AS room FROM hot_slot_counts
                                      WHERE team_id = $1 FOR UPDATE),
                          slot AS (INSERT INTO hot_run_slots (run_id, team_id)
                                   SELECT $2, $1 FROM counter
                                   WHERE room AND NOT EXISTS (SELECT 1 FROM held)
                                   ON CONFLICT (run_id) DO NOTHING RETURNING run_id),
                          bump AS (UPDATE hot_slot_counts SET in_use = in_use + 1
                                   WHERE team_id = $1 AND EXISTS (SELECT 1 FROM slot))
                     SELECT EXISTS (SELECT 1 FROM counter),
                            EXISTS (SELECT 1 FROM held) OR coalesce((SELECT room FROM counter), false)";
        let client = self.client().await?;
        let params: [&dyn Param; 3] = [&team.0, &run.0, &i64::from(limit)];
        let row = client.q_one(grant, &params).await.map_err(unavailable)?;
        if row.get::<_, bool>(0) {
            return Ok(row.get(1));
        }
        // The team's first grant: its counter starts at zero.
        client
            .exec(
                "INSERT INTO hot_slot_counts (team_id, in_use) VALUES ($1, 0) ON CONFLICT DO NOTHING",
                &[&team.0],
            )
            .await
            .map_err(unavailable)?;
        let row = client.q_one(grant, &params).await.map_err(unavailable)?;
        Ok(row.get(1))
    }

    async fn running_runs(&self, team: TeamId) -> Result<u32, HotStoreError> {
        let count: i64 = self
            .client()
            .await?
            .q_one(
                "SELECT count(*) FROM hot_run_slots WHERE team_id = $1",
                &[&team.0],
            )
            .await
            .map_err(unavailable)?
            .get(0);
        Ok(count as u32)
    }

    async fn slot_holders(&self) -> Result<Vec<SlotHolder>, HotStoreError> {
        Ok(self
            .client()
            .await?
            .q("SELECT team_id, run_id, created_at FROM hot_run_slots", &[])
            .await
            .map_err(unavailable)?
            .iter()
            .map(|row| SlotHolder {
                team: TeamId(row.get(0)),
                run: RunId(row.get(1)),
                since: row.get::<_, DateTime<Utc>>(2),
            })
            .collect())
    }
}

#[async_trait]
impl TokenBudget for PgHotStore {
    async fn reserve_tokens(
        &self,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError> {
        let TokenReservation {
            team,
            run,
            step_no,
            day,
            tokens,
        } = reservation;
        let (tokens, budget) = (tokens as i64, budget as i64);
        // One statement, so the team's day row is locked only for its
        // duration. The marker makes a retried step keep its reservation.
        let client = self.client().await?;
        let row = client
            .q_one(
                "WITH mark AS (
                     INSERT INTO hot_token_reservations (run_id, step_no, team_id, day, tokens)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1),
                 granted AS (
                     INSERT INTO hot_token_days AS d (team_id, day, reserved)
                     SELECT $3, $4, $5 WHERE $5 <= $6 AND EXISTS (SELECT 1 FROM mark)
                     ON CONFLICT (team_id, day) DO UPDATE SET reserved = d.reserved + EXCLUDED.reserved
                     WHERE d.used + d.reserved + EXCLUDED.reserved <= $6
                     RETURNING 1)
                 SELECT EXISTS (SELECT 1 FROM mark), EXISTS (SELECT 1 FROM granted)",
                &[&run.0, &step_no, &team.0, &day, &tokens, &budget],
            )
            .await
            .map_err(unavailable)?;
        let (new_reservation, granted): (bool, bool) = (row.get(0), row.get(1));
        if new_reservation && !granted {
            // Over budget: take the marker back. (A duplicate attempt at this
            // very step racing this instant would go ahead: at most one
            // call over the budget, and only then.)
            client
                .exec(
                    "DELETE FROM hot_token_reservations
                     WHERE run_id = $1 AND step_no = $2 AND NOT settled",
                    &[&run.0, &step_no],
                )
                .await
                .map_err(unavailable)?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn settle_and_reserve(
        &self,
        settle: Option<(i32, u64)>,
        reservation: TokenReservation,
        budget: u64,
    ) -> Result<bool, HotStoreError> {
        let TokenReservation {
            team,
            run,
            step_no,
            day,
            tokens,
        } = reservation;
        let (tokens, budget) = (tokens as i64, budget as i64);
        let (settle_step, actual) = match settle {
            Some((step, actual)) => (Some(step), actual as i64),
            None => (None, 0),
        };
        // One statement and one change of the team's day row for both: the
        // previous step's reservation (same day) turns into its actual
        // tokens while this step's is set aside if the budget has room.
        let client = self.client().await?;
        let row = client
            .q_one(
                "WITH prev AS (
                     UPDATE hot_token_reservations SET settled = true
                     WHERE run_id = $1 AND step_no = $7 AND NOT settled
                     RETURNING day, tokens),
                 prev_other_day AS (
                     UPDATE hot_token_days d SET reserved = d.reserved - p.tokens, used = d.used + $8
                     FROM prev p WHERE d.team_id = $3 AND d.day = p.day AND p.day <> $4
                     RETURNING 1),
                 same AS (
                     SELECT coalesce(sum(tokens), 0)::bigint AS tokens, count(*) > 0 AS settles
                     FROM prev WHERE day = $4),
                 mark AS (
                     INSERT INTO hot_token_reservations (run_id, step_no, team_id, day, tokens)
                     VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1),
                 cur AS (
                     SELECT used, reserved FROM hot_token_days
                     WHERE team_id = $3 AND day = $4 FOR UPDATE),
                 verdict AS (
                     SELECT EXISTS (SELECT 1 FROM mark) AS new_mark,
                            EXISTS (SELECT 1 FROM mark)
                              AND coalesce((SELECT used FROM cur), 0)
                                  + CASE WHEN same.settles THEN $8 ELSE 0 END
                                  + coalesce((SELECT reserved FROM cur), 0) - same.tokens + $5 <= $6
                              AS granted,
                            same.tokens AS settled_tokens, same.settles
                     FROM same),
                 day_row AS (
                     INSERT INTO hot_token_days AS d (team_id, day, reserved, used)
                     SELECT $3, $4, CASE WHEN v.granted THEN $5 ELSE 0 END - v.settled_tokens,
                            CASE WHEN v.settles THEN $8 ELSE 0 END
                     FROM verdict v WHERE v.granted OR v.settles
                     ON CONFLICT (team_id, day) DO UPDATE SET
                         reserved = d.reserved + EXCLUDED.reserved,
                         used = d.used + EXCLUDED.used
                     RETURNING 1)
                 SELECT v.new_mark, v.granted, (SELECT count(*) FROM day_row), (SELECT count(*) FROM prev_other_day)
                 FROM verdict v",
                &[
                    &run.0,
                    &step_no,
                    &team.0,
                    &day,
                    &tokens,
                    &budget,
                    &settle_step,
                    &actual,
                ],
            )
            .await
            .map_err(unavailable)?;
        let (new_reservation, granted): (bool, bool) = (row.get(0), row.get(1));
        if new_reservation && !granted {
            // Over budget: take the marker back.
            client
                .exec(
                    "DELETE FROM hot_token_reservations
                     WHERE run_id = $1 AND step_no = $2 AND NOT settled",
                    &[&run.0, &step_no],
                )
                .await
                .map_err(unavailable)?;
            return Ok(false);
        }
        Ok(true)
    }

    async fn settle_tokens(
        &self,
        run: RunId,
        step_no: i32,
        actual: u64,
    ) -> Result<(), HotStoreError> {
        self.client()
            .await?
            .exec(
                "WITH r AS (
                     UPDATE hot_token_reservations SET settled = true
                     WHERE run_id = $1 AND step_no = $2 AND NOT settled
                     RETURNING team_id, day, tokens)
                 UPDATE hot_token_days d SET reserved = d.reserved - r.tokens, used = d.used + $3
                 FROM r WHERE d.team_id = r.team_id AND d.day = r.day",
                &[&run.0, &step_no, &(actual as i64)],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn cancel_reservation(&self, run: RunId, step_no: i32) -> Result<(), HotStoreError> {
        self.client()
            .await?
            .exec(
                "WITH r AS (
                     DELETE FROM hot_token_reservations
                     WHERE run_id = $1 AND step_no = $2 AND NOT settled
                     RETURNING team_id, day, tokens)
                 UPDATE hot_token_days d SET reserved = d.reserved - r.tokens
                 FROM r WHERE d.team_id = r.team_id AND d.day = r.day",
                &[&run.0, &step_no],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn tokens_of_day(
        &self,
        team: TeamId,
        day: NaiveDate,
    ) -> Result<(u64, u64), HotStoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT used, reserved FROM hot_token_days WHERE team_id = $1 AND day = $2",
                &[&team.0, &day],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map_or((0, 0), |row| {
            (
                row.get::<_, i64>(0).max(0) as u64,
                row.get::<_, i64>(1).max(0) as u64,
            )
        }))
    }
}

#[async_trait]
impl RateLimits for PgHotStore {
    async fn take_rate_token(
        &self,
        team: TeamId,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, HotStoreError> {
        let burst = f64::from(burst);
        // One atomic upsert: refill by elapsed time (capped at the burst),
        // then take a token if a whole one is there.
        let row = self
            .client()
            .await?
            .q_one(
                "INSERT INTO hot_rate_buckets AS b (team_id, tokens, updated_at, last_taken)
                 VALUES ($1, $3::float8 - 1, clock_timestamp(), true)
                 ON CONFLICT (team_id) DO UPDATE SET
                     tokens = least($3::float8, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $2::float8)
                              - CASE WHEN least($3, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $2) >= 1
                                     THEN 1 ELSE 0 END,
                     last_taken = least($3, b.tokens + extract(epoch FROM clock_timestamp() - b.updated_at)::float8 * $2) >= 1,
                     updated_at = clock_timestamp()
                 RETURNING tokens, last_taken",
                &[&team.0, &rate, &burst],
            )
            .await
            .map_err(unavailable)?;
        let (level, taken): (f64, bool) = (row.get(0), row.get(1));
        if taken {
            Ok(None)
        } else {
            Ok(Some(Duration::from_secs_f64(
                ((1.0 - level) / rate).max(0.001),
            )))
        }
    }
}

#[async_trait]
impl HotStore for PgHotStore {
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError> {
        // Like the grants, not flushed before it counts: a database crash
        // that undoes a release leaves the slot held until the next
        // reconciliation (within a minute), while a flushed release would
        // hold the team's counter row across a disk flush on every run.
        self.client()
            .await?
            .exec(
                "WITH flag AS (DELETE FROM hot_cancel_flags WHERE run_id = $1),
                      slot AS (DELETE FROM hot_run_slots WHERE run_id = $1 RETURNING team_id),
                      freed AS (UPDATE hot_slot_counts c SET in_use = greatest(c.in_use - 1, 0)
                                FROM slot WHERE c.team_id = slot.team_id),
                      r AS (DELETE FROM hot_token_reservations WHERE run_id = $1
                            RETURNING team_id, day, tokens, settled),
                      open AS (SELECT team_id, day, sum(tokens) AS tokens FROM r
                               WHERE NOT settled GROUP BY team_id, day)
                 UPDATE hot_token_days d SET reserved = d.reserved - open.tokens
                 FROM open WHERE d.team_id = open.team_id AND d.day = open.day",
                &[&run.0],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}

#[async_trait]
impl CircuitStates for PgHotStore {
    async fn circuit(&self, key: &str) -> Result<Option<CircuitState>, HotStoreError> {
        Ok(self
            .client()
            .await?
            .q_opt(
                "SELECT failures, open_until FROM hot_circuits WHERE key = $1",
                &[&key],
            )
            .await
            .map_err(unavailable)?
            .map(|row| CircuitState {
                failures: row.get::<_, i32>(0).max(0) as u32,
                open_until: row.get(1),
            }))
    }

    async fn set_circuit(&self, key: &str, state: CircuitState) -> Result<(), HotStoreError> {
        self.client()
            .await?
            .exec(
                "INSERT INTO hot_circuits (key, failures, open_until) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET failures = EXCLUDED.failures,
                     open_until = EXCLUDED.open_until, updated_at = now()",
                &[
                    &key,
                    &(state.failures.min(i32::MAX as u32) as i32),
                    &state.open_until,
                ],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
