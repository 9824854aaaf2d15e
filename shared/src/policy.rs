//! Retry and timeout numbers for running steps. One source: the embedded
//! orchestrator uses them directly and the state machine definition is
//! generated from them.

use std::time::Duration;

use rand::Rng;

#[derive(Clone, Debug, PartialEq)]
pub struct StepPolicy {
    /// Longest one step attempt may take before it counts as lost.
    pub step_timeout: Duration,
    /// How often a worker proves it is alive while a step runs.
    pub heartbeat: Duration,
    /// Retries of a step that failed with a retryable error.
    pub max_retries: u32,
    /// First retry interval; doubles each retry, capped at `retry_max_delay`,
    /// then drawn uniformly below that ("full jitter").
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    /// Hard cap on a whole run in the state machine; each run's own
    /// `limits.timeout_seconds` is enforced by the engine below it.
    pub workflow_timeout: Duration,
}

impl Default for StepPolicy {
    fn default() -> Self {
        Self {
            step_timeout: Duration::from_secs(300),
            heartbeat: Duration::from_secs(60),
            max_retries: 3,
            retry_base: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(30),
            workflow_timeout: Duration::from_secs(600),
        }
    }
}

impl StepPolicy {
    /// The wait before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        full_jitter(self.retry_base, self.retry_max_delay, retry)
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base·2^(n-1))].
pub fn full_jitter(base: Duration, max: Duration, attempt: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    let cap = exp.min(max);
    if cap.is_zero() {
        return cap;
    }
    let millis = rand::thread_rng().gen_range(0..=cap.as_millis() as u64);
    Duration::from_millis(millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_under_the_exponential_cap() {
        let policy = StepPolicy::default();
        for retry in 1..=10 {
            let cap = Duration::from_secs(2 * (1 << (retry - 1))).min(Duration::from_secs(30));
            for _ in 0..50 {
                assert!(policy.backoff(retry) <= cap);
            }
        }
    }
}
