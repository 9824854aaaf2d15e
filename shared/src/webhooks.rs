//! Webhook deliveries: the end of a run POSTed to its webhook, signed like
//! HTTP tools, through the outbound guard, tried again with backoff for up
//! to a day. The outbox is in the ledger (`ledger::webhooks`), so a
//! restart between attempts loses nothing: whoever runs [`Webhooks::deliver_due`]
//! next (the embedded mode's poller, the finalize function) carries on.

use std::time::Duration;

use chrono::Utc;
use futures_util::future::join_all;

use crate::api::views::{RunView, WebhookBody};
use crate::domain::{ApprovalStatus, EventType};
use crate::engine::{sign, Engine};
use crate::ledger::{AttemptOutcome, DueDelivery, Ledger, StoreError};
use crate::metrics::{Metrics, WEBHOOK_ATTEMPTS};
use crate::outbound::{OutboundClient, OutboundResponse};

/// Bytes of a receiver's answer read (only its status matters).
const ANSWER_CAP: usize = 4 * 1024;

/// When deliveries are tried again, and for how long.
#[derive(Clone, Debug)]
pub struct WebhookPolicy {
    /// The wait after the first failed attempt; it doubles after each.
    pub first_retry: Duration,
    /// The longest wait between two attempts.
    pub max_retry: Duration,
    /// A delivery not through this long after its run ended is given up.
    pub give_up_after: Duration,
    /// One attempt's time limit.
    pub attempt_timeout: Duration,
    /// How long a claimed delivery is left to its deliverer before another
    /// may try it (longer than an attempt).
    pub lease: Duration,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(10),
            max_retry: Duration::from_secs(3600),
            give_up_after: Duration::from_secs(24 * 3600),
            attempt_timeout: Duration::from_secs(10),
            lease: Duration::from_secs(60),
        }
    }
}

impl WebhookPolicy {
    /// The wait after failed attempt `attempt` (from 1): doubling from
    /// `first_retry`, capped, with up to a tenth more at random so
    /// receivers that fail together are not retried together.
    pub fn backoff(&self, attempt: i32) -> Duration {
        let doublings = attempt.saturating_sub(1).clamp(0, 30) as u32;
        let wait = self
            .first_retry
            .saturating_mul(1u32 << doublings.min(20))
            .min(self.max_retry);
        wait + wait.mul_f64(rand::random::<f64>() * 0.1)
    }
}

/// What one pass delivered.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeliveryPass {
    pub delivered: usize,
    pub failed: usize,
}

/// Delivers due webhooks.
#[derive(Clone)]
pub struct Webhooks {
    ledger: Ledger,
    outbound: OutboundClient,
    metrics: Metrics,
    policy: WebhookPolicy,
}

impl Webhooks {
    /// Deliveries through the engine's ledger, outbound guard and metrics.
    pub fn new(engine: &Engine, policy: WebhookPolicy) -> Self {
        Self {
            ledger: engine.ledger.clone(),
            outbound: engine.tools.outbound().clone(),
            metrics: engine.metrics.clone(),
            policy,
        }
    }

    /// Claims up to `limit` due deliveries and attempts them at once.
    pub async fn deliver_due(&self, limit: i64) -> Result<DeliveryPass, StoreError> {
        let due = self
            .ledger
            .claim_webhook_deliveries(None, limit, self.policy.lease)
            .await?;
        let outcomes = join_all(due.iter().map(|delivery| self.attempt(delivery))).await;
        let mut pass = DeliveryPass::default();
        for (delivery, outcome) in due.iter().zip(outcomes) {
            let counted = match &outcome {
                AttemptOutcome::Delivered { .. } => {
                    pass.delivered += 1;
                    "delivered"
                }
                AttemptOutcome::Failed { .. } => {
                    pass.failed += 1;
                    "failed"
                }
            };
            self.metrics
                .count(WEBHOOK_ATTEMPTS, &[("outcome", counted)], 1);
            // One outcome that cannot be written does not cost the others
            // theirs; its delivery is tried again once its lease is over.
            if let Err(error) = self.ledger.finish_webhook_attempt(delivery, &outcome).await {
                tracing::warn!(delivery_id = %delivery.id, %error, "a webhook attempt's outcome was not recorded");
            }
        }
        Ok(pass)
    }

    /// One attempt: the run as `GET /v1/runs/{id}` shows it, signed.
    async fn attempt(&self, delivery: &DueDelivery) -> AttemptOutcome {
        let span = tracing::info_span!("webhook", run_id = %delivery.run_id,
            delivery_id = %delivery.id, attempt = delivery.attempt);
        tracing::Instrument::instrument(self.attempt_here(delivery), span).await
    }

    async fn attempt_here(&self, delivery: &DueDelivery) -> AttemptOutcome {
        let run = match self.ledger.get_run(delivery.run_id).await {
            Ok(Some(run)) => run,
            Ok(None) => {
                return failed(
                    &self.policy,
                    delivery,
                    None,
                    "the run no longer exists".into(),
                )
            }
            Err(error) => {
                return failed(
                    &self.policy,
                    delivery,
                    None,
                    format!("reading the run: {error}"),
                )
            }
        };
        let approvals = if delivery.event == EventType::ApprovalRequested.as_str() {
            match self.ledger.run_approvals(run.id).await {
                Ok(all) => Some(
                    all.into_iter()
                        .filter(|a| a.status == ApprovalStatus::Pending)
                        .collect(),
                ),
                Err(error) => {
                    return failed(
                        &self.policy,
                        delivery,
                        None,
                        format!("reading the approvals: {error}"),
                    )
                }
            }
        } else {
            None
        };
        let body = match serde_json::to_string(&WebhookBody {
            id: delivery.id,
            kind: delivery.event.clone(),
            created_at: delivery.created_at,
            run: RunView::from(&run),
            approvals,
        }) {
            Ok(body) => body,
            Err(error) => {
                return failed(
                    &self.policy,
                    delivery,
                    None,
                    format!("the body does not serialize: {error}"),
                )
            }
        };
        let timestamp = Utc::now().timestamp().to_string();
        let headers = [
            ("content-type", "application/json".to_owned()),
            ("x-agentrun-delivery", delivery.id.to_string()),
            ("x-agentrun-event", delivery.event.clone()),
            ("x-agentrun-attempt", delivery.attempt.to_string()),
            (
                "x-agentrun-signature",
                sign(delivery.secret.expose(), &timestamp, &body),
            ),
            ("x-agentrun-timestamp", timestamp),
        ];
        let sent = tokio::time::timeout(
            self.policy.attempt_timeout,
            self.outbound
                .post(&delivery.url, &headers, body, ANSWER_CAP),
        )
        .await;
        let outcome = match sent {
            Err(_) => failed(
                &self.policy,
                delivery,
                None,
                format!(
                    "no answer within {} s",
                    self.policy.attempt_timeout.as_secs()
                ),
            ),
            Ok(OutboundResponse::Answered { status, .. }) if status.is_success() => {
                AttemptOutcome::Delivered {
                    status_code: i32::from(status.as_u16()),
                }
            }
            Ok(OutboundResponse::Answered { status, .. }) => failed(
                &self.policy,
                delivery,
                Some(i32::from(status.as_u16())),
                format!("the receiver answered {status}"),
            ),
            Ok(OutboundResponse::Blocked(reason)) | Ok(OutboundResponse::Failed(reason)) => {
                failed(&self.policy, delivery, None, reason)
            }
        };
        match &outcome {
            AttemptOutcome::Delivered { status_code } => {
                tracing::info!(status_code, "webhook delivered")
            }
            AttemptOutcome::Failed {
                error, retry_at, ..
            } => tracing::warn!(%error, ?retry_at, "webhook attempt failed"),
        }
        outcome
    }
}

/// A failed attempt, tried again after its backoff unless that falls
/// past the day the delivery has.
fn failed(
    policy: &WebhookPolicy,
    delivery: &DueDelivery,
    status_code: Option<i32>,
    error: String,
) -> AttemptOutcome {
    let retry_at = Utc::now()
        + chrono::Duration::from_std(policy.backoff(delivery.attempt)).unwrap_or_default();
    let give_up_at =
        delivery.created_at + chrono::Duration::from_std(policy.give_up_after).unwrap_or_default();
    AttemptOutcome::Failed {
        status_code,
        error,
        retry_at: (retry_at <= give_up_at).then_some(retry_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(ended_ago: chrono::Duration, attempt: i32) -> DueDelivery {
        DueDelivery {
            id: uuid::Uuid::new_v4(),
            run_id: crate::domain::RunId::new(),
            event: "run.failed".to_owned(),
            attempt,
            created_at: Utc::now() - ended_ago,
            url: "https://example.com/hook".to_owned(),
            secret: crate::secret::Secret::new("s"),
        }
    }

    #[test]
    fn a_failed_attempt_is_tried_again_within_the_day_and_given_up_after() {
        let policy = WebhookPolicy::default();
        let retried = |ended_ago: chrono::Duration, attempt: i32| match failed(
            &policy,
            &delivery(ended_ago, attempt),
            Some(500),
            "500".to_owned(),
        ) {
            AttemptOutcome::Failed { retry_at, .. } => retry_at,
            AttemptOutcome::Delivered { .. } => unreachable!(),
        };
        let soon = retried(chrono::Duration::seconds(1), 1).expect("a fresh delivery is retried");
        let wait = (soon - Utc::now()).num_milliseconds();
        assert!((9_000..=11_100).contains(&wait), "first retry in {wait} ms");
        assert!(retried(chrono::Duration::hours(22), 20).is_some());
        // The next wait (an hour) would end past the day: given up.
        assert!(retried(chrono::Duration::minutes(23 * 60 + 30), 20).is_none());
        assert!(retried(chrono::Duration::hours(25), 2).is_none());
    }

    #[test]
    fn backoff_doubles_from_the_first_retry_up_to_the_cap() {
        let policy = WebhookPolicy::default();
        let within = |attempt: i32, secs: u64| {
            let wait = policy.backoff(attempt);
            let base = Duration::from_secs(secs);
            assert!(
                wait >= base && wait <= base + base / 10,
                "attempt {attempt}: {wait:?} is not {base:?} plus at most a tenth"
            );
        };
        within(1, 10);
        within(2, 20);
        within(3, 40);
        within(9, 2560);
        within(10, 3600);
        within(500, 3600);
    }

    #[test]
    fn the_default_policy_keeps_trying_for_a_day() {
        let policy = WebhookPolicy::default();
        let mut waited = Duration::ZERO;
        let mut attempts = 1;
        loop {
            let wait = policy.backoff(attempts);
            if waited + wait > policy.give_up_after {
                break;
            }
            waited += wait;
            attempts += 1;
        }
        assert!(
            (25..=35).contains(&attempts),
            "{attempts} attempts in a day"
        );
    }
}
