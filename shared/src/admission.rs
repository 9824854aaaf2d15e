//! Admission of a new run: idempotency, kill switches, rate limit,
//! concurrent-run slot, create, start. One call with a typed outcome, the
//! same for every front door.
//!
//! It runs in a task of its own, so a caller that goes away (a dropped
//! connection cancels its handler) cannot stop it between claiming the key,
//! creating the run and starting it. Starting is idempotent, so a replay of
//! a run that is still `queued` starts it; the starter picks up whatever a
//! crash leaves behind.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::domain::limits::{check_run_timeout, LimitExceeded};
use crate::domain::{AgentName, Run, RunId, RunStatus, TeamId, ThreadId, Webhook};
use crate::engine::Engine;
use crate::ledger::{AgentVersion, Creation, NewRun, StoreError};
use crate::ports::{HotStoreError, IdempotencyClaim, Orchestrator, OrchestratorError};
use crate::starter::ensure_started;

/// A request to start a run, already parsed.
#[derive(Clone, Debug)]
pub struct RunRequest {
    pub team: TeamId,
    pub agent: AgentName,
    pub version: Option<i32>,
    pub input: Value,
    /// A JSON object.
    pub metadata: Value,
    pub idempotency: Option<IdempotencyKey>,
    /// The run's own webhook; without one, the agent's (if any) is used.
    pub webhook: Option<Webhook>,
    /// The conversation the run continues, if any.
    pub continues: Option<Continues>,
}

/// What a run continues: a thread (its newest run), or one run.
#[derive(Clone, Copy, Debug)]
pub enum Continues {
    Thread(ThreadId),
    Run(RunId),
}

/// The client's `Idempotency-Key` and a hash of the request it came with.
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub key: String,
    pub request_hash: String,
}

/// A run that was admitted.
#[derive(Clone, Debug)]
pub enum Admitted {
    /// This request created the run.
    Accepted(Run),
    /// An earlier request with the same key and body created it.
    Replayed(Run),
}

#[derive(Debug, thiserror::Error)]
pub enum AdmissionError {
    #[error("no agent named {0}")]
    UnknownAgent(AgentName),
    #[error("agent {agent} has no version {version}")]
    UnknownAgentVersion { agent: AgentName, version: i32 },
    #[error("the key's team no longer exists")]
    UnknownTeam,
    /// The agent asks for more than the orchestrator can honour.
    #[error(transparent)]
    Unsupported(LimitExceeded),
    #[error("the team was switched off by an operator: {0}")]
    TeamDisabled(String),
    #[error("agent {agent} was switched off by an operator: {reason}")]
    AgentDisabled { agent: AgentName, reason: String },
    #[error("this Idempotency-Key was used with a different request body")]
    IdempotencyConflict { run_id: RunId },
    #[error("more than {rate} runs per second (burst {burst}) requested")]
    RateLimited {
        rate: f64,
        burst: i32,
        retry_after: Duration,
    },
    #[error("the team already has {limit} runs in progress")]
    ConcurrentRunLimit { limit: u32 },
    /// The run is recorded and holds its slot; the starter starts it once the
    /// orchestrator answers, and a replay with the same key starts it too.
    #[error("run {run_id} was recorded but could not be started yet; it starts once the orchestrator answers")]
    NotStarted {
        run_id: RunId,
        #[source]
        source: OrchestratorError,
    },
    #[error("run {0} is still being created")]
    NotReady(RunId),
    #[error("no thread {0}")]
    UnknownThread(ThreadId),
    #[error("no run {0} to continue")]
    UnknownPreviousRun(RunId),
    #[error("run {0} has not ended yet; a run continues an ended one")]
    PreviousNotEnded(RunId),
    #[error("run {0} is continued by another run already; continue the thread's newest run")]
    PreviousContinued(RunId),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    HotStore(#[from] HotStoreError),
    #[error("admission stopped unexpectedly: {0}")]
    Aborted(String),
}

/// Admits a run; runs to completion even when the caller's future is dropped.
pub async fn admit(
    engine: Engine,
    orchestrator: Arc<dyn Orchestrator>,
    request: RunRequest,
) -> Result<Admitted, AdmissionError> {
    tokio::spawn(async move { admit_here(&engine, orchestrator.as_ref(), request).await })
        .await
        .map_err(|error| AdmissionError::Aborted(error.to_string()))?
}

async fn admit_here(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    request: RunRequest,
) -> Result<Admitted, AdmissionError> {
    let team = request.team;
    let agent = find_agent(engine, &request).await?;
    if let Some(max) = orchestrator.max_run_timeout() {
        check_run_timeout(agent.spec.limits.timeout_seconds, max)
            .map_err(AdmissionError::Unsupported)?;
    }
    let terms = engine
        .ledger
        .admission_terms(team, &agent.name)
        .await?
        .ok_or(AdmissionError::UnknownTeam)?;
    if let Some(reason) = terms.team_disabled {
        return Err(AdmissionError::TeamDisabled(reason));
    }
    if let Some(reason) = terms.agent_disabled {
        return Err(AdmissionError::AgentDisabled {
            agent: request.agent.clone(),
            reason,
        });
    }

    let mut run_id = RunId::new();
    let mut replayed = false;
    if let Some(key) = &request.idempotency {
        match engine
            .hot
            .claim_idempotency_key(team, &key.key, &key.request_hash, run_id)
            .await?
        {
            IdempotencyClaim::Claimed => {}
            IdempotencyClaim::Existing {
                request_hash,
                run_id: existing,
            } => {
                if request_hash != key.request_hash {
                    return Err(AdmissionError::IdempotencyConflict { run_id: existing });
                }
                run_id = existing;
                replayed = true;
            }
        }
    }
    if replayed {
        // The first request with this key is creating the run, or did. If it
        // died before creating it, this request carries on in its place.
        if let Some(run) = wait_for_run(engine, run_id).await? {
            let run = start_if_queued(engine, orchestrator, run).await?;
            return Ok(Admitted::Replayed(run));
        }
    }

    let continues = previous_run(engine, team, &request).await?;

    let limits = &terms.limits;
    if let Some(wait) = engine
        .hot
        .take_rate_token(team, limits.runs_per_second, limits.run_burst.max(0) as u32)
        .await?
    {
        return Err(AdmissionError::RateLimited {
            rate: limits.runs_per_second,
            burst: limits.run_burst,
            retry_after: wait,
        });
    }
    let limit = limits.max_concurrent_runs.max(0) as u32;
    if !engine.hot.acquire_run_slot(team, run_id, limit).await? {
        return Err(AdmissionError::ConcurrentRunLimit { limit });
    }

    let webhook = request.webhook.clone().or_else(|| {
        let declared = agent.spec.webhook.as_ref()?;
        Some(Webhook {
            url: declared.url.clone(),
            secret: declared.secret.clone()?,
        })
    });
    // Creating is idempotent by id, so a replay whose first attempt died
    // before creating the run creates it now.
    let created = engine
        .ledger
        .create_run(&NewRun {
            id: run_id,
            team_id: team,
            agent: agent.name.clone(),
            version: agent.version,
            input: request.input,
            metadata: request.metadata,
            limits: agent.spec.limits.clone(),
            run_fee_micros: terms.run_fee_micros,
            idempotency: request
                .idempotency
                .as_ref()
                .map(|key| (key.key.clone(), key.request_hash.clone())),
            webhook,
            continues,
        })
        .await?;
    let run = match created {
        Creation::Created(run) => {
            engine.feed.publish(run_id, run.last_seq).await;
            tracing::info!(run_id = %run_id, team_id = %team, agent = %agent.name,
                version = agent.version, "run accepted");
            *run
        }
        Creation::Exists => engine
            .ledger
            .get_run(run_id)
            .await?
            .ok_or(AdmissionError::NotReady(run_id))?,
        Creation::PreviousTaken | Creation::PreviousNotEnded => {
            engine.hot.release_run(run_id).await?;
            let previous = continues.unwrap_or(run_id);
            return Err(if matches!(created, Creation::PreviousTaken) {
                AdmissionError::PreviousContinued(previous)
            } else {
                AdmissionError::PreviousNotEnded(previous)
            });
        }
        // The hot store granted the key, but the ledger knows another run
        // by it (the hot store lost it, or was away when that run took it).
        Creation::KeyTaken {
            run_id: holder,
            request_hash,
        } => {
            engine.hot.release_run(run_id).await?;
            let same_request = request
                .idempotency
                .as_ref()
                .is_some_and(|key| key.request_hash == request_hash);
            if !same_request {
                return Err(AdmissionError::IdempotencyConflict { run_id: holder });
            }
            let run = wait_for_run(engine, holder)
                .await?
                .ok_or(AdmissionError::NotReady(holder))?;
            let run = start_if_queued(engine, orchestrator, run).await?;
            return Ok(Admitted::Replayed(run));
        }
    };
    let run = start_if_queued(engine, orchestrator, run).await?;
    Ok(if replayed {
        Admitted::Replayed(run)
    } else {
        Admitted::Accepted(run)
    })
}

/// The run of the team that the new run continues. One that has not ended
/// is refused here, before a slot is taken, unless the request has an
/// Idempotency-Key: it may be this request's own run, created by an
/// earlier attempt, which the ledger's key answers with.
async fn previous_run(
    engine: &Engine,
    team: TeamId,
    request: &RunRequest,
) -> Result<Option<RunId>, AdmissionError> {
    let previous = match request.continues {
        None => return Ok(None),
        Some(Continues::Run(id)) => engine
            .ledger
            .get_run(id)
            .await?
            .filter(|run| run.team_id == team)
            .ok_or(AdmissionError::UnknownPreviousRun(id))?,
        Some(Continues::Thread(thread)) => engine
            .ledger
            .thread_head(team, thread)
            .await?
            .ok_or(AdmissionError::UnknownThread(thread))?,
    };
    if !previous.status.is_terminal() && request.idempotency.is_none() {
        return Err(AdmissionError::PreviousNotEnded(previous.id));
    }
    Ok(Some(previous.id))
}

async fn find_agent(engine: &Engine, request: &RunRequest) -> Result<AgentVersion, AdmissionError> {
    engine
        .ledger
        .get_agent(request.team, request.agent.as_str(), request.version)
        .await?
        .ok_or_else(|| match request.version {
            Some(version) => AdmissionError::UnknownAgentVersion {
                agent: request.agent.clone(),
                version,
            },
            None => AdmissionError::UnknownAgent(request.agent.clone()),
        })
}

/// Starts a run that is still `queued` (idempotent).
async fn start_if_queued(
    engine: &Engine,
    orchestrator: &dyn Orchestrator,
    run: Run,
) -> Result<Run, AdmissionError> {
    if run.status != RunStatus::Queued {
        return Ok(run);
    }
    ensure_started(engine, orchestrator, run.id)
        .await
        .map_err(|source| {
            tracing::warn!(run_id = %run.id, error = %source, "run recorded but not started; the starter will start it");
            AdmissionError::NotStarted {
                run_id: run.id,
                source,
            }
        })?;
    Ok(run)
}

/// Waits briefly for a run another request is creating.
async fn wait_for_run(engine: &Engine, run_id: RunId) -> Result<Option<Run>, StoreError> {
    for _ in 0..50 {
        if let Some(run) = engine.ledger.get_run(run_id).await? {
            return Ok(Some(run));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(None)
}
