//! The hot store on one DynamoDB table (`pk`, `sk`: strings; `expires_at`:
//! the TTL attribute). Items:
//!
//! | pk | sk | what |
//! |---|---|---|
//! | `idem#<team>#<key>` | `-` | idempotency key → request hash, run id |
//! | `run#<run>` | `cancel` | cancel flag |
//! | `run#<run>` | `slot` | the run holds one of its team's slots |
//! | `run#<run>` | `resv#<step>` | a step's token reservation |
//! | `team#<team>` | `slots` | slots held (`running`) |
//! | `team#<team>` | `day#<date>` | tokens `used`, `reserved`, `committed` (= used + reserved) |
//! | `team#<team>` | `rate` | token bucket |
//! | `slots` | `<run>` | every slot holder, for reconciliation |
//! | `circuit#<key>` | `-` | an LLM circuit: `failures`, `open_until_ms` |
//!
//! Counters change only inside transactions with their markers, so giving
//! something back twice is harmless.

use std::collections::HashMap;
use std::time::Duration;

use std::future::Future;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::builders::{DeleteBuilder, PutBuilder, UpdateBuilder};
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, TransactWriteItem, Update,
};
use chrono::{DateTime, NaiveDate, Utc};

use crate::domain::{RunId, TeamId};
use crate::policy::full_jitter;
use crate::ports::{
    CancelFlags, CircuitState, CircuitStates, HotStore, HotStoreError, IdempotencyClaim,
    IdempotencyKeys, RateLimits, RunSlots, SlotHolder, TokenBudget, TokenReservation,
};

const IDEMPOTENCY_TTL_SECONDS: i64 = 24 * 3600;

/// Tries of a request that meets a conflicting transaction or throttling,
/// waiting a full-jitter backoff of 20 ms doubling up to 1 s in between.
const CONTENTION_ATTEMPTS: u32 = 10;

fn contention_backoff(attempt: u32) -> Duration {
    full_jitter(Duration::from_millis(20), Duration::from_secs(1), attempt)
}

/// What a transaction came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tx {
    Applied,
    /// A condition failed: the change is refused (nothing was applied).
    Refused,
}

enum Verdict {
    Refused,
    /// Cancelled without applying anything; worth another try.
    Transient,
    Failed,
}

/// Error codes that mean "nothing was done, try again": a transaction in
/// progress on the item (which the SDK does not retry) or throttling.
fn transient_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "TransactionConflictException"
                | "TransactionConflict"
                | "ThrottlingError"
                | "ThrottlingException"
                | "ProvisionedThroughputExceeded"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "TransactionInProgressException"
        )
    )
}

/// Reads a cancelled transaction's reasons, one per item: any conflict or
/// throttling means nothing was applied and a retry may pass; otherwise a
/// failed condition is a refusal; anything else (or no reasons) an error.
fn cancellation_verdict(reasons: &[CancellationReason]) -> Verdict {
    let codes: Vec<&str> = reasons
        .iter()
        .filter_map(CancellationReason::code)
        .collect();
    if codes.iter().any(|code| transient_code(Some(code))) {
        Verdict::Transient
    } else if codes.contains(&"ConditionalCheckFailed")
        && codes
            .iter()
            .all(|code| matches!(*code, "ConditionalCheckFailed" | "None"))
    {
        Verdict::Refused
    } else {
        Verdict::Failed
    }
}

/// Sends a single-item request again while the item is locked by a
/// transaction in progress or the table throttles.
async fn retrying<T, E, R, F, Fut>(mut send: F) -> Result<T, SdkError<E, R>>
where
    E: ProvideErrorMetadata,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, SdkError<E, R>>>,
{
    let mut attempt = 0;
    loop {
        attempt += 1;
        match send().await {
            Err(error)
                if attempt < CONTENTION_ATTEMPTS
                    && error
                        .as_service_error()
                        .is_some_and(|e| transient_code(e.code())) =>
            {
                tokio::time::sleep(contention_backoff(attempt)).await;
            }
            result => return result,
        }
    }
}

pub struct DynamoHotStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

type Item = HashMap<String, AttributeValue>;

fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn key(pk: &str, sk: &str) -> Item {
    HashMap::from([("pk".to_owned(), s(pk)), ("sk".to_owned(), s(sk))])
}

fn failed(error: impl std::fmt::Display) -> HotStoreError {
    HotStoreError::failed(error.to_string())
}

/// An SDK error with its whole context in its message.
#[derive(Debug, thiserror::Error)]
#[error("{context}")]
struct SdkFailure {
    context: String,
    #[source]
    source: Box<dyn std::error::Error + Send + Sync>,
}

/// No answer (dispatch, timeout, a broken response) or a 5xx means the
/// table could not be reached; any other answer failed the request.
fn sdk_failed<E, R>(error: SdkError<E, R>) -> HotStoreError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    let unreachable = match &error {
        SdkError::ServiceError(service) => {
            transient_code(service.err().code())
                || matches!(
                    service.err().code(),
                    Some("InternalServerError" | "ServiceUnavailable" | "RequestLimitExceeded")
                )
        }
        SdkError::ConstructionFailure(_) => false,
        _ => true,
    };
    let failure = SdkFailure {
        context: DisplayErrorContext(&error).to_string(),
        source: Box::new(error),
    };
    if unreachable {
        HotStoreError::unreachable(failure)
    } else {
        HotStoreError::failed(failure)
    }
}

impl DynamoHotStore {
    pub fn new(config: &aws_config::SdkConfig, table: impl Into<String>) -> Self {
        Self {
            client: aws_sdk_dynamodb::Client::new(config),
            table: table.into(),
        }
    }

    async fn get(&self, pk: &str, sk: &str) -> Result<Option<Item>, HotStoreError> {
        Ok(retrying(|| {
            self.client
                .get_item()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .consistent_read(true)
                .send()
        })
        .await
        .map_err(sdk_failed)?
        .item)
    }

    /// Runs a transaction. Only a failed condition refuses it; a conflict
    /// with another transaction or throttling cancels it without applying
    /// anything, so it is tried again after a jittered wait.
    async fn transact(&self, items: Vec<TransactWriteItem>) -> Result<Tx, HotStoreError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let error = match self
                .client
                .transact_write_items()
                .set_transact_items(Some(items.clone()))
                .send()
                .await
            {
                Ok(_) => return Ok(Tx::Applied),
                Err(error) => error,
            };
            let verdict = match error.as_service_error() {
                Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) => {
                    cancellation_verdict(cancelled.cancellation_reasons())
                }
                Some(other) if transient_code(other.code()) => Verdict::Transient,
                _ => Verdict::Failed,
            };
            match verdict {
                Verdict::Refused => return Ok(Tx::Refused),
                Verdict::Transient if attempt < CONTENTION_ATTEMPTS => {
                    tracing::debug!(attempt, error = %DisplayErrorContext(&error), "hot-store transaction contended; retrying");
                    tokio::time::sleep(contention_backoff(attempt)).await;
                }
                Verdict::Transient | Verdict::Failed => return Err(sdk_failed(error)),
            }
        }
    }

    fn update(
        &self,
        pk: &str,
        sk: &str,
        expression: &str,
        values: &[(&str, AttributeValue)],
    ) -> UpdateBuilder {
        let mut builder = Update::builder()
            .table_name(&self.table)
            .set_key(Some(key(pk, sk)))
            .update_expression(expression);
        for (name, value) in values {
            builder = builder.expression_attribute_values(*name, value.clone());
        }
        builder
    }

    async fn delete_plain(&self, pk: &str, sk: &str) -> Result<(), HotStoreError> {
        retrying(|| {
            self.client
                .delete_item()
                .table_name(&self.table)
                .set_key(Some(key(pk, sk)))
                .send()
        })
        .await
        .map_err(sdk_failed)?;
        Ok(())
    }

    /// Puts a per-run marker and conditional counter changes in one
    /// transaction. A marker already there means granted, with the counters
    /// untouched: a retry keeps what it got and is not counted twice.
    async fn grant_with_marker(
        &self,
        marker: Item,
        counter: Vec<TransactWriteItem>,
    ) -> Result<bool, HotStoreError> {
        let (pk, sk) = (
            get_s(&marker, "pk").unwrap_or_default(),
            get_s(&marker, "sk").unwrap_or_default(),
        );
        if self.get(&pk, &sk).await?.is_some() {
            return Ok(true);
        }
        let mut items = vec![tx_put(
            Put::builder()
                .table_name(&self.table)
                .set_item(Some(marker))
                .condition_expression("attribute_not_exists(pk)"),
        )?];
        items.extend(counter);
        if self.transact(items).await? == Tx::Applied {
            return Ok(true);
        }
        // Refused: a limit, unless a concurrent call for this marker got it first.
        Ok(self.get(&pk, &sk).await?.is_some())
    }

    async fn release_slot(&self, run: RunId, marker: &Item) -> Result<(), HotStoreError> {
        let Some(team) = get_s(marker, "team") else {
            return self.delete_plain(&format!("run#{run}"), "slot").await;
        };
        let items = vec![
            tx_delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(&format!("run#{run}"), "slot")))
                    .condition_expression("attribute_exists(pk)"),
            )?,
            tx_delete(
                Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key("slots", &run.to_string()))),
            )?,
            tx_update(self.update(
                &format!("team#{team}"),
                "slots",
                "ADD running :minus",
                &[(":minus", n(-1))],
            ))?,
        ];
        // A failed condition means another caller released it first.
        self.transact(items).await.map(|_| ())
    }

    async fn drop_reservation(
        &self,
        run: RunId,
        step_no: i32,
        settle_with: Option<u64>,
    ) -> Result<(), HotStoreError> {
        let (pk, sk) = (format!("run#{run}"), format!("resv#{step_no}"));
        let Some(item) = self.get(&pk, &sk).await? else {
            return Ok(());
        };
        if item
            .get("settled")
            .and_then(|v| v.as_bool().ok())
            .copied()
            .unwrap_or(false)
        {
            return Ok(());
        }
        let (Some(team), Some(day), Some(tokens)) = (
            get_s(&item, "team"),
            get_s(&item, "day"),
            get_n::<i64>(&item, "tokens"),
        ) else {
            return self.delete_plain(&pk, &sk).await;
        };
        let unsettled = [(":false", AttributeValue::Bool(false))];
        let marker = match settle_with {
            Some(_) => tx_update(
                self.update(
                    &pk,
                    &sk,
                    "SET settled = :true",
                    &[(":true", AttributeValue::Bool(true)), unsettled[0].clone()],
                )
                .condition_expression("settled = :false"),
            )?,
            None => {
                let mut delete = Delete::builder()
                    .table_name(&self.table)
                    .set_key(Some(key(&pk, &sk)))
                    .condition_expression("settled = :false");
                delete = delete.expression_attribute_values(":false", AttributeValue::Bool(false));
                tx_delete(delete)?
            }
        };
        let actual = settle_with.unwrap_or(0) as i64;
        let day_update = tx_update(self.update(
            &format!("team#{team}"),
            &format!("day#{day}"),
            "ADD reserved :minus, used :actual, committed :delta",
            &[
                (":minus", n(-tokens)),
                (":actual", n(actual)),
                (":delta", n(actual - tokens)),
            ],
        ))?;
        self.transact(vec![marker, day_update]).await.map(|_| ())
    }
}

fn tx_update(builder: UpdateBuilder) -> Result<TransactWriteItem, HotStoreError> {
    Ok(TransactWriteItem::builder()
        .update(builder.build().map_err(failed)?)
        .build())
}

fn tx_put(builder: PutBuilder) -> Result<TransactWriteItem, HotStoreError> {
    Ok(TransactWriteItem::builder()
        .put(builder.build().map_err(failed)?)
        .build())
}

fn tx_delete(builder: DeleteBuilder) -> Result<TransactWriteItem, HotStoreError> {
    Ok(TransactWriteItem::builder()
        .delete(builder.build().map_err(failed)?)
        .build())
}

#[async_trait]
impl IdempotencyKeys for DynamoHotStore {
    async fn claim_idempotency_key(
        &self,
        team: TeamId,
        idempotency_key: &str,
        request_hash: &str,
        run_id: RunId,
    ) -> Result<IdempotencyClaim, HotStoreError> {
        let pk = format!("idem#{team}#{idempotency_key}");
        let now = Utc::now().timestamp();
        let mut item = key(&pk, "-");
        item.insert("request_hash".to_owned(), s(request_hash));
        item.insert("run_id".to_owned(), s(run_id.to_string()));
        item.insert("expires_at".to_owned(), n(now + IDEMPOTENCY_TTL_SECONDS));
        let put = retrying(|| {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk) OR expires_at < :now")
                .expression_attribute_values(":now", n(now))
                .send()
        })
        .await;
        match put {
            Ok(_) => Ok(IdempotencyClaim::Claimed),
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                let stored = self
                    .get(&pk, "-")
                    .await?
                    .ok_or_else(|| failed("idempotency key vanished"))?;
                let run_id = get_s(&stored, "run_id")
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| failed("idempotency key without a run id"))?;
                Ok(IdempotencyClaim::Existing {
                    request_hash: get_s(&stored, "request_hash").unwrap_or_default(),
                    run_id,
                })
            }
            Err(error) => Err(sdk_failed(error)),
        }
    }
}

#[async_trait]
impl CancelFlags for DynamoHotStore {
    async fn set_cancel_flag(&self, run: RunId, reason: &str) -> Result<(), HotStoreError> {
        let mut item = key(&format!("run#{run}"), "cancel");
        item.insert("reason".to_owned(), s(reason));
        let put = retrying(|| {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .condition_expression("attribute_not_exists(pk)")
                .send()
        })
        .await;
        match put {
            Ok(_) => Ok(()),
            // The first reason stays.
            Err(error)
                if error
                    .as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(error) => Err(sdk_failed(error)),
        }
    }

    async fn cancel_flag(&self, run: RunId) -> Result<Option<String>, HotStoreError> {
        Ok(self
            .get(&format!("run#{run}"), "cancel")
            .await?
            .and_then(|item| get_s(&item, "reason")))
    }
}

#[async_trait]
impl RunSlots for DynamoHotStore {
    async fn acquire_run_slot(
        &self,
        team: TeamId,
        run: RunId,
        limit: u32,
    ) -> Result<bool, HotStoreError> {
        let since = Utc::now().to_rfc3339();
        let mut marker = key(&format!("run#{run}"), "slot");
        marker.insert("team".to_owned(), s(team.to_string()));
        let mut index = key("slots", &run.to_string());
        index.insert("team".to_owned(), s(team.to_string()));
        index.insert("since".to_owned(), s(since));
        let counter = vec![
            tx_put(Put::builder().table_name(&self.table).set_item(Some(index)))?,
            tx_update(
                self.update(
                    &format!("team#{team}"),
                    "slots",
                    "ADD running :one",
                    &[(":one", n(1)), (":limit", n(limit))],
                )
                .condition_expression("attribute_not_exists(running) OR running < :limit"),
            )?,
        ];
        self.grant_with_marker(marker, counter).await
    }

    async fn running_runs(&self, team: TeamId) -> Result<u32, HotStoreError> {
        Ok(self
            .get(&format!("team#{team}"), "slots")
            .await?
            .and_then(|item| get_n::<i64>(&item, "running"))
            .unwrap_or(0)
            .max(0) as u32)
    }

    async fn slot_holders(&self) -> Result<Vec<SlotHolder>, HotStoreError> {
        let mut holders = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = retrying(|| {
                self.client
                    .query()
                    .table_name(&self.table)
                    .key_condition_expression("pk = :pk")
                    .expression_attribute_values(":pk", s("slots"))
                    .set_exclusive_start_key(start.clone())
                    .send()
            })
            .await
            .map_err(sdk_failed)?;
            for item in page.items() {
                let run = get_s(item, "sk").and_then(|id| id.parse().ok());
                let team = get_s(item, "team").and_then(|id| id.parse().ok());
                let since =
                    get_s(item, "since").and_then(|at| DateTime::parse_from_rfc3339(&at).ok());
                if let (Some(run), Some(team), Some(since)) = (run, team, since) {
                    holders.push(SlotHolder {
                        team,
                        run,
                        since: since.with_timezone(&Utc),
                    });
                }
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(holders);
            }
        }
    }
}

#[async_trait]
impl TokenBudget for DynamoHotStore {
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
        let (pk, sk) = (format!("run#{run}"), format!("resv#{step_no}"));
        let Some(max) = budget.checked_sub(tokens) else {
            // Larger than the whole budget: only an existing reservation stands.
            return Ok(self.get(&pk, &sk).await?.is_some());
        };
        let mut marker = key(&pk, &sk);
        marker.insert("team".to_owned(), s(team.to_string()));
        marker.insert("day".to_owned(), s(day.to_string()));
        marker.insert("tokens".to_owned(), n(tokens));
        marker.insert("settled".to_owned(), AttributeValue::Bool(false));
        let counter = vec![tx_update(
            self.update(
                &format!("team#{team}"),
                &format!("day#{day}"),
                "ADD committed :t, reserved :t",
                &[(":t", n(tokens)), (":max", n(max))],
            )
            .condition_expression("attribute_not_exists(committed) OR committed <= :max"),
        )?];
        self.grant_with_marker(marker, counter).await
    }

    async fn settle_tokens(
        &self,
        run: RunId,
        step_no: i32,
        actual: u64,
    ) -> Result<(), HotStoreError> {
        self.drop_reservation(run, step_no, Some(actual)).await
    }

    async fn cancel_reservation(&self, run: RunId, step_no: i32) -> Result<(), HotStoreError> {
        self.drop_reservation(run, step_no, None).await
    }

    async fn tokens_of_day(
        &self,
        team: TeamId,
        day: NaiveDate,
    ) -> Result<(u64, u64), HotStoreError> {
        Ok(self
            .get(&format!("team#{team}"), &format!("day#{day}"))
            .await?
            .map_or((0, 0), |item| {
                (
                    get_n::<i64>(&item, "used").unwrap_or(0).max(0) as u64,
                    get_n::<i64>(&item, "reserved").unwrap_or(0).max(0) as u64,
                )
            }))
    }
}

#[async_trait]
impl RateLimits for DynamoHotStore {
    async fn take_rate_token(
        &self,
        team: TeamId,
        rate: f64,
        burst: u32,
    ) -> Result<Option<Duration>, HotStoreError> {
        let pk = format!("team#{team}");
        // Optimistic: read, refill, write back if nobody wrote in between.
        for _ in 0..10 {
            let now_ms = Utc::now().timestamp_millis();
            let bucket = self.get(&pk, "rate").await?;
            let (level, version) = match &bucket {
                Some(item) => {
                    let tokens: f64 = get_n(item, "tokens").unwrap_or(0.0);
                    let updated: i64 = get_n(item, "updated_ms").unwrap_or(now_ms);
                    let elapsed = (now_ms - updated).max(0) as f64 / 1000.0;
                    (
                        (tokens + elapsed * rate).min(f64::from(burst)),
                        get_n::<i64>(item, "version"),
                    )
                }
                None => (f64::from(burst), None),
            };
            if level < 1.0 {
                return Ok(Some(Duration::from_secs_f64(
                    ((1.0 - level) / rate).max(0.001),
                )));
            }
            let next_version = version.unwrap_or(0) + 1;
            let mut item = key(&pk, "rate");
            item.insert("tokens".to_owned(), n(level - 1.0));
            item.insert("updated_ms".to_owned(), n(now_ms));
            item.insert("version".to_owned(), n(next_version));
            let mut put = self
                .client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            put = match version {
                Some(version) => put
                    .condition_expression("version = :v")
                    .expression_attribute_values(":v", n(version)),
                None => put.condition_expression("attribute_not_exists(pk)"),
            };
            match retrying(|| put.clone().send()).await {
                Ok(_) => return Ok(None),
                Err(error)
                    if error
                        .as_service_error()
                        .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
                {
                    continue
                }
                Err(error) => return Err(sdk_failed(error)),
            }
        }
        Err(failed("the rate bucket is too contended"))
    }
}

#[async_trait]
impl HotStore for DynamoHotStore {
    async fn release_run(&self, run: RunId) -> Result<(), HotStoreError> {
        let pk = format!("run#{run}");
        let items = retrying(|| {
            self.client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(&pk))
                .consistent_read(true)
                .send()
        })
        .await
        .map_err(sdk_failed)?
        .items
        .unwrap_or_default();
        for item in items {
            let sk = get_s(&item, "sk").unwrap_or_default();
            if sk == "slot" {
                self.release_slot(run, &item).await?;
            } else if let Some(step) = sk.strip_prefix("resv#").and_then(|n| n.parse().ok()) {
                // The marker goes only once its counters are given back (an
                // error above keeps it for the next release).
                self.drop_reservation(run, step, None).await?;
                self.delete_plain(&pk, &sk).await?;
            } else {
                self.delete_plain(&pk, &sk).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl CircuitStates for DynamoHotStore {
    async fn circuit(&self, key: &str) -> Result<Option<CircuitState>, HotStoreError> {
        Ok(self
            .get(&format!("circuit#{key}"), "-")
            .await?
            .map(|item| CircuitState {
                failures: get_n::<u32>(&item, "failures").unwrap_or(0),
                open_until: get_n::<i64>(&item, "open_until_ms")
                    .and_then(DateTime::from_timestamp_millis),
            }))
    }

    async fn set_circuit(&self, key: &str, state: CircuitState) -> Result<(), HotStoreError> {
        let mut item = self::key(&format!("circuit#{key}"), "-");
        item.insert("failures".to_owned(), n(state.failures));
        if let Some(until) = state.open_until {
            item.insert("open_until_ms".to_owned(), n(until.timestamp_millis()));
        }
        retrying(|| {
            self.client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item.clone()))
                .send()
        })
        .await
        .map_err(sdk_failed)?;
        Ok(())
    }
}
