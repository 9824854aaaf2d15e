//! Retry and timeout numbers for running steps. One source: the embedded
//! orchestrator uses them directly, the state machine definition is
//! generated from them, and so are the step function's timeout and its
//! queue's visibility timeout in Terraform (`infra/statemachine/policy.json`).

use std::time::Duration;

use rand::Rng;
use serde_json::{json, Value};

use crate::domain::limits::MAX_RUN_TIMEOUT_SECONDS;

#[derive(Clone, Debug, PartialEq)]
pub struct StepPolicy {
    /// Longest one step attempt may take before it counts as lost: the Step
    /// task's `TimeoutSeconds`, and the step function's Lambda timeout.
    pub step_timeout: Duration,
    /// Kept free at the end of a step's time for committing and answering:
    /// a step stops its LLM and tool calls this long before `step_timeout`.
    pub answer_margin: Duration,
    /// How often a worker proves it is alive while a step runs.
    pub heartbeat: Duration,
    /// Retries of a step that failed with a retryable error.
    pub max_retries: u32,
    /// First retry interval; doubles each retry, capped at `retry_max_delay`,
    /// then drawn uniformly below that ("full jitter").
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    /// Retries of a step the provider rate-limited for longer than a step
    /// waits by itself (`Retryable.RateLimited`), with their own, longer
    /// backoff: the orchestrator waits, no worker sleeps.
    pub rate_limit_retries: u32,
    pub rate_limit_base: Duration,
    pub rate_limit_max_delay: Duration,
    /// Retries, in the state machine, of a step that could not reach the
    /// ledger or the hot store (`Retryable.Store`), on the general backoff:
    /// with each attempt riding out what it can itself (a step keeps its
    /// work and writes it again until its budget ends), about ten minutes
    /// of outage. The embedded orchestrator retries these until the run's
    /// deadline.
    pub store_retries: u32,
    /// The LLM circuit breaker: failed calls in a row that open it, how
    /// long it stays open, and how many times a step waits for it
    /// (`Retryable.CircuitOpen`) before the run ends `llm_unavailable`.
    pub circuit_failures: u32,
    pub circuit_cool_down: Duration,
    pub circuit_waits: u32,
    /// Agent steps one Step task may run one after the other (each
    /// committed on its own) while a whole step still fits its time: fewer
    /// state transitions per run. 1 means one step per task.
    pub steps_per_task: u32,
    /// How often a run whose approvals are answered tries again for its
    /// team's concurrent-run slot while all are taken (its place in line).
    pub slot_retry: Duration,
    /// Hard cap on a whole run in the state machine, above the longest
    /// `limits.timeout_seconds` a run may have (the engine enforces each
    /// run's own limit below it).
    pub workflow_timeout: Duration,
}

impl Default for StepPolicy {
    fn default() -> Self {
        let step_timeout = Duration::from_secs(300);
        Self {
            step_timeout,
            answer_margin: Duration::from_secs(30),
            heartbeat: Duration::from_secs(60),
            max_retries: 3,
            retry_base: Duration::from_secs(2),
            retry_max_delay: Duration::from_secs(30),
            rate_limit_retries: 5,
            rate_limit_base: Duration::from_secs(15),
            rate_limit_max_delay: Duration::from_secs(300),
            store_retries: 20,
            circuit_failures: 5,
            circuit_cool_down: Duration::from_secs(30),
            circuit_waits: 10,
            steps_per_task: 1,
            slot_retry: Duration::from_secs(5),
            // The longest run, plus one step that may be under way when its
            // deadline passes, plus room for settling it.
            workflow_timeout: Duration::from_secs(u64::from(MAX_RUN_TIMEOUT_SECONDS))
                + step_timeout
                + Duration::from_secs(300),
        }
    }
}

impl StepPolicy {
    /// The wait before retry number `retry` (1-based).
    pub fn backoff(&self, retry: u32) -> Duration {
        full_jitter(self.retry_base, self.retry_max_delay, retry)
    }

    /// The wait before retry number `retry` of a rate-limited step.
    pub fn rate_limit_backoff(&self, retry: u32) -> Duration {
        full_jitter(self.rate_limit_base, self.rate_limit_max_delay, retry)
    }

    /// How long one attempt may spend on LLM and tool calls, from the moment
    /// its task started.
    pub fn step_budget(&self) -> Duration {
        self.step_timeout.saturating_sub(self.answer_margin)
    }

    /// The longest `limits.timeout_seconds` this state machine can honour:
    /// a run's last step and its settlement must fit before the execution
    /// itself times out.
    pub fn max_run_timeout(&self) -> Duration {
        self.workflow_timeout
            .saturating_sub(self.step_timeout)
            .saturating_sub(Duration::from_secs(60))
    }

    /// The step function's Lambda timeout: the task's own, so the task
    /// never outlives the invocation that works on it (the worker stops by
    /// `step_budget`, well before).
    pub fn step_function_timeout(&self) -> Duration {
        self.step_timeout
    }

    /// The step queue's visibility timeout: six times the function's
    /// timeout, as Lambda recommends for SQS event sources.
    pub fn step_queue_visibility_timeout(&self) -> Duration {
        self.step_function_timeout() * 6
    }

    /// The numbers Terraform reads (`infra/statemachine/policy.json`).
    pub fn deployment_settings(&self) -> Value {
        json!({
            "comment": "Generated by `agentrun asl --write` from StepPolicy; do not edit.",
            "step_task_timeout_seconds": self.step_timeout.as_secs(),
            "step_heartbeat_seconds": self.heartbeat.as_secs(),
            "step_function_timeout_seconds": self.step_function_timeout().as_secs(),
            "step_queue_visibility_timeout_seconds": self.step_queue_visibility_timeout().as_secs(),
            "workflow_timeout_seconds": self.workflow_timeout.as_secs(),
            "max_run_timeout_seconds": self.max_run_timeout().as_secs(),
        })
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

/// The longest a single LLM request may take inside a step (the OpenAI
/// adapter's default request timeout); with the longest tool call it must
/// fit a step's budget.
pub const LLM_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::limits::MAX_TOOL_TIMEOUT_MS;

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

    #[test]
    fn the_time_numbers_fit_inside_each_other() {
        let policy = StepPolicy::default();
        // One LLM request and the longest tool call fit one step's budget,
        // which ends before the task times out.
        let longest_tool = Duration::from_millis(MAX_TOOL_TIMEOUT_MS);
        assert!(LLM_REQUEST_TIMEOUT + longest_tool <= policy.step_budget());
        assert!(policy.step_budget() < policy.step_timeout);
        // The worker heartbeats (every third of the interval) well inside it.
        assert!(policy.heartbeat < policy.step_timeout);
        // The longest run a spec may ask for fits in the execution.
        assert!(
            Duration::from_secs(u64::from(MAX_RUN_TIMEOUT_SECONDS)) <= policy.max_run_timeout()
        );
        // A Lambda may run 15 minutes at most.
        assert!(policy.step_function_timeout() <= Duration::from_secs(900));
        assert!(policy.step_queue_visibility_timeout() >= policy.step_function_timeout() * 6);
    }
}
