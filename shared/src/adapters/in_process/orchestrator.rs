//! The embedded orchestrator: drives each run's steps in-process with the
//! same retry and timeout policy the state machine uses, enforces the run's
//! deadline, and stops a run when asked.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use async_trait::async_trait;
use chrono::Utc;
use tokio::sync::{Notify, Semaphore};

use crate::domain::{RunId, StepNext, StopReason, Terminal};
use crate::engine::{Engine, RunMemory, StepError};
use crate::policy::StepPolicy;
use crate::ports::{Orchestrator, OrchestratorError, StartOutcome};

pub struct EmbeddedOrchestrator {
    engine: Engine,
    policy: StepPolicy,
    /// Bounds steps executing at once across all runs.
    step_slots: Arc<Semaphore>,
    /// Runs being driven, with the signals that stop and resume them.
    driving: Mutex<HashMap<RunId, Signals>>,
    /// Since when each run's next step has waited for a step slot.
    waiting: Mutex<HashMap<RunId, std::time::Instant>>,
    this: Weak<EmbeddedOrchestrator>,
}

/// What a run's driver listens to.
#[derive(Clone, Default)]
struct Signals {
    /// Stop driving (the run's end is recorded).
    stop: Arc<Notify>,
    /// The run's approval requests are answered: step again.
    resume: Arc<Notify>,
}

/// How a driver's stepping stopped.
enum Stepped {
    /// The run ended; with the terminal state to record when no step did.
    Ended(Option<Terminal>),
    /// Parked for approval at `step_no`, for at most `wait`.
    Waits {
        step_no: i32,
        wait: std::time::Duration,
    },
}

/// A step waiting for a step slot, from its creation until it is dropped
/// (it got its slot, or its driver was stopped).
struct Queued<'a> {
    waiting: &'a Mutex<HashMap<RunId, std::time::Instant>>,
    run: RunId,
}

impl<'a> Queued<'a> {
    fn enter(waiting: &'a Mutex<HashMap<RunId, std::time::Instant>>, run: RunId) -> Self {
        if let Ok(mut waiting) = waiting.lock() {
            waiting.insert(run, std::time::Instant::now());
        }
        Self { waiting, run }
    }
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        if let Ok(mut waiting) = self.waiting.lock() {
            waiting.remove(&self.run);
        }
    }
}

impl EmbeddedOrchestrator {
    pub fn new(engine: Engine, policy: StepPolicy, max_concurrent_steps: usize) -> Arc<Self> {
        Arc::new_cyclic(|this| Self {
            engine,
            policy,
            step_slots: Arc::new(Semaphore::new(max_concurrent_steps.max(1))),
            driving: Mutex::new(HashMap::new()),
            waiting: Mutex::new(HashMap::new()),
            this: this.clone(),
        })
    }

    /// Starts driving every unfinished run that nobody drives (after a
    /// restart: all of them); returns how many.
    pub async fn resume_unfinished(&self) -> Result<usize, OrchestratorError> {
        let runs = self
            .engine
            .ledger
            .unfinished_runs()
            .await
            .map_err(|e| OrchestratorError(e.to_string()))?;
        let resumed = runs.iter().filter(|run| self.spawn_driver(**run)).count();
        if resumed > 0 {
            tracing::info!(count = resumed, "resumed unfinished runs");
        }
        Ok(resumed)
    }

    /// Starts a driver for `run` unless one is running; true when it did.
    fn spawn_driver(&self, run: RunId) -> bool {
        let signals = Signals::default();
        {
            let Ok(mut driving) = self.driving.lock() else {
                return false;
            };
            if driving.contains_key(&run) {
                return false;
            }
            driving.insert(run, signals.clone());
        }
        let Some(this) = self.this.upgrade() else {
            return false;
        };
        tokio::spawn(async move {
            this.drive(run, signals).await;
            if let Ok(mut driving) = this.driving.lock() {
                driving.remove(&run);
            }
        });
        true
    }

    async fn drive(&self, run_id: RunId, signals: Signals) {
        let run = loop {
            match self.engine.ledger.mark_started(run_id).await {
                Ok(Some((run, now))) => {
                    if now {
                        self.engine.count_run_start();
                    }
                    break run;
                }
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(run_id = %run_id, %error, "cannot start run; retrying");
                    tokio::time::sleep(self.policy.backoff(1)).await;
                }
            }
        };
        if run.status.is_terminal() {
            return;
        }
        self.engine.feed.publish(run_id, run.last_seq).await;
        let deadline = run.deadline.unwrap_or_else(Utc::now);
        let until_deadline = (deadline - Utc::now()).to_std().unwrap_or_default();
        let deadline_at = tokio::time::Instant::now() + until_deadline;

        let mut step_no = run.next_step;
        loop {
            let stepping = self.step_loop(run_id, step_no, deadline_at);
            let wait = tokio::select! {
                stepped = stepping => match stepped {
                    Stepped::Ended(terminal) => {
                        if let Some(terminal) = terminal {
                            self.finalize(run_id, terminal).await;
                        }
                        return;
                    }
                    Stepped::Waits { step_no: at, wait } => {
                        step_no = at;
                        wait
                    }
                },
                () = tokio::time::sleep_until(deadline_at) => {
                    let detail = format!("the run exceeded its {} s limit", run.limits.timeout_seconds);
                    self.finalize(run_id, Terminal::new(StopReason::Timeout, detail)).await;
                    return;
                }
                () = signals.stop.notified() => {
                    tracing::info!(run_id = %run_id, "stopped driving run");
                    return;
                }
            };
            // Parked: no step runs and no step slot is held. An answer, the
            // wait's end (the step then ends the run) or a stop wakes it.
            tokio::select! {
                () = signals.resume.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = signals.stop.notified() => {
                    tracing::info!(run_id = %run_id, "stopped driving run");
                    return;
                }
            }
        }
    }

    /// Steps until the run finishes; returns the terminal state the
    /// orchestrator must record when a step could not (errors).
    async fn step_loop(
        &self,
        run_id: RunId,
        mut step_no: i32,
        run_deadline: tokio::time::Instant,
    ) -> Stepped {
        let (mut retries, mut rate_limited, mut store_down, mut circuit_waits) = (0, 0, 0, 0);
        // What this driver keeps between the run's steps.
        let mut memory = RunMemory::for_driver();
        loop {
            let result = {
                let slot = {
                    let _queued = Queued::enter(&self.waiting, run_id);
                    self.step_slots.acquire().await
                };
                let Ok(_slot) = slot else {
                    return Stepped::Ended(None);
                };
                let deadline = tokio::time::Instant::now() + self.policy.step_budget();
                match tokio::time::timeout(
                    self.policy.step_timeout,
                    self.engine
                        .execute_step_with(run_id, step_no, deadline, &mut memory),
                )
                .await
                {
                    Ok(result) => result,
                    Err(_) => Err(StepError::OutOfTime(format!(
                        "step {step_no} did not finish within {:?}",
                        self.policy.step_timeout
                    ))),
                }
            };
            let wait = match result {
                Ok(outcome) if outcome.next == StepNext::Step => {
                    step_no = outcome.step_no;
                    (retries, rate_limited, store_down, circuit_waits) = (0, 0, 0, 0);
                    continue;
                }
                Ok(outcome) if outcome.next == StepNext::Wait => {
                    let wait = std::time::Duration::from_secs(outcome.wait_seconds.unwrap_or(1));
                    return Stepped::Waits {
                        step_no: outcome.step_no,
                        wait,
                    };
                }
                // Answered, but the team's slots are taken: in line for one.
                Ok(outcome) if outcome.next == StepNext::Queued => {
                    step_no = outcome.step_no;
                    let jitter = crate::policy::full_jitter(
                        std::time::Duration::from_millis(50),
                        std::time::Duration::from_millis(250),
                        1,
                    );
                    tokio::time::sleep(self.policy.slot_retry + jitter).await;
                    continue;
                }
                Ok(_) => return Stepped::Ended(None),
                // The provider asked for a long pause: wait it out here, on
                // the rate-limit schedule, at least as long as it asked.
                // The provider's circuit is open: wait for its probe, within
                // the run's deadline; past it the run ends llm_unavailable.
                Err(ref error @ StepError::CircuitOpen { .. })
                    if circuit_waits < self.policy.circuit_waits
                        && tokio::time::Instant::now()
                            + error.retry_after().unwrap_or_default()
                            < run_deadline =>
                {
                    circuit_waits += 1;
                    let jitter = crate::policy::full_jitter(
                        std::time::Duration::from_millis(100),
                        std::time::Duration::from_millis(500),
                        1,
                    );
                    (
                        error.retry_after().unwrap_or_default() + jitter,
                        circuit_waits,
                        error,
                    )
                }
                Err(ref error @ StepError::RateLimited { .. })
                    if rate_limited < self.policy.rate_limit_retries =>
                {
                    rate_limited += 1;
                    let wait = self
                        .policy
                        .rate_limit_backoff(rate_limited)
                        .max(error.retry_after().unwrap_or_default());
                    (wait, rate_limited, error)
                }
                // The store is down: keep trying until the run's deadline
                // (which races this loop) ends it.
                Err(ref error @ StepError::Store(_)) => {
                    store_down += 1;
                    (self.policy.backoff(store_down), store_down, error)
                }
                Err(ref error @ (StepError::LlmUnavailable(_) | StepError::OutOfTime(_)))
                    if retries < self.policy.max_retries =>
                {
                    retries += 1;
                    (self.policy.backoff(retries), retries, error)
                }
                Err(error) => {
                    tracing::error!(run_id = %run_id, step_no, error = %error,
                        error_name = %error.error_name(), "step failed; ending run");
                    return Stepped::Ended(Some(Terminal::new(
                        error.stop_reason(),
                        error.to_string(),
                    )));
                }
            };
            let (wait, retry, error) = wait;
            tracing::warn!(run_id = %run_id, step_no, retry, ?wait, error = %error,
                error_name = %error.error_name(), "step failed; retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn finalize(&self, run_id: RunId, terminal: Terminal) {
        // Settlement must not be lost: keep trying while the store is down
        // (should the process stop first, its next start resumes the run
        // from the ledger and settles it).
        let mut attempt = 0;
        loop {
            match self.engine.finalize(run_id, terminal.clone()).await {
                Ok(_) => return,
                Err(error) => {
                    attempt += 1;
                    tracing::error!(run_id = %run_id, attempt, %error, "cannot settle run; retrying");
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                }
            }
        }
    }
}

impl EmbeddedOrchestrator {
    fn signals(&self, run: RunId) -> Result<Option<Signals>, OrchestratorError> {
        Ok(self
            .driving
            .lock()
            .map_err(|_| OrchestratorError("driver registry poisoned".to_owned()))?
            .get(&run)
            .cloned())
    }
}

#[async_trait]
impl Orchestrator for EmbeddedOrchestrator {
    async fn start(&self, run: RunId) -> Result<StartOutcome, OrchestratorError> {
        Ok(if self.spawn_driver(run) {
            StartOutcome::Started
        } else {
            StartOutcome::AlreadyStarted
        })
    }

    fn oldest_queued_step(&self) -> Option<std::time::Duration> {
        let waiting = self.waiting.lock().ok()?;
        Some(
            waiting
                .values()
                .map(std::time::Instant::elapsed)
                .max()
                .unwrap_or_default(),
        )
    }

    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError> {
        if let Some(signals) = self.signals(run)? {
            signals.stop.notify_one();
        }
        Ok(())
    }

    async fn resume(
        &self,
        run: RunId,
        _step_no: i32,
        _wait_token: Option<&str>,
    ) -> Result<(), OrchestratorError> {
        match self.signals(run)? {
            Some(signals) => signals.resume.notify_one(),
            None => {
                self.spawn_driver(run);
            }
        }
        Ok(())
    }
}
