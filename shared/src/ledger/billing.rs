//! Prices, plans and what runs cost. Money is integer micro-units.

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use super::{Ledger, StoreError};
use crate::domain::team::exact_to_micros;
use crate::domain::{Micros, RunId, TeamId};

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelPrice {
    pub model: String,
    #[schema(value_type = i64)]
    pub input_micros_per_mtok: Micros,
    #[schema(value_type = i64)]
    pub output_micros_per_mtok: Micros,
    pub updated_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct Plan {
    pub name: String,
    #[schema(value_type = i64)]
    pub run_fee_micros: Micros,
}

/// One line of a statement: a run and what it cost.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct RunCharge {
    pub run_id: RunId,
    pub created_at: DateTime<Utc>,
    pub agent: String,
    pub version: i32,
    pub status: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub llm_calls: i32,
    #[schema(value_type = i64)]
    pub fee_micros: Micros,
    #[schema(value_type = i64)]
    pub token_cost_micros: Micros,
    #[schema(value_type = i64)]
    pub cost_micros: Micros,
}

/// Runs, tokens and money summed over some runs (a day, a statement).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct UsageTotals {
    pub runs: i64,
    pub input_tokens: i64,
    pub output_tokens: i64,
    pub total_tokens: i64,
    pub llm_calls: i64,
    #[schema(value_type = i64)]
    pub fee_micros: Micros,
    #[schema(value_type = i64)]
    pub token_cost_micros: Micros,
    #[schema(value_type = i64)]
    pub cost_micros: Micros,
}

impl UsageTotals {
    pub fn add(&mut self, other: &UsageTotals) {
        self.runs += other.runs;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.total_tokens += other.total_tokens;
        self.llm_calls += other.llm_calls;
        self.fee_micros += other.fee_micros;
        self.token_cost_micros += other.token_cost_micros;
        self.cost_micros += other.cost_micros;
    }
}

impl From<&RunCharge> for UsageTotals {
    fn from(charge: &RunCharge) -> Self {
        Self {
            runs: 1,
            input_tokens: charge.input_tokens,
            output_tokens: charge.output_tokens,
            total_tokens: charge.input_tokens + charge.output_tokens,
            llm_calls: i64::from(charge.llm_calls),
            fee_micros: charge.fee_micros,
            token_cost_micros: charge.token_cost_micros,
            cost_micros: charge.cost_micros,
        }
    }
}

/// A run's usage of one model.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ModelUsage {
    pub model: String,
    pub input_tokens: i64,
    pub output_tokens: i64,
    /// Exact cost in 1e-12 units; `RunCharge` rounds the run's sum once.
    #[serde(skip)]
    #[schema(ignore)]
    pub cost_exact: i64,
}

impl Ledger {
    pub async fn set_price(
        &self,
        model: &str,
        input: Micros,
        output: Micros,
    ) -> Result<ModelPrice, StoreError> {
        let row = self
            .client()
            .await?
            .q_one(
                "INSERT INTO model_prices (model, input_micros_per_mtok, output_micros_per_mtok)
                 VALUES ($1, $2, $3)
                 ON CONFLICT (model) DO UPDATE SET input_micros_per_mtok = EXCLUDED.input_micros_per_mtok,
                     output_micros_per_mtok = EXCLUDED.output_micros_per_mtok, updated_at = now()
                 RETURNING model, input_micros_per_mtok, output_micros_per_mtok, updated_at",
                &[&model, &input, &output],
            )
            .await?;
        Ok(ModelPrice {
            model: row.get(0),
            input_micros_per_mtok: row.get(1),
            output_micros_per_mtok: row.get(2),
            updated_at: row.get(3),
        })
    }

    pub async fn list_prices(&self) -> Result<Vec<ModelPrice>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT model, input_micros_per_mtok, output_micros_per_mtok, updated_at
                 FROM model_prices ORDER BY model",
                &[],
            )
            .await?
            .iter()
            .map(|row| ModelPrice {
                model: row.get(0),
                input_micros_per_mtok: row.get(1),
                output_micros_per_mtok: row.get(2),
                updated_at: row.get(3),
            })
            .collect())
    }

    pub async fn set_plan(&self, name: &str, run_fee_micros: Micros) -> Result<Plan, StoreError> {
        self.client()
            .await?
            .exec(
                "INSERT INTO plans (name, run_fee_micros) VALUES ($1, $2)
                 ON CONFLICT (name) DO UPDATE SET run_fee_micros = EXCLUDED.run_fee_micros, updated_at = now()",
                &[&name, &run_fee_micros],
            )
            .await?;
        Ok(Plan {
            name: name.to_owned(),
            run_fee_micros,
        })
    }

    pub async fn list_plans(&self) -> Result<Vec<Plan>, StoreError> {
        Ok(self
            .client()
            .await?
            .q("SELECT name, run_fee_micros FROM plans ORDER BY name", &[])
            .await?
            .iter()
            .map(|row| Plan {
                name: row.get(0),
                run_fee_micros: row.get(1),
            })
            .collect())
    }

    /// A team's runs created in `[from, to)` after the cursor `after`
    /// (created_at, id), oldest first, with their cost; at most `limit`.
    pub async fn run_charges(
        &self,
        team: TeamId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
        after: Option<(DateTime<Utc>, RunId)>,
        limit: i64,
    ) -> Result<Vec<RunCharge>, StoreError> {
        let (after_at, after_id) = match after {
            Some((at, id)) => (Some(at), Some(id.0)),
            None => (None, None),
        };
        Ok(self
            .client()
            .await?
            .q(
                "SELECT r.id, r.created_at, r.agent, r.version, r.status, r.input_tokens,
                        r.output_tokens, r.llm_calls, r.run_fee_micros,
                        coalesce((SELECT sum(cost_exact) FROM run_usage u WHERE u.run_id = r.id), 0)::bigint
                 FROM runs r
                 WHERE r.team_id = $1 AND r.created_at >= $2 AND r.created_at < $3
                   AND ($4::timestamptz IS NULL OR (r.created_at, r.id) > ($4, $5))
                 ORDER BY r.created_at, r.id
                 LIMIT $6",
                &[&team.0, &from, &to, &after_at, &after_id, &limit],
            )
            .await?
            .iter()
            .map(|row| {
                let fee_micros: i64 = row.get(8);
                let token_cost_micros = exact_to_micros(row.get(9));
                RunCharge {
                    run_id: RunId(row.get(0)),
                    created_at: row.get(1),
                    agent: row.get(2),
                    version: row.get(3),
                    status: row.get(4),
                    input_tokens: row.get(5),
                    output_tokens: row.get(6),
                    llm_calls: row.get(7),
                    fee_micros,
                    token_cost_micros,
                    cost_micros: fee_micros + token_cost_micros,
                }
            })
            .collect())
    }

    /// Usage per UTC day of acceptance for a team's runs in `[from, to)`,
    /// summed in the database; each run's token cost is rounded on its own,
    /// exactly as on the statement.
    pub async fn daily_usage(
        &self,
        team: TeamId,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<(NaiveDate, UsageTotals)>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT (r.created_at AT TIME ZONE 'UTC')::date, count(*)::bigint,
                        sum(r.input_tokens)::bigint, sum(r.output_tokens)::bigint,
                        sum(r.llm_calls)::bigint, sum(r.run_fee_micros)::bigint,
                        sum((coalesce(u.cost_exact, 0) + 500000) / 1000000)::bigint
                 FROM runs r
                 LEFT JOIN LATERAL (SELECT sum(cost_exact)::bigint AS cost_exact
                                    FROM run_usage WHERE run_id = r.id) u ON true
                 WHERE r.team_id = $1 AND r.created_at >= $2 AND r.created_at < $3
                 GROUP BY 1 ORDER BY 1",
                &[&team.0, &from, &to],
            )
            .await?
            .iter()
            .map(|row| {
                let (input_tokens, output_tokens): (i64, i64) = (row.get(2), row.get(3));
                let (fee_micros, token_cost_micros): (i64, i64) = (row.get(5), row.get(6));
                let totals = UsageTotals {
                    runs: row.get(1),
                    input_tokens,
                    output_tokens,
                    total_tokens: input_tokens + output_tokens,
                    llm_calls: row.get(4),
                    fee_micros,
                    token_cost_micros,
                    cost_micros: fee_micros + token_cost_micros,
                };
                (row.get(0), totals)
            })
            .collect())
    }

    /// A run's usage per model.
    pub async fn run_usage(&self, run: RunId) -> Result<Vec<ModelUsage>, StoreError> {
        Ok(self
            .client()
            .await?
            .q(
                "SELECT model, input_tokens, output_tokens, cost_exact FROM run_usage
                 WHERE run_id = $1 ORDER BY model",
                &[&run.0],
            )
            .await?
            .iter()
            .map(|row| ModelUsage {
                model: row.get(0),
                input_tokens: row.get(1),
                output_tokens: row.get(2),
                cost_exact: row.get(3),
            })
            .collect())
    }
}
