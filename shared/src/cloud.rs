//! Cloud mode wiring for the Lambda functions (beside `embedded.rs`, which
//! wires the one-process mode): typed settings read once
//! from the environment at cold start, the engine on the shared ledger, and
//! the Lambda event handlers (SQS batches with partial failures, EventBridge
//! status changes). Each function's `main` only calls into here.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::sqs::{BatchItemFailure, SqsBatchResponse, SqsEvent};
use axum::Router;
use serde_json::{json, Value};

use crate::adapters::anthropic::{AnthropicClient, DEFAULT_BASE_URL as ANTHROPIC_BASE_URL};
use crate::adapters::aws::{
    finalize_message, finalize_status_change, Aws, DynamoEventFeed, StepFunctionsOrchestrator,
    StepWorker,
};
use crate::adapters::degraded::Degradable;
use crate::adapters::in_process::BroadcastFeed;
use crate::adapters::llm_http::ProviderSettings;
use crate::adapters::openai::OpenAiClient;
use crate::adapters::postgres::PgHotStore;
use crate::api::{relay_router, router, AppState, StreamGate, StreamLimits};
use crate::domain::RunId;
use crate::engine::{CircuitSettings, Circuits, Engine, StepError, ToolRunner, ORPHAN_SLOT_GRACE};
use crate::ledger::{Ledger, StatementMode, StoreError};
use crate::metrics::{Gauge, Metrics, RUNS_ACTIVE};
use crate::outbound::OutboundAllow;
use crate::policy::StepPolicy;
use crate::ports::{
    EventFeed, HotStore, LlmClients, LlmError, Orchestrator, OrchestratorError, StartOutcome,
};
use crate::secret::Secret;
use crate::starter::{start_stale_runs, STARTER_GRACE};
use crate::webhooks::{WebhookPolicy, Webhooks};

#[derive(Debug, thiserror::Error)]
pub enum CloudError {
    #[error("missing setting {0}: set it in the function's environment")]
    Missing(&'static str),
    #[error("setting {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("cannot read secret {arn} for {name}: {reason}")]
    Secret {
        name: &'static str,
        arn: String,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Llm(#[from] LlmError),
}

/// What a function reads from its environment, once.
#[derive(Clone, Debug)]
pub struct CloudSettings {
    /// `DATABASE_URL` (through RDS Proxy in AWS).
    pub database_url: Secret,
    /// `AGENTRUN_DB_CONNECTIONS` (default 4): connections per instance.
    pub db_connections: usize,
    /// `AGENTRUN_DB_STATEMENTS`: `cached` (default; named statements,
    /// prepared once per connection) or `unnamed` (nothing left in the
    /// session, for a pooler such as RDS Proxy that would otherwise pin
    /// every connection).
    pub db_statements: StatementMode,
    /// `STATE_MACHINE_ARN` (the api function needs it).
    pub state_machine_arn: Option<String>,
    /// `OPENAI_BASE_URL`, `OPENAI_API_KEY`.
    pub llm: ProviderSettings,
    /// `ANTHROPIC_BASE_URL` (the public API unless set), `ANTHROPIC_API_KEY`.
    pub anthropic: ProviderSettings,
    /// `AGENTRUN_ADMIN_KEY`; without it the admin API is off.
    pub admin_key: Option<Secret>,
    /// `AWS_ENDPOINT_URL`: every AWS client talks to this endpoint (an emulator).
    pub aws_endpoint: Option<String>,
    /// `HOT_TABLE`: the DynamoDB table of the hot store; without it the hot
    /// store uses PostgreSQL tables.
    pub hot_table: Option<String>,
    /// `EVENTS_TABLE`: the DynamoDB events table the SSE relay reads; without
    /// it events are read from the ledger only.
    pub events_table: Option<String>,
    /// `AGENTRUN_OUTBOUND_ALLOW`: internal destinations HTTP tools may reach.
    pub outbound_allow: OutboundAllow,
    /// `AGENTRUN_STREAM_MAX_PER_TEAM` (100), `AGENTRUN_STREAM_MAX_TOTAL`
    /// (2000), `AGENTRUN_STREAM_MAX_SECONDS` (840: below the relay's 15-minute
    /// limit), `AGENTRUN_STREAM_MAX_IDLE_SECONDS` (120): bounds on the
    /// relay's open streams.
    pub stream_limits: StreamLimits,
    /// `AGENTRUN_STREAM_URL`: where the relay serves event streams; the
    /// api function (buffered, cut off by API Gateway after 30 s) answers
    /// `/v1/runs/{id}/events` with a 307 to it.
    pub stream_url: Option<String>,
    /// `AGENTRUN_MAX_WAIT_SECONDS` (25): the longest `GET /v1/runs/{id}?wait=`
    /// holds its answer; Terraform sets it a little under the api
    /// function's timeout.
    pub max_wait: std::time::Duration,
    pub policy: StepPolicy,
}

/// A whole number from the environment, or its default when unset.
fn number_setting<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    name: &'static str,
    default: T,
) -> Result<T, CloudError> {
    match get(name) {
        None => Ok(default),
        Some(raw) => raw.trim().parse().map_err(|_| CloudError::Invalid {
            name,
            reason: format!("{raw:?} is not a number"),
        }),
    }
}

/// Settings that hold secrets. In AWS each comes from Secrets Manager
/// (`<NAME>_SECRET_ARN`, read once at cold start), never from a plain
/// environment variable; the plain variable is for local use.
const SECRET_SETTINGS: [&str; 4] = [
    "DATABASE_URL",
    "OPENAI_API_KEY",
    "ANTHROPIC_API_KEY",
    "AGENTRUN_ADMIN_KEY",
];

impl CloudSettings {
    /// From the function's environment, with secrets read from Secrets Manager.
    pub async fn from_env() -> Result<Self, CloudError> {
        Self::load(std::env::vars().collect()).await
    }

    /// From `env`, reading each `<NAME>_SECRET_ARN` of `SECRET_SETTINGS`
    /// from Secrets Manager (when `<NAME>` itself is not set).
    pub async fn load(mut env: HashMap<String, String>) -> Result<Self, CloudError> {
        let wanted: Vec<(&'static str, String)> = SECRET_SETTINGS
            .iter()
            .filter(|name| !env.contains_key(**name))
            .filter_map(|name| Some((*name, env.get(&format!("{name}_SECRET_ARN"))?.clone())))
            .collect();
        if !wanted.is_empty() {
            let aws = Aws::connect(env.get("AWS_ENDPOINT_URL").map(String::as_str)).await;
            for (name, arn) in wanted {
                let value = aws
                    .secret_string(&arn)
                    .await
                    .map_err(|reason| CloudError::Secret {
                        name,
                        arn: arn.clone(),
                        reason,
                    })?;
                env.insert(name.to_owned(), value.trim().to_owned());
            }
        }
        Self::from_lookup(|name| env.get(name).cloned())
    }

    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, CloudError> {
        let database_url = get("DATABASE_URL").ok_or(CloudError::Missing("DATABASE_URL"))?;
        let llm_url = get("OPENAI_BASE_URL").ok_or(CloudError::Missing("OPENAI_BASE_URL"))?;
        let db_connections = number_setting(&get, "AGENTRUN_DB_CONNECTIONS", 4)?;
        let db_statements = match get("AGENTRUN_DB_STATEMENTS") {
            None => StatementMode::default(),
            Some(raw) => raw.parse().map_err(|reason| CloudError::Invalid {
                name: "AGENTRUN_DB_STATEMENTS",
                reason,
            })?,
        };
        let stream_limits = StreamLimits {
            per_team: number_setting(&get, "AGENTRUN_STREAM_MAX_PER_TEAM", 100)?,
            total: number_setting(&get, "AGENTRUN_STREAM_MAX_TOTAL", 2_000)?,
            max_lifetime: std::time::Duration::from_secs(number_setting(
                &get,
                "AGENTRUN_STREAM_MAX_SECONDS",
                840,
            )?),
            max_idle: Some(std::time::Duration::from_secs(number_setting(
                &get,
                "AGENTRUN_STREAM_MAX_IDLE_SECONDS",
                120,
            )?)),
        };
        let outbound_allow = OutboundAllow::parse(
            &get("AGENTRUN_OUTBOUND_ALLOW").unwrap_or_default(),
        )
        .map_err(|reason| CloudError::Invalid {
            name: "AGENTRUN_OUTBOUND_ALLOW",
            reason,
        })?;
        let mut llm = ProviderSettings::new(llm_url);
        llm.api_key = get("OPENAI_API_KEY").map(Secret::from);
        let mut anthropic = ProviderSettings::new(
            get("ANTHROPIC_BASE_URL").unwrap_or_else(|| ANTHROPIC_BASE_URL.to_owned()),
        );
        anthropic.api_key = get("ANTHROPIC_API_KEY").map(Secret::from);
        Ok(Self {
            database_url: Secret::new(database_url),
            db_connections,
            db_statements,
            state_machine_arn: get("STATE_MACHINE_ARN"),
            llm,
            anthropic,
            admin_key: get("AGENTRUN_ADMIN_KEY").map(Secret::from),
            aws_endpoint: get("AWS_ENDPOINT_URL"),
            hot_table: get("HOT_TABLE"),
            events_table: get("EVENTS_TABLE"),
            outbound_allow,
            stream_limits,
            stream_url: get("AGENTRUN_STREAM_URL").filter(|url| !url.trim().is_empty()),
            max_wait: std::time::Duration::from_secs(number_setting(
                &get,
                "AGENTRUN_MAX_WAIT_SECONDS",
                25u64,
            )?),
            policy: StepPolicy {
                steps_per_task: number_setting(&get, "AGENTRUN_STEPS_PER_TASK", 1u32)?.max(1),
                ..StepPolicy::default()
            },
        })
    }
}

/// Clients and the engine, built once per function instance.
pub struct CloudPlatform {
    pub engine: Engine,
    pub aws: Aws,
    /// The events table feed, when there is one (the relay reads it too).
    events: Option<Arc<DynamoEventFeed>>,
    pub settings: CloudSettings,
}

impl CloudPlatform {
    /// Connects lazily: no database round trip until the first event.
    /// (Migrations are applied at deploy time: the finalize function's
    /// `{"action": "migrate"}`, or `agentrun migrate`.)
    pub async fn connect(settings: CloudSettings) -> Result<Self, CloudError> {
        let aws = Aws::connect(settings.aws_endpoint.as_deref()).await;
        let primary: Arc<dyn HotStore> = match &settings.hot_table {
            Some(table) => Arc::new(aws.hot_store(table)),
            None => Arc::new(PgHotStore::connect(
                settings.database_url.expose(),
                (settings.db_connections / 2).max(1),
            )?),
        };
        let ledger = Ledger::connect_with(
            settings.database_url.expose(),
            settings.db_connections,
            settings.db_statements,
        )?;
        let hot: Arc<dyn HotStore> = Arc::new(Degradable::new(primary, ledger.clone()));
        let events = settings
            .events_table
            .as_deref()
            .map(|table| Arc::new(aws.event_feed(table, ledger.clone())));
        let feed: Arc<dyn EventFeed> = match &events {
            Some(events) => events.clone(),
            None => Arc::new(BroadcastFeed::new()),
        };
        let engine = Engine {
            ledger,
            hot,
            llm: LlmClients {
                openai: Arc::new(OpenAiClient::new(settings.llm.clone())?),
                anthropic: Arc::new(AnthropicClient::new(settings.anthropic.clone())?),
            },
            feed,
            tools: ToolRunner::new(settings.outbound_allow.clone()),
            schemas: Default::default(),
            circuits: Circuits::new(CircuitSettings::from_policy(&settings.policy)),
            metrics: Default::default(),
        };
        Ok(Self {
            engine,
            aws,
            events,
            settings,
        })
    }

    /// Step Functions executions of the run state machine (`STATE_MACHINE_ARN`).
    pub fn orchestrator(&self) -> Result<Arc<StepFunctionsOrchestrator>, CloudError> {
        let arn = self
            .settings
            .state_machine_arn
            .clone()
            .ok_or(CloudError::Missing("STATE_MACHINE_ARN"))?;
        Ok(Arc::new(self.aws.orchestrator(&arn)))
    }

    /// The HTTP API with Step Functions as the orchestrator; event streams
    /// are pointed at the relay when its URL is set.
    pub fn router(&self) -> Result<Router, CloudError> {
        let mut state = AppState::new(
            self.engine.clone(),
            self.orchestrator()?,
            self.settings
                .admin_key
                .as_ref()
                .map(|k| Arc::from(k.expose())),
        );
        state.stream_url = self.settings.stream_url.as_deref().map(Arc::from);
        // Under the function's timeout: a longer wait answers with the run
        // as it is, and the client asks again.
        state.max_wait = self.settings.max_wait;
        // The api function counts too (a cancel ends a run here).
        let metrics = self.engine.metrics.clone();
        Ok(router(state).layer(axum::middleware::map_response(
            move |response: axum::response::Response| {
                let metrics = metrics.clone();
                async move {
                    write_metrics(&metrics);
                    response
                }
            },
        )))
    }

    /// The SSE relay: event streams read from the events table when there is
    /// one (falling back to the ledger), else from the ledger.
    pub fn relay_router(&self) -> Router {
        let orchestrator = Arc::new(StreamsOnly);
        let mut state = AppState::new(self.engine.clone(), orchestrator, None);
        state.streams = StreamGate::new(self.settings.stream_limits);
        if let Some(events) = &self.events {
            state = state.reading_events_from(events.clone());
        }
        relay_router(state)
    }

    pub fn step_worker(&self) -> StepWorker {
        self.aws
            .step_worker(self.engine.clone(), self.settings.policy.clone())
    }
}

/// The relay starts and stops nothing (its router has no such routes).
struct StreamsOnly;

#[async_trait::async_trait]
impl Orchestrator for StreamsOnly {
    async fn start(&self, _run: RunId) -> Result<StartOutcome, OrchestratorError> {
        Err(OrchestratorError(
            "the relay only streams events".to_owned(),
        ))
    }

    async fn stop(&self, _run: RunId) -> Result<(), OrchestratorError> {
        Err(OrchestratorError(
            "the relay only streams events".to_owned(),
        ))
    }
}

/// One SQS batch of step messages, handled concurrently (in series, later
/// messages would wait past their heartbeat); the messages that must come
/// back are reported as partial batch failures (`ReportBatchItemFailures`).
pub async fn handle_step_batch(worker: &StepWorker, event: SqsEvent) -> SqsBatchResponse {
    let handled = event.records.into_iter().map(|record| async move {
        let id = record.message_id.clone().unwrap_or_default();
        let sent_at = sent_timestamp(&record.attributes);
        let body = record.body.unwrap_or_default();
        let span = tracing::info_span!("step_message", message_id = %id);
        match tracing::Instrument::instrument(worker.handle(&body, sent_at), span).await {
            Ok(_) => None,
            Err(error) => {
                tracing::warn!(message_id = %id, %error, "step message will be delivered again");
                Some(id)
            }
        }
    });
    let mut response = SqsBatchResponse::default();
    for id in futures_util::future::join_all(handled)
        .await
        .into_iter()
        .flatten()
    {
        let mut failure = BatchItemFailure::default();
        failure.item_identifier = id;
        response.batch_item_failures.push(failure);
    }
    write_metrics(worker.metrics());
    response
}

/// What the metrics counted since the last call, as CloudWatch Embedded
/// Metric Format lines on stdout (CloudWatch Logs turns them into metrics
/// of the namespace `agentrun`, named as `/metrics` names them).
pub fn write_metrics(metrics: &Metrics) {
    for line in metrics.take_emf(&[]) {
        println!("{line}");
    }
}

/// When SQS accepted the message (`SentTimestamp`, Unix milliseconds).
pub fn sent_timestamp(
    attributes: &HashMap<String, String>,
) -> Option<chrono::DateTime<chrono::Utc>> {
    let millis: i64 = attributes.get("SentTimestamp")?.parse().ok()?;
    chrono::DateTime::from_timestamp_millis(millis)
}

/// Why the finalize function could not do what an event asked; the
/// invocation fails, so EventBridge (or the deploy) tries again.
#[derive(Debug, thiserror::Error)]
pub enum FinalizeError {
    #[error("the scheduled reconciliation failed: {0}")]
    Reconcile(StepError),
    #[error("could not settle from a status change: {0}")]
    StatusChange(String),
    #[error("migrations failed: {0}")]
    Migrate(StoreError),
    #[error("an event that is neither SQS, EventBridge nor a migrate request: {0}")]
    Unrecognised(String),
}

/// The finalize function's event: an SQS batch from the state machine's
/// `Finalize` state (failed messages come back as partial batch failures),
/// an EventBridge execution status change, the reconciliation schedule (an
/// EventBridge "Scheduled Event"), or `{"action": "migrate"}` at deploy time.
pub async fn handle_finalize_event(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    event: Value,
) -> Result<Value, FinalizeError> {
    let handled = finalize_event(engine, orchestrator, event).await;
    write_metrics(&engine.metrics);
    handled
}

async fn finalize_event(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    event: Value,
) -> Result<Value, FinalizeError> {
    if event.get("action").and_then(Value::as_str) == Some("migrate") {
        let applied = engine
            .ledger
            .migrate()
            .await
            .map_err(FinalizeError::Migrate)?;
        tracing::info!(applied, "migrations applied");
        return Ok(json!({"applied": applied}));
    }
    match event.get("detail-type").and_then(Value::as_str) {
        Some("Scheduled Event") => {
            reconcile(engine, orchestrator)
                .await
                .map_err(FinalizeError::Reconcile)?;
            deliver_webhooks(engine).await;
            // Once a minute, what is in flight across the deployment.
            if let Ok((queued, running)) = engine.ledger.open_run_counts().await {
                let gauges = [
                    Gauge::new(RUNS_ACTIVE, queued as f64).with("status", "queued"),
                    Gauge::new(RUNS_ACTIVE, running as f64).with("status", "running"),
                ];
                for line in engine.metrics.take_emf(&gauges) {
                    println!("{line}");
                }
            }
            return Ok(json!({}));
        }
        Some(_) => {
            finalize_status_change(engine, &event)
                .await
                .map_err(|e| FinalizeError::StatusChange(e.to_string()))?;
            deliver_webhooks(engine).await;
            return Ok(json!({}));
        }
        None => {}
    }
    let batch: SqsEvent =
        serde_json::from_value(event).map_err(|e| FinalizeError::Unrecognised(e.to_string()))?;
    let mut response = SqsBatchResponse::default();
    for record in batch.records {
        let id = record.message_id.clone().unwrap_or_default();
        let span = tracing::info_span!("finalize_message", message_id = %id);
        let settled = tracing::Instrument::instrument(
            finalize_message(engine, &record.body.unwrap_or_default()),
            span,
        )
        .await;
        if let Err(error) = settled {
            tracing::warn!(message_id = %id, %error, "finalize message will be delivered again");
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            response.batch_item_failures.push(failure);
        }
    }
    // The runs just settled queued their webhooks as they ended.
    deliver_webhooks(engine).await;
    serde_json::to_value(response).map_err(|e| FinalizeError::Unrecognised(e.to_string()))
}

/// Delivers the webhooks that are due: those of runs that just ended, and
/// (on the schedule) those whose retry time came. A failure is logged, not
/// raised: the outbox keeps them for the next pass.
async fn deliver_webhooks(engine: &Engine) {
    let webhooks = Webhooks::new(engine, WebhookPolicy::default());
    match webhooks.deliver_due(WEBHOOK_BATCH).await {
        Ok(pass) if pass.delivered + pass.failed > 0 => {
            tracing::info!(delivered = pass.delivered, failed = pass.failed, "webhooks")
        }
        Ok(_) => {}
        Err(error) => {
            tracing::warn!(%error, "webhook deliveries failed; the next pass tries again")
        }
    }
}

/// Webhook deliveries attempted per finalize invocation.
const WEBHOOK_BATCH: i64 = 32;

/// The scheduled reconciliation: gives back the hot state of runs that are
/// over, and starts accepted runs whose execution never started.
async fn reconcile(engine: &Engine, orchestrator: &dyn Orchestrator) -> Result<(), StepError> {
    let released = engine.reconcile(ORPHAN_SLOT_GRACE).await?;
    let pass = start_stale_runs(engine, orchestrator, STARTER_GRACE).await?;
    tracing::info!(
        released,
        started = pass.started,
        not_started = pass.failed,
        "reconciled"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_name_what_is_missing_or_wrong() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        let missing = CloudSettings::from_lookup(env(&[])).unwrap_err();
        assert_eq!(
            missing.to_string(),
            "missing setting DATABASE_URL: set it in the function's environment"
        );
        let invalid = CloudSettings::from_lookup(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("OPENAI_BASE_URL", "http://llm"),
            ("AGENTRUN_DB_CONNECTIONS", "many"),
        ]))
        .unwrap_err();
        assert!(invalid.to_string().contains("AGENTRUN_DB_CONNECTIONS"));
        let ok = CloudSettings::from_lookup(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("OPENAI_BASE_URL", "http://llm"),
        ]))
        .unwrap();
        assert_eq!(ok.db_connections, 4);
        assert_eq!(ok.db_statements, StatementMode::Cached);
        let pooled = CloudSettings::from_lookup(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("OPENAI_BASE_URL", "http://llm"),
            ("AGENTRUN_DB_STATEMENTS", "unnamed"),
        ]))
        .unwrap();
        assert_eq!(pooled.db_statements, StatementMode::Unnamed);
        let wrong = CloudSettings::from_lookup(env(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("OPENAI_BASE_URL", "http://llm"),
            ("AGENTRUN_DB_STATEMENTS", "named"),
        ]))
        .unwrap_err();
        assert!(
            wrong.to_string().contains("AGENTRUN_DB_STATEMENTS"),
            "{wrong}"
        );
        assert!(ok.state_machine_arn.is_none());
    }
}
