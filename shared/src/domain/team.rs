//! Teams: the paying tenants, with their limits.

use serde::{Deserialize, Serialize};

/// Limits an operator sets per team.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
#[schema(default)]
pub struct TeamLimits {
    /// Runs accepted and not yet finished, at most.
    #[schema(minimum = 1, maximum = 100000)]
    pub max_concurrent_runs: i32,
    /// Tokens (input + output) per UTC day across all runs.
    #[schema(minimum = 1, maximum = 9223372036854775807_i64)]
    pub daily_token_budget: i64,
    /// Sustained rate of `POST /v1/runs`.
    #[schema(exclusive_minimum = 0, maximum = 1000000)]
    pub runs_per_second: f64,
    /// Requests allowed in a burst above that rate.
    #[schema(minimum = 1, maximum = 1000000)]
    pub run_burst: i32,
}

impl Default for TeamLimits {
    fn default() -> Self {
        Self {
            max_concurrent_runs: 10,
            daily_token_budget: 5_000_000,
            runs_per_second: 10.0,
            run_burst: 20,
        }
    }
}

impl TeamLimits {
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        if !(1..=100_000).contains(&self.max_concurrent_runs) {
            problems.push("max_concurrent_runs must be between 1 and 100000".to_owned());
        }
        if self.daily_token_budget < 1 {
            problems.push("daily_token_budget must be positive".to_owned());
        }
        if !(self.runs_per_second.is_finite()
            && self.runs_per_second > 0.0
            && self.runs_per_second <= 1_000_000.0)
        {
            problems.push("runs_per_second must be a positive number up to 1000000".to_owned());
        }
        if !(1..=1_000_000).contains(&self.run_burst) {
            problems.push("run_burst must be between 1 and 1000000".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// Money is integer micro-units of the currency (1 = 0.000001).
pub type Micros = i64;

/// Token cost in 1e-12 units (tokens × micros per million tokens) rounded
/// half up to micros. Rounding happens once per run, never per call.
pub fn exact_to_micros(exact: i64) -> Micros {
    (exact + 500_000).div_euclid(1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_validated() {
        assert!(TeamLimits::default().validate().is_ok());
        let bad = TeamLimits {
            max_concurrent_runs: 0,
            daily_token_budget: 0,
            runs_per_second: f64::NAN,
            run_burst: 0,
        };
        assert_eq!(bad.validate().unwrap_err().len(), 4);
    }

    #[test]
    fn exact_costs_round_half_up_to_micros() {
        assert_eq!(exact_to_micros(832_500_000), 833);
        assert_eq!(exact_to_micros(832_499_999), 832);
        assert_eq!(exact_to_micros(1_665_000_000), 1665);
        assert_eq!(exact_to_micros(0), 0);
    }
}
