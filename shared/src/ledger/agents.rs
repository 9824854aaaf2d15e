//! Agent configurations: immutable, numbered versions per team and name.

use crate::domain::ErrorCode;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;

use super::{Ledger, StoreError};
use crate::domain::limits::{LimitExceeded, MAX_AGENTS_PER_TEAM, MAX_VERSIONS_PER_AGENT};
use crate::domain::{AgentSpec, TeamId};

#[derive(Clone, Debug, Serialize)]
pub struct AgentVersion {
    pub name: String,
    pub version: i32,
    pub spec: AgentSpec,
    pub created_at: DateTime<Utc>,
}

/// Bytes of agent specs kept in memory before the cache starts over.
const AGENT_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// One page of a team's agents (latest version of each, by name).
pub struct AgentPage {
    pub agents: Vec<AgentVersion>,
    /// The name to continue after, when there may be more.
    pub next_cursor: Option<String>,
}

fn agent_from_row(row: &Row) -> Result<AgentVersion, StoreError> {
    let spec = serde_json::from_value(row.get("spec"))
        .map_err(|e| StoreError::Corrupt(format!("stored agent spec does not parse: {e}")))?;
    Ok(AgentVersion {
        name: row.get("name"),
        version: row.get("version"),
        spec,
        created_at: row.get("created_at"),
    })
}

impl Ledger {
    /// Stores `spec` as the next version of `name`, unless it equals the latest
    /// version; returns the version and whether it is new.
    pub async fn put_agent(
        &self,
        team: TeamId,
        name: &str,
        spec: &AgentSpec,
    ) -> Result<(AgentVersion, bool), StoreError> {
        let digest = spec.digest();
        let spec_json = serde_json::to_value(spec)
            .map_err(|e| StoreError::Rejected(format!("spec does not serialize: {e}")))?;
        let client = self.client().await?;
        // Two writers may race for the same next version; the primary key
        // decides and the loser tries again.
        for _ in 0..5 {
            let latest = client
                .q_opt(
                    "SELECT name, version, spec, spec_hash, created_at FROM agent_configs
                     WHERE team_id = $1 AND name = $2 ORDER BY version DESC LIMIT 1",
                    &[&team.0, &name],
                )
                .await?;
            let next_version = match &latest {
                Some(row) if row.get::<_, String>("spec_hash") == digest => {
                    return Ok((agent_from_row(row)?, false));
                }
                Some(row) => row.get::<_, i32>("version") + 1,
                None => {
                    let agents: i64 = client
                        .q_one(
                            "SELECT count(DISTINCT name) FROM agent_configs WHERE team_id = $1",
                            &[&team.0],
                        )
                        .await?
                        .get(0);
                    if agents >= MAX_AGENTS_PER_TEAM {
                        return Err(LimitExceeded::new(
                            ErrorCode::TooManyAgents,
                            "name",
                            MAX_AGENTS_PER_TEAM,
                            format!("a team may have at most {MAX_AGENTS_PER_TEAM} agents"),
                        )
                        .into());
                    }
                    1
                }
            };
            if next_version > MAX_VERSIONS_PER_AGENT {
                return Err(LimitExceeded::new(
                    ErrorCode::TooManyVersions,
                    "name",
                    MAX_VERSIONS_PER_AGENT,
                    format!("an agent may have at most {MAX_VERSIONS_PER_AGENT} versions"),
                )
                .into());
            }
            let inserted = client
                .q_opt(
                    "INSERT INTO agent_configs (team_id, name, version, spec, spec_hash)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT DO NOTHING
                     RETURNING name, version, spec, created_at",
                    &[&team.0, &name, &next_version, &spec_json, &digest],
                )
                .await?;
            if let Some(row) = inserted {
                return Ok((agent_from_row(&row)?, true));
            }
        }
        Err(StoreError::Unavailable(
            "too many concurrent writers for this agent".to_owned(),
        ))
    }

    /// A version of an agent, or its latest when `version` is `None`.
    pub async fn get_agent(
        &self,
        team: TeamId,
        name: &str,
        version: Option<i32>,
    ) -> Result<Option<AgentVersion>, StoreError> {
        if let Some(version) = version {
            let key = (team, name.to_owned(), version);
            if let Some(hit) = self
                .agent_cache
                .lock()
                .ok()
                .and_then(|c| c.entries.get(&key).cloned())
            {
                return Ok(Some(hit));
            }
        }
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT name, version, spec, created_at, octet_length(spec::text) AS size
                 FROM agent_configs
                 WHERE team_id = $1 AND name = $2 AND ($3::int IS NULL OR version = $3)
                 ORDER BY version DESC LIMIT 1",
                &[&team.0, &name, &version],
            )
            .await?;
        let found = row.as_ref().map(agent_from_row).transpose()?;
        if let (Some(found), Some(row), Ok(mut cache)) = (&found, &row, self.agent_cache.lock()) {
            // In memory a spec takes a few times its text; count it so.
            let size = 4 * row.get::<_, i32>("size").max(0) as usize;
            if cache.bytes + size > AGENT_CACHE_BYTES {
                cache.entries.clear();
                cache.bytes = 0;
            }
            let key = (team, found.name.clone(), found.version);
            if cache.entries.insert(key, found.clone()).is_none() {
                cache.bytes += size;
            }
        }
        Ok(found)
    }

    /// The latest version of each of a team's agents, by name, `limit` at a
    /// time after the name `after`.
    pub async fn list_agents(
        &self,
        team: TeamId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<AgentPage, StoreError> {
        let mut agents = self
            .client()
            .await?
            .q(
                "SELECT DISTINCT ON (name) name, version, spec, created_at FROM agent_configs
                 WHERE team_id = $1 AND ($2::text IS NULL OR name > $2)
                 ORDER BY name, version DESC LIMIT $3",
                &[&team.0, &after, &(limit + 1)],
            )
            .await?
            .iter()
            .map(agent_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        let next_cursor = if agents.len() as i64 > limit {
            agents.truncate(limit as usize);
            agents.last().map(|a| a.name.clone())
        } else {
            None
        };
        Ok(AgentPage {
            agents,
            next_cursor,
        })
    }
}
