//! The LLM circuit breaker, per provider endpoint and model. After
//! `failures_to_open` failed calls in a row (5xx, connect error, timeout —
//! after the client's own retries) the circuit opens: no call is made for
//! `cool_down`, steps wait instead (`Retryable.CircuitOpen`). Then one call
//! goes through as a probe: its success closes the circuit, its failure
//! opens it again. The state is shared between processes through the hot
//! store (read at most every `SHARED_READ_EVERY`, written on every change),
//! so one process's failures spare the others the same wait.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use crate::ports::{CircuitState, HotStore, LlmError};

/// A process reads the shared state of a circuit at most this often.
pub const SHARED_READ_EVERY: Duration = Duration::from_secs(2);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CircuitSettings {
    pub failures_to_open: u32,
    pub cool_down: Duration,
}

impl Default for CircuitSettings {
    fn default() -> Self {
        Self::from_policy(&crate::policy::StepPolicy::default())
    }
}

impl CircuitSettings {
    pub fn from_policy(policy: &crate::policy::StepPolicy) -> Self {
        Self {
            failures_to_open: policy.circuit_failures.max(1),
            cool_down: policy.circuit_cool_down,
        }
    }
}

/// Whether a call may be made now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Gate {
    Closed,
    /// The cool-down is over: this call is the one probe.
    Probe,
    /// No call until then.
    Open {
        until: DateTime<Utc>,
    },
}

#[derive(Default)]
struct Local {
    failures: u32,
    open_until: Option<DateTime<Utc>>,
    /// A probe is under way (other calls wait for it).
    probing: bool,
    read_at: Option<Instant>,
}

/// This process's circuits; the hot store given to each call shares them.
#[derive(Clone, Default)]
pub struct Circuits {
    settings: CircuitSettings,
    local: Arc<Mutex<HashMap<String, Local>>>,
    opened: Arc<AtomicU64>,
}

impl Circuits {
    pub fn new(settings: CircuitSettings) -> Self {
        Self {
            settings,
            local: Arc::default(),
            opened: Arc::default(),
        }
    }

    pub fn failures_to_open(&self) -> u32 {
        self.settings.failures_to_open
    }

    /// How many times a circuit opened in this process (for alarms).
    pub fn opened(&self) -> u64 {
        self.opened.load(Ordering::Relaxed)
    }

    /// Circuits open now in this process's view.
    pub fn open_now(&self) -> usize {
        let now = Utc::now();
        self.local.lock().map_or(0, |local| {
            local
                .values()
                .filter(|c| c.open_until.is_some_and(|until| until > now))
                .count()
        })
    }

    /// The circuit's name: the provider's endpoint and the model.
    pub fn key(endpoint: &str, model: &str) -> String {
        format!("{endpoint}#{model}")
    }

    /// Whether a call to `key` may be made now.
    pub async fn gate(&self, hot: &dyn HotStore, key: &str) -> Gate {
        let stale = self
            .with(key, |local| {
                local
                    .read_at
                    .is_none_or(|at| at.elapsed() >= SHARED_READ_EVERY)
            })
            .unwrap_or(false);
        if stale {
            let shared = hot.circuit(key).await.ok().flatten();
            self.with(key, |local| {
                local.read_at = Some(Instant::now());
                if let Some(shared) = shared {
                    // Another process's view counts when it is the more open one.
                    if shared.open_until > local.open_until {
                        local.open_until = shared.open_until;
                        local.failures = local.failures.max(shared.failures);
                    }
                }
            });
        }
        self.with(key, |local| match local.open_until {
            None => Gate::Closed,
            Some(until) if Utc::now() < until => Gate::Open { until },
            Some(_) if local.probing => Gate::Open {
                until: Utc::now() + chrono::Duration::seconds(1),
            },
            Some(_) => {
                local.probing = true;
                Gate::Probe
            }
        })
        .unwrap_or(Gate::Closed)
    }

    /// A call to `key` was answered: the circuit closes.
    pub async fn succeeded(&self, hot: &dyn HotStore, key: &str) {
        let changed = self
            .with(key, |local| {
                let changed = local.failures > 0 || local.open_until.is_some();
                *local = Local {
                    read_at: local.read_at,
                    ..Local::default()
                };
                changed
            })
            .unwrap_or(false);
        if changed {
            tracing::info!(circuit = key, "LLM circuit closed");
            share(
                hot,
                key,
                CircuitState {
                    failures: 0,
                    open_until: None,
                },
            )
            .await;
        }
    }

    /// A call to `key` failed (the provider is down or does not answer).
    /// Counts an LLM answer against its circuit: only a provider that does
    /// not answer counts as a failure.
    pub async fn record<T>(&self, hot: &dyn HotStore, key: &str, answer: &Result<T, LlmError>) {
        match answer {
            Err(LlmError::Unavailable(_)) => self.failed(hot, key).await,
            _ => self.succeeded(hot, key).await,
        }
    }

    pub async fn failed(&self, hot: &dyn HotStore, key: &str) {
        let settings = self.settings;
        let opened = self.with(key, |local| {
            local.failures += 1;
            let open = local.probing || local.failures >= settings.failures_to_open;
            local.probing = false;
            if open {
                let cool_down = chrono::Duration::from_std(settings.cool_down).unwrap_or_default();
                local.open_until = Some(Utc::now() + cool_down);
            }
            (open, local.failures, local.open_until)
        });
        let Some((open, failures, open_until)) = opened else {
            return;
        };
        if open {
            self.opened.fetch_add(1, Ordering::Relaxed);
            tracing::error!(circuit = key, failures, until = ?open_until,
                "LLM circuit open: no calls to this provider and model until the cool-down ends");
        }
        share(
            hot,
            key,
            CircuitState {
                failures,
                open_until,
            },
        )
        .await;
    }

    fn with<T>(&self, key: &str, f: impl FnOnce(&mut Local) -> T) -> Option<T> {
        let mut local = self.local.lock().ok()?;
        Some(f(local.entry(key.to_owned()).or_default()))
    }
}

async fn share(hot: &dyn HotStore, key: &str, state: CircuitState) {
    if let Err(error) = hot.set_circuit(key, state).await {
        tracing::warn!(circuit = key, %error, "could not share the circuit's state");
    }
}
