//! Before any spend: the run and its committed outcome, the operator's
//! switches, the deadline, `max_steps`, the run's and the team's token
//! budgets (the call's worst case is reserved against the team's day), and
//! the attempt's start (`step.started`).

use chrono::{DateTime, Utc};
use tokio::time::Instant;

use super::approval::Waiting;
use super::RunMemory;
use crate::domain::{
    ChatMessage, Run, RunId, RunStatus, StepNext, StepOutcome, StopReason, Terminal,
};
use crate::engine::context::{build_final_prompt, build_prompt, Prompt};
use crate::engine::{Engine, StepError};
use crate::ledger::AgentVersion;
use crate::ports::TokenReservation;

/// A step that passed every guard and has begun.
pub(super) struct Ready {
    pub run: Run,
    pub agent: AgentVersion,
    pub step_no: i32,
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    /// The conversation before this step, as the ledger holds it.
    pub history: Vec<ChatMessage>,
    pub prompt: Prompt,
    /// When LLM and tool calls stop: the attempt's budget or the run's own
    /// deadline, the earlier.
    pub deadline: Instant,
    pub run_deadline: Option<Instant>,
    /// This is the run's final turn (graceful wind-down).
    pub final_turn: Option<FinalTurn>,
}

/// The agent's one turn without tools before a limit would end the run.
#[derive(Clone, Copy, Debug)]
pub(super) struct FinalTurn {
    /// What the answer may use: the agent's limit, or what the run's
    /// budget has left.
    pub max_tokens: u32,
    /// How the run ends when the final answer is not one (today's stop).
    pub otherwise: StopReason,
}

/// A final turn with room for fewer tokens than this is not tried.
const MIN_FINAL_TURN_TOKENS: u64 = 64;

pub(super) enum Opened {
    /// Nothing to do: the step is committed, or the run has ended (now).
    Finished(StepOutcome),
    Ready(Box<Ready>),
}

/// The run's timeout, once its deadline has passed.
pub(super) fn timed_out(run: &Run) -> Option<Terminal> {
    run.deadline
        .is_some_and(|deadline| Utc::now() >= deadline)
        .then(|| {
            Terminal::new(
                StopReason::Timeout,
                format!(
                    "the run exceeded its {} s limit",
                    run.limits.timeout_seconds
                ),
            )
        })
}

impl Engine {
    pub(super) async fn open_step(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
        memory: &mut RunMemory,
    ) -> Result<Opened, StepError> {
        let context = self
            .ledger
            .step_context(run_id, step_no)
            .await?
            .ok_or_else(|| StepError::fatal(StopReason::Internal, "run not found"))?;
        if let Some(outcome) = context.committed {
            // A terminal step committed by an attempt whose answer was lost:
            // its slot may not have been given back yet (giving back twice
            // is harmless).
            if outcome.next == StepNext::Finish {
                self.release(run_id).await;
            }
            return Ok(Opened::Finished(outcome));
        }
        let mut run = context.run;
        tracing::Span::current().record("team_id", tracing::field::display(run.team_id));
        if run.status.is_terminal() {
            return Ok(Opened::Finished(StepOutcome::finished(&run)));
        }
        // Parked for approval: still waiting, or answered and taking its
        // slot back.
        if run.status == RunStatus::Waiting && step_no == run.next_step {
            match self.step_of_waiting(run, step_no).await? {
                Waiting::Outcome(outcome) => return Ok(Opened::Finished(outcome)),
                Waiting::Resumed(run_now) => run = *run_now,
            }
        }
        if run.status == RunStatus::Queued {
            let (started, now) = self
                .ledger
                .mark_started(run_id)
                .await?
                .ok_or_else(|| StepError::fatal(StopReason::Internal, "run vanished"))?;
            if now {
                self.count_run_start();
            }
            run = started;
            self.feed.publish(run_id, run.last_seq).await;
        }
        if step_no != run.next_step {
            return Err(StepError::fatal(
                StopReason::Internal,
                format!(
                    "step {step_no} requested but the run is at step {}",
                    run.next_step
                ),
            ));
        }
        // A cancel settles the run in the ledger at once, so the status read
        // above is the cancel check; an operator's switch is read with it.
        if let Some(reason) = context.switched_off {
            let stop = Terminal::new(StopReason::Cancelled, reason);
            return self.stop(&run, stop).await.map(Opened::Finished);
        }
        if let Some(stop) = timed_out(&run).or_else(|| over_max_steps(&run, step_no)) {
            // With wind-down the last allowed step was the final turn, so a
            // step past it is only reached with wind-down off.
            return self.stop(&run, stop).await.map(Opened::Finished);
        }
        let run_deadline = run
            .deadline
            .map(|at| Instant::now() + (at - Utc::now()).to_std().unwrap_or_default());
        let deadline = run_deadline.map_or(deadline, |at| deadline.min(at));
        let agent = self
            .ledger
            .get_agent(run.team_id, &run.active_agent, Some(run.active_version))
            .await?
            .ok_or_else(|| {
                StepError::fatal(
                    StopReason::Internal,
                    format!(
                        "agent {} v{} not found",
                        run.active_agent, run.active_version
                    ),
                )
            })?;
        // The driver's copy of the conversation, when the ledger has no more.
        let mut history = match memory.messages.take() {
            Some(messages) if messages.len() as i64 == context.message_count => messages,
            _ => self.ledger.messages(run_id).await?,
        };
        let mut prompt = build_prompt(&agent.spec, history.clone());
        if prompt.untrimmed_tokens > u64::from(agent.spec.input_token_budget) {
            let summarized = self
                .summarize(
                    &mut run,
                    &agent,
                    step_no,
                    context.daily_token_budget,
                    &mut history,
                    prompt.untrimmed_tokens,
                    deadline,
                )
                .await?;
            if let Some(summarized) = summarized {
                prompt = summarized;
            }
        }
        let mut reserve = prompt.estimated_tokens + u64::from(agent.spec.max_output_tokens);
        let over_budget = run.tokens_used() + reserve > run.limits.run_token_budget;
        let last_step = step_no == run.limits.max_steps as i32;
        let mut final_turn = None;
        if agent.spec.wind_down && (over_budget || last_step) {
            let last = build_final_prompt(&agent.spec, history.clone());
            let room = run
                .limits
                .run_token_budget
                .saturating_sub(run.tokens_used() + last.estimated_tokens)
                .min(u64::from(agent.spec.max_output_tokens));
            if room >= MIN_FINAL_TURN_TOKENS {
                final_turn = Some(FinalTurn {
                    max_tokens: room as u32,
                    otherwise: if over_budget {
                        StopReason::RunTokenBudget
                    } else {
                        StopReason::MaxSteps
                    },
                });
                reserve = last.estimated_tokens + room;
                prompt = last;
            }
        }
        if final_turn.is_none() && over_budget {
            let detail = format!(
                "the next LLM call may use up to {reserve} tokens; {} of the run's budget of {} are spent",
                run.tokens_used(),
                run.limits.run_token_budget
            );
            let stop = Terminal::new(StopReason::RunTokenBudget, detail);
            return self.stop(&run, stop).await.map(Opened::Finished);
        }
        // The team's day: set the call's tokens aside first (a retry of this
        // step keeps its reservation), settle to the actual count after.
        let reservation = TokenReservation {
            team: run.team_id,
            run: run_id,
            step_no,
            day: Utc::now().date_naive(),
            tokens: reserve,
        };
        // The step before settles to its actual tokens in the same go.
        let settle = context
            .previous_tokens
            .map(|tokens| (step_no - 1, tokens.max(0) as u64));
        // A kept turn makes no call: nothing to set aside (its tokens were
        // reserved by the attempt that asked, or counted when it parked).
        if !context.turn_kept
            && !self
                .hot
                .settle_and_reserve(settle, reservation, context.daily_token_budget)
                .await?
        {
            let (used, reserved) = self.hot.tokens_of_day(run.team_id, reservation.day).await?;
            let detail = format!(
                "the next LLM call may use up to {reserve} tokens; the team has used {used} and reserved {reserved} of its daily budget of {}",
                context.daily_token_budget
            );
            let stop = Terminal::new(StopReason::TeamTokenBudget, detail);
            return self.stop(&run, stop).await.map(Opened::Finished);
        }

        let started_at = Utc::now();
        // The driver's last commit began this step's first attempt already
        // (when the ledger agrees); any other attempt begins here.
        let begun = memory.begun.take() == Some(step_no) && context.attempts == Some(1);
        let attempt = if begun {
            1
        } else {
            match self
                .ledger
                .begin_step_attempt(run_id, step_no, &agent.name)
                .await?
            {
                Some((attempt, seq)) => {
                    self.feed.publish(run_id, seq).await;
                    attempt
                }
                None => {
                    // The run ended (or the step was committed) since it was
                    // read: give the reservation just made back.
                    self.hot.cancel_reservation(run_id, step_no).await?;
                    return self
                        .current_outcome(run_id, step_no)
                        .await
                        .map(Opened::Finished);
                }
            }
        };
        Ok(Opened::Ready(Box::new(Ready {
            run,
            agent,
            step_no,
            attempt,
            started_at,
            history,
            prompt,
            deadline,
            run_deadline,
            final_turn,
        })))
    }
}

fn over_max_steps(run: &Run, step_no: i32) -> Option<Terminal> {
    (step_no > run.limits.max_steps as i32)
        .then(|| Terminal::new(StopReason::MaxSteps, max_steps_detail(run)))
}

pub(super) fn max_steps_detail(run: &Run) -> String {
    format!(
        "the run reached its limit of {} steps",
        run.limits.max_steps
    )
}
