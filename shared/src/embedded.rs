//! The embedded mode: the whole platform in one process on PostgreSQL
//! (`agentrun dev`, and the end-to-end tests).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;

use crate::adapters::anthropic::AnthropicClient;
use crate::adapters::degraded::Degradable;
use crate::adapters::in_process::{BroadcastFeed, EmbeddedOrchestrator};
use crate::adapters::llm_http::ProviderSettings;
use crate::adapters::openai::OpenAiClient;
use crate::adapters::postgres::PgHotStore;
use crate::api::{router, AppState, StreamGate, StreamLimits};
use crate::domain::{AgentName, AgentSpec, TeamId};
use crate::engine::{CircuitSettings, Circuits, Engine, ToolRunner, ORPHAN_SLOT_GRACE};

use crate::ledger::{ensure_database, Ledger, StoreError};
use crate::outbound::OutboundAllow;
use crate::policy::StepPolicy;
use crate::ports::{LlmClients, LlmError};
use crate::secret::Secret;
use crate::starter::{start_stale_runs, STARTER_GRACE};
use crate::webhooks::{WebhookPolicy, Webhooks};

/// How often hot state is checked against the ledger.
const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// How often due webhook deliveries are looked for, and how many at once.
const WEBHOOKS_EVERY: Duration = Duration::from_secs(1);
const WEBHOOK_BATCH: i64 = 64;

#[derive(Clone, Debug)]
pub struct EmbeddedSettings {
    pub database_url: Secret,
    /// Where the hot store's tables are, when not with the ledger.
    pub hot_database_url: Option<Secret>,
    /// PostgreSQL connections in all (ledger and hot store).
    pub max_db_connections: usize,
    /// The OpenAI-compatible provider.
    pub llm: ProviderSettings,
    /// The Anthropic provider (its public API unless set).
    pub anthropic: ProviderSettings,
    pub policy: StepPolicy,
    /// Steps executing at once across all runs. A step mostly waits on its
    /// provider, so this guards memory only (the provider's own rate limits
    /// protect the provider); the database pool bounds the work on it.
    pub max_concurrent_steps: usize,
    /// The operator's key for `/v1/admin`; `None` turns the admin API off.
    pub admin_key: Option<Secret>,
    /// How often the starter looks for accepted runs whose start was lost.
    pub starter_interval: Duration,
    /// Internal destinations HTTP tools may reach (none by default).
    pub outbound_allow: OutboundAllow,
    /// Bounds on open event streams.
    pub stream_limits: StreamLimits,
    /// When webhook deliveries are tried again.
    pub webhooks: WebhookPolicy,
}

impl EmbeddedSettings {
    pub fn new(database_url: impl Into<String>, llm: ProviderSettings) -> Self {
        Self {
            anthropic: ProviderSettings::new(crate::adapters::anthropic::DEFAULT_BASE_URL),
            database_url: Secret::new(database_url),
            hot_database_url: None,
            max_db_connections: 32,
            llm,
            policy: StepPolicy::default(),
            max_concurrent_steps: 100_000,
            admin_key: None,
            starter_interval: Duration::from_secs(2),
            outbound_allow: OutboundAllow::none(),
            stream_limits: StreamLimits::default(),
            webhooks: WebhookPolicy::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Llm(#[from] LlmError),
    #[error("cannot read agent configs: {0}")]
    Agents(String),
}

/// A started embedded platform.
pub struct Embedded {
    pub engine: Engine,
    pub orchestrator: Arc<EmbeddedOrchestrator>,
    admin_key: Option<Arc<str>>,
    starter_interval: Duration,
    stream_limits: StreamLimits,
    webhooks: Webhooks,
}

impl Embedded {
    /// Creates the database if needed, applies migrations and wires the
    /// in-process adapters. Call [`Embedded::resume`] once serving.
    pub async fn start(settings: EmbeddedSettings) -> Result<Self, EmbeddedError> {
        let database_url = settings.database_url.expose();
        ensure_database(database_url).await?;
        // A quarter of the connections serve the hot store, the rest the ledger.
        let hot_connections = (settings.max_db_connections / 4).max(2);
        let ledger = Ledger::connect(
            database_url,
            settings
                .max_db_connections
                .saturating_sub(hot_connections)
                .max(2),
        )?;
        ledger.migrate().await?;
        let hot = Arc::new(PgHotStore::connect(
            settings
                .hot_database_url
                .as_ref()
                .map_or(database_url, Secret::expose),
            hot_connections,
        )?);
        let engine = Engine {
            hot: Arc::new(Degradable::new(hot, ledger.clone())),
            ledger,
            llm: LlmClients {
                openai: Arc::new(OpenAiClient::new(settings.llm.clone())?),
                anthropic: Arc::new(AnthropicClient::new(settings.anthropic.clone())?),
            },
            feed: Arc::new(BroadcastFeed::new()),
            tools: ToolRunner::new(settings.outbound_allow.clone()),
            schemas: Default::default(),
            circuits: Circuits::new(CircuitSettings::from_policy(&settings.policy)),
            metrics: Default::default(),
        };
        let orchestrator = EmbeddedOrchestrator::new(
            engine.clone(),
            settings.policy.clone(),
            settings.max_concurrent_steps,
        );
        let webhooks = Webhooks::new(&engine, settings.webhooks.clone());
        Ok(Self {
            engine,
            orchestrator,
            webhooks,
            admin_key: settings.admin_key.map(|k| Arc::from(k.expose())),
            starter_interval: settings.starter_interval,
            stream_limits: settings.stream_limits,
        })
    }

    pub fn router(&self) -> Router {
        let mut state = AppState::new(
            self.engine.clone(),
            self.orchestrator.clone(),
            self.admin_key.clone(),
        );
        state.streams = StreamGate::new(self.stream_limits);
        state.serve_metrics = true;
        router(state)
    }

    /// Reconciles hot state with the ledger, resumes the runs a previous
    /// process left unfinished, and from then on runs the background work:
    /// the starter (every `starter_interval`, it starts accepted runs whose
    /// start was lost), webhook deliveries (every second) and, every minute, the
    /// reconciliation of hot state with the ledger and the pick-up of any
    /// unfinished run nobody is driving (one whose driver gave up while the
    /// database was down).
    pub async fn resume(&self) -> Result<usize, EmbeddedError> {
        // Before any work: give back what a run that finished just before a
        // crash still holds (the release after its commit never happened).
        match self.engine.reconcile(ORPHAN_SLOT_GRACE).await {
            Ok(released) if released > 0 => {
                tracing::info!(
                    released,
                    "released the hot state of runs finished before a restart"
                )
            }
            Ok(_) => {}
            Err(error) => {
                tracing::warn!(%error, "reconciliation at start-up failed; it runs again every minute")
            }
        }
        let resumed = self
            .orchestrator
            .resume_unfinished()
            .await
            .map_err(|e| EmbeddedError::Store(StoreError::Unavailable(e.0)))?;
        let engine = self.engine.clone();
        let orchestrator = self.orchestrator.clone();
        let starter_interval = self.starter_interval;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(starter_interval);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            // The starter's pass is also the database's pulse: once it works
            // again after failing, the hot state is reconciled at once (a
            // crash can undo releases that were acknowledged but not yet
            // flushed), not at the next minute's reconciliation.
            let mut database_was_down = false;
            loop {
                every.tick().await;
                match start_stale_runs(&engine, orchestrator.as_ref(), STARTER_GRACE).await {
                    Ok(_) if database_was_down => {
                        database_was_down = false;
                        match engine.reconcile(ORPHAN_SLOT_GRACE).await {
                            Ok(_) => {}
                            Err(error) => {
                                database_was_down = true;
                                tracing::warn!(%error, "reconciliation after the outage failed; will try again");
                            }
                        }
                    }
                    Ok(_) => {}
                    Err(error) => {
                        database_was_down = true;
                        tracing::warn!(%error, "the starter failed; will try again");
                    }
                }
            }
        });
        let webhooks = self.webhooks.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(WEBHOOKS_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(error) = webhooks.deliver_due(WEBHOOK_BATCH).await {
                    tracing::warn!(%error, "webhook deliveries failed; will try again");
                }
            }
        });
        let engine = self.engine.clone();
        let orchestrator = self.orchestrator.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(RECONCILE_EVERY);
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(error) = engine.reconcile(ORPHAN_SLOT_GRACE).await {
                    tracing::warn!(%error, "reconciliation failed; will try again");
                }
                if let Err(error) = orchestrator.resume_unfinished().await {
                    tracing::warn!(%error, "resuming unfinished runs failed; will try again");
                }
            }
        });
        Ok(resumed)
    }
}

/// Loads every `<agent-name>.json` in `dir` as an agent spec for `team`;
/// an unchanged file makes no new version. Returns (name, version, new).
pub async fn load_agent_dir(
    ledger: &Ledger,
    team: TeamId,
    dir: &Path,
) -> Result<Vec<(String, i32, bool)>, EmbeddedError> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| EmbeddedError::Agents(format!("{}: {e}", dir.display())))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    let mut loaded = Vec::new();
    for path in paths {
        let where_ = path.display().to_string();
        let stem = path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        let name =
            AgentName::parse(stem).map_err(|e| EmbeddedError::Agents(format!("{where_}: {e}")))?;
        let text = std::fs::read_to_string(&path)
            .map_err(|e| EmbeddedError::Agents(format!("{where_}: {e}")))?;
        let spec: AgentSpec = serde_json::from_str(&text)
            .map_err(|e| EmbeddedError::Agents(format!("{where_}: {e}")))?;
        spec.validate().map_err(|problems| {
            EmbeddedError::Agents(format!("{where_}: {}", problems.join("; ")))
        })?;
        let (version, created) = ledger.put_agent(team, name.as_str(), &spec).await?;
        loaded.push((version.name, version.version, created));
    }
    Ok(loaded)
}
