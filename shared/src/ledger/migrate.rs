//! Numbered SQL migrations from `migrations/`, applied in order, each once,
//! in its own transaction, under an advisory lock so concurrent starters wait.

use super::{Ledger, StoreError};

/// (version, name, SQL). Add new files here in order.
pub const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "ledger",
        include_str!("../../../migrations/V1__ledger.sql"),
    ),
    (
        2,
        "hot_store",
        include_str!("../../../migrations/V2__hot_store.sql"),
    ),
    (
        3,
        "accounts",
        include_str!("../../../migrations/V3__accounts.sql"),
    ),
    (4, "edge", include_str!("../../../migrations/V4__edge.sql")),
    (
        5,
        "key_expiry",
        include_str!("../../../migrations/V5__key_expiry.sql"),
    ),
    (
        6,
        "failure_modes",
        include_str!("../../../migrations/V6__failure_modes.sql"),
    ),
    (
        7,
        "slot_counts",
        include_str!("../../../migrations/V7__slot_counts.sql"),
    ),
    (
        8,
        "webhooks",
        include_str!("../../../migrations/V8__webhooks.sql"),
    ),
    (
        9,
        "wind_down",
        include_str!("../../../migrations/V9__wind_down.sql"),
    ),
    (
        10,
        "threads",
        include_str!("../../../migrations/V10__threads.sql"),
    ),
    (
        11,
        "approvals",
        include_str!("../../../migrations/V11__approvals.sql"),
    ),
    (
        12,
        "stream_tokens",
        include_str!("../../../migrations/V12__stream_tokens.sql"),
    ),
];

const MIGRATION_LOCK: i64 = 0x6167_656e_7472_756e; // "agentrun"

impl Ledger {
    /// Applies pending migrations; returns how many ran.
    pub async fn migrate(&self) -> Result<usize, StoreError> {
        let mut client = self.client().await?;
        client
            .exec("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        let result = apply_pending(&mut client).await;
        client
            .exec("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await?;
        result
    }
}

async fn apply_pending(client: &mut super::Conn) -> Result<usize, StoreError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
    let applied: Vec<i32> = client
        .q("SELECT version FROM schema_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut count = 0;
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        let tx = client.transaction().await?;
        tx.batch_execute(sql).await?;
        tx.exec(
            "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
            &[version, name],
        )
        .await?;
        tx.commit().await?;
        tracing::info!(version, name, "applied migration");
        count += 1;
    }
    Ok(count)
}
