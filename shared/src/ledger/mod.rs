//! The ledger: PostgreSQL, the durable source of truth in every mode
//! (embedded, emulated cloud, AWS). It is not a port because it has one
//! backend; everything else the engine touches is.

mod accounts;
mod agents;
mod approvals;
mod billing;
mod conn;
mod events;
mod fallback;
mod migrate;
mod runs;
mod steps;
mod teams;
mod tls;
mod webhooks;

pub use teams::{constant_time_eq, IssuedKey, STREAM_TOKEN_SECONDS};

use std::collections::HashMap;

pub use accounts::{AdmissionTerms, KeyInfo, Team, TeamChange};
pub use agents::{AgentPage, AgentVersion};
pub use approvals::{Answered, ApprovalRequest, Resume, WaitToken};
pub use billing::{ModelPrice, ModelUsage, Plan, RunCharge, UsageTotals};

use crate::domain::TeamId;
pub use conn::{Conn, Param, PgArrayOf, PgType, StatementMode, Tx, VERIFY_AFTER_IDLE};
pub use migrate::MIGRATIONS;
pub use runs::{decode_cursor, encode_cursor, input_message, Creation, NewRun, RunFilter, RunPage};
pub use steps::{CommitResult, LlmTurn, StepCommit, StepContext, StepRecord, ToolCallRecord};
pub use webhooks::{AttemptOutcome, AttemptRecord, DeliveryRecord, DueDelivery};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Errors from the ledger. `Unavailable` is worth retrying; `Corrupt` is not.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database unavailable: {0}")]
    Unavailable(String),
    #[error("database rejected the operation: {0}")]
    Rejected(String),
    #[error("ledger data is inconsistent: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Limit(#[from] crate::domain::limits::LimitExceeded),
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(err: tokio_postgres::Error) -> Self {
        match err.code() {
            // Constraint and data errors will fail the same way again.
            Some(code) if code.code().starts_with("23") || code.code().starts_with("22") => {
                StoreError::Rejected(error_chain(&err))
            }
            _ => StoreError::Unavailable(error_chain(&err)),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(error_chain(&err))
    }
}

/// An error's message followed by its causes.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Agent versions by (team, name, version), with their stored size; bounded
/// by bytes, and started over when full.
#[derive(Default)]
pub(crate) struct AgentCache {
    entries: HashMap<(TeamId, String, i32), AgentVersion>,
    bytes: usize,
}

/// The PostgreSQL-backed ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
    statements: StatementMode,
    /// Agent versions are immutable, so a version read once is kept.
    agent_cache: std::sync::Arc<std::sync::Mutex<AgentCache>>,
}

impl Ledger {
    /// Builds a pool (connections are opened lazily) whose statements are
    /// prepared once per connection.
    pub fn connect(database_url: &str, max_connections: usize) -> Result<Self, StoreError> {
        Self::connect_with(database_url, max_connections, StatementMode::Cached)
    }

    /// The same, sending statements as `statements` says.
    pub fn connect_with(
        database_url: &str,
        max_connections: usize,
        statements: StatementMode,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            pool: build_pool(database_url, max_connections, None)?,
            statements,
            agent_cache: Default::default(),
        })
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    pub fn statement_mode(&self) -> StatementMode {
        self.statements
    }

    async fn client(&self) -> Result<Conn, StoreError> {
        Ok(Conn::new(self.pool.get().await?, self.statements))
    }

    /// Cheap liveness probe for `/healthz`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await?;
        Ok(())
    }
}

/// A connection pool for `database_url`; `options` are server settings sent
/// at connect time (e.g. `-c synchronous_commit=off`).
pub fn build_pool(
    database_url: &str,
    max_connections: usize,
    options: Option<&str>,
) -> Result<Pool, StoreError> {
    let tls::Connection { mut config, tls } = tls::connection(database_url)?;
    if let Some(options) = options {
        config.options(options);
    }
    // Keepalives notice a peer that went away while the connection sat idle.
    config
        .keepalives(true)
        .keepalives_idle(std::time::Duration::from_secs(30))
        .keepalives_interval(std::time::Duration::from_secs(10))
        .keepalives_retries(3);
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls {
        Some(tls) => Manager::from_config(config, tls, manager_config),
        None => Manager::from_config(config, NoTls, manager_config),
    };
    // A connection idle for a while is checked before it is handed out (one
    // round trip, only then): its socket may have died meanwhile.
    let verify = deadpool_postgres::Hook::async_fn(|client, metrics| {
        Box::pin(async move {
            if metrics.last_used() > VERIFY_AFTER_IDLE {
                client.simple_query("").await.map_err(|error| {
                    deadpool_postgres::HookError::message(format!(
                        "an idle connection failed its check: {error}"
                    ))
                })?;
            }
            Ok(())
        })
    });
    Pool::builder(manager)
        .max_size(max_connections)
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .wait_timeout(Some(std::time::Duration::from_secs(30)))
        .create_timeout(Some(std::time::Duration::from_secs(10)))
        .pre_recycle(verify)
        .build()
        .map_err(|e| StoreError::Rejected(e.to_string()))
}

/// Creates the database named in `database_url` when it does not exist yet,
/// connecting to the server's `postgres` database to do so.
pub async fn ensure_database(database_url: &str) -> Result<(), StoreError> {
    let tls::Connection { config, tls } = tls::connection(database_url)?;
    let Some(name) = config.get_dbname().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = config.clone();
    admin.dbname("postgres");
    let (client, driver) = match tls {
        Some(tls) => {
            let (client, connection) = admin.connect(tls).await?;
            (client, tokio::spawn(connection))
        }
        None => {
            let (client, connection) = admin.connect(NoTls).await?;
            (client, tokio::spawn(connection))
        }
    };
    let exists = client
        .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
        .await?
        .is_some();
    if !exists {
        let quoted = name.replace('"', "\"\"");
        if let Err(err) = client
            .batch_execute(&format!("CREATE DATABASE \"{quoted}\""))
            .await
        {
            // Another process may have created it in the meantime.
            if err.code() != Some(&tokio_postgres::error::SqlState::DUPLICATE_DATABASE) {
                return Err(err.into());
            }
        }
    }
    drop(client);
    driver.abort();
    Ok(())
}
