//! Team administration: teams with limits and kill switches, their keys,
//! agent kill switches, and what run admission needs to know.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Ledger, StoreError};
use crate::domain::{Micros, TeamId, TeamLimits};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
#[schema(as = TeamRecord)]
pub struct Team {
    pub id: TeamId,
    pub name: String,
    pub plan: String,
    pub limits: TeamLimits,
    /// Set while an operator has switched the team off.
    pub disabled_reason: Option<String>,
    /// Agents switched off, with the reason.
    pub disabled_agents: BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
}

/// A change to a team; absent fields stay as they are.
#[derive(Clone, Debug, Default)]
pub struct TeamChange {
    pub plan: Option<String>,
    pub limits: Option<TeamLimits>,
    /// `Some(Some(reason))` switches the team off, `Some(None)` on.
    pub disabled: Option<Option<String>>,
    /// Per agent: `Some(reason)` switches it off, `None` on.
    pub agents: BTreeMap<String, Option<String>>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub id: Uuid,
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What accepting a new run for (team, agent) depends on.
#[derive(Clone, Debug)]
pub struct AdmissionTerms {
    pub limits: TeamLimits,
    pub team_disabled: Option<String>,
    pub agent_disabled: Option<String>,
    pub run_fee_micros: Micros,
}

const TEAM_COLUMNS: &str = "t.id, t.name, t.plan, t.max_concurrent_runs, t.daily_token_budget,
    t.runs_per_second, t.run_burst, t.disabled_reason, t.created_at,
    coalesce((SELECT jsonb_object_agg(agent, disabled_reason) FROM agent_switches s
              WHERE s.team_id = t.id), '{}'::jsonb) AS disabled_agents";

fn limits_from_row(row: &Row) -> TeamLimits {
    TeamLimits {
        max_concurrent_runs: row.get("max_concurrent_runs"),
        daily_token_budget: row.get("daily_token_budget"),
        runs_per_second: row.get("runs_per_second"),
        run_burst: row.get("run_burst"),
    }
}

fn team_from_row(row: &Row) -> Team {
    Team {
        id: TeamId(row.get("id")),
        name: row.get("name"),
        plan: row.get("plan"),
        limits: limits_from_row(row),
        disabled_reason: row.get("disabled_reason"),
        disabled_agents: serde_json::from_value(row.get("disabled_agents")).unwrap_or_default(),
        created_at: row.get("created_at"),
    }
}

impl Ledger {
    /// Creates a team; `None` when the name is taken.
    pub async fn create_team(
        &self,
        name: &str,
        plan: &str,
        limits: &TeamLimits,
    ) -> Result<Option<Team>, StoreError> {
        let client = self.client().await?;
        let inserted = client
            .exec(
                "INSERT INTO teams (id, name, plan, max_concurrent_runs, daily_token_budget,
                                    runs_per_second, run_burst)
                 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (name) DO NOTHING",
                &[
                    &TeamId::new().0,
                    &name,
                    &plan,
                    &limits.max_concurrent_runs,
                    &limits.daily_token_budget,
                    &limits.runs_per_second,
                    &limits.run_burst,
                ],
            )
            .await?;
        if inserted == 0 {
            return Ok(None);
        }
        let row = client
            .q_one(
                &format!("SELECT {TEAM_COLUMNS} FROM teams t WHERE t.name = $1"),
                &[&name],
            )
            .await?;
        Ok(Some(team_from_row(&row)))
    }

    pub async fn team(&self, team: TeamId) -> Result<Option<Team>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                &format!("SELECT {TEAM_COLUMNS} FROM teams t WHERE t.id = $1"),
                &[&team.0],
            )
            .await?;
        Ok(row.as_ref().map(team_from_row))
    }

    pub async fn list_teams(&self) -> Result<Vec<Team>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                &format!("SELECT {TEAM_COLUMNS} FROM teams t ORDER BY t.created_at, t.id"),
                &[],
            )
            .await?
            .iter()
            .map(team_from_row)
            .collect())
    }

    /// Applies a change in one transaction; `None` when the team does not exist.
    pub async fn change_team(
        &self,
        team: TeamId,
        change: &TeamChange,
    ) -> Result<Option<Team>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let exists = tx
            .q_opt("SELECT 1 FROM teams WHERE id = $1 FOR UPDATE", &[&team.0])
            .await?
            .is_some();
        if !exists {
            return Ok(None);
        }
        if let Some(plan) = &change.plan {
            tx.exec("UPDATE teams SET plan = $2 WHERE id = $1", &[&team.0, plan])
                .await?;
        }
        if let Some(limits) = &change.limits {
            tx.exec(
                "UPDATE teams SET max_concurrent_runs = $2, daily_token_budget = $3,
                     runs_per_second = $4, run_burst = $5 WHERE id = $1",
                &[
                    &team.0,
                    &limits.max_concurrent_runs,
                    &limits.daily_token_budget,
                    &limits.runs_per_second,
                    &limits.run_burst,
                ],
            )
            .await?;
        }
        if let Some(disabled) = &change.disabled {
            tx.exec(
                "UPDATE teams SET disabled_reason = $2 WHERE id = $1",
                &[&team.0, disabled],
            )
            .await?;
        }
        for (agent, switch) in &change.agents {
            match switch {
                Some(reason) => {
                    tx.exec(
                        "INSERT INTO agent_switches (team_id, agent, disabled_reason) VALUES ($1, $2, $3)
                         ON CONFLICT (team_id, agent) DO UPDATE SET disabled_reason = EXCLUDED.disabled_reason",
                        &[&team.0, agent, reason],
                    )
                    .await?
                }
                None => {
                    tx.exec(
                        "DELETE FROM agent_switches WHERE team_id = $1 AND agent = $2",
                        &[&team.0, agent],
                    )
                    .await?
                }
            };
        }
        let row = tx
            .q_one(
                &format!("SELECT {TEAM_COLUMNS} FROM teams t WHERE t.id = $1"),
                &[&team.0],
            )
            .await?;
        tx.commit().await?;
        Ok(Some(team_from_row(&row)))
    }

    pub async fn list_keys(&self, team: TeamId) -> Result<Vec<KeyInfo>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT id, prefix, created_at, revoked_at, expires_at FROM api_keys WHERE team_id = $1
                 ORDER BY created_at, id",
                &[&team.0],
            )
            .await?
            .iter()
            .map(|row| KeyInfo {
                id: row.get(0),
                prefix: row.get(1),
                created_at: row.get(2),
                revoked_at: row.get(3),
                expires_at: row.get(4),
            })
            .collect())
    }

    /// Revokes a key (at once: every request looks the key up). `false` when
    /// there is no such key; revoking twice is fine.
    pub async fn revoke_key(&self, key: Uuid) -> Result<bool, StoreError> {
        Ok(self
            .client()
            .await?
            .exec(
                "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1",
                &[&key],
            )
            .await?
            == 1)
    }

    pub async fn admission_terms(
        &self,
        team: TeamId,
        agent: &str,
    ) -> Result<Option<AdmissionTerms>, StoreError> {
        let row = self
            .client()
            .await?
            .q_opt(
                "SELECT t.max_concurrent_runs, t.daily_token_budget, t.runs_per_second, t.run_burst,
                        t.disabled_reason,
                        (SELECT disabled_reason FROM agent_switches WHERE team_id = t.id AND agent = $2)
                            AS agent_disabled,
                        p.run_fee_micros
                 FROM teams t JOIN plans p ON p.name = t.plan WHERE t.id = $1",
                &[&team.0, &agent],
            )
            .await?;
        Ok(row.map(|row| AdmissionTerms {
            limits: limits_from_row(&row),
            team_disabled: row.get("disabled_reason"),
            agent_disabled: row.get("agent_disabled"),
            run_fee_micros: row.get("run_fee_micros"),
        }))
    }
}
