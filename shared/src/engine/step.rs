//! One agent step: load → kill switches → LLM → tools → handoff or final
//! answer → one commit. Safe to run more than once for the same step.

use chrono::Utc;
use futures_util::future::join_all;
use serde_json::json;
use tokio::time::Instant;
use tracing::Instrument;

use super::context::build_prompt;
use super::output::{check_output, repair_prompt};
use super::tools::CallRef;
use super::{persist, Circuits, Engine, Gate, StepError};
use crate::domain::event::terminal_event;
use crate::domain::{
    ChatMessage, EventType, NewEvent, Run, RunId, RunStatus, StepNext, StepOutcome, StopReason,
    Terminal, ToolCall, ToolKind,
};
use crate::ledger::{AgentVersion, CommitResult, LlmTurn, StepCommit, ToolCallRecord};
use crate::ports::{ChatRequest, LlmError, TokenReservation};

impl Engine {
    /// Executes step `step_no` of a run. If that step is already committed,
    /// returns the stored outcome without calling the LLM or any tool.
    /// LLM and tool calls stop by `deadline` (the attempt's time budget) or
    /// the run's own deadline, whichever comes first.
    pub async fn execute_step(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
    ) -> Result<StepOutcome, StepError> {
        let span =
            tracing::info_span!("step", run_id = %run_id, step_no, team_id = tracing::field::Empty);
        self.execute_step_inner(run_id, step_no, deadline)
            .instrument(span)
            .await
    }

    async fn execute_step_inner(
        &self,
        run_id: RunId,
        step_no: i32,
        deadline: Instant,
    ) -> Result<StepOutcome, StepError> {
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
            return Ok(outcome);
        }
        let mut run = context.run;
        tracing::Span::current().record("team_id", tracing::field::display(run.team_id));
        if run.status.is_terminal() {
            return Ok(StepOutcome::finished(&run));
        }
        if run.status == RunStatus::Queued {
            run = self
                .ledger
                .mark_started(run_id)
                .await?
                .ok_or_else(|| StepError::fatal(StopReason::Internal, "run vanished"))?;
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

        if let Some(reason) = context.switched_off {
            return self
                .stop(&run, Terminal::new(StopReason::Cancelled, reason))
                .await;
        }
        if let Some(stop) = self.kill_switch(&run, step_no).await? {
            return self.stop(&run, stop).await;
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
        let prompt = build_prompt(&agent.spec, self.ledger.messages(run_id).await?);
        let reserve = prompt.estimated_tokens + u64::from(agent.spec.max_output_tokens);
        if run.tokens_used() + reserve > run.limits.run_token_budget {
            let detail = format!(
                "the next LLM call may use up to {reserve} tokens; {} of the run's budget of {} are spent",
                run.tokens_used(),
                run.limits.run_token_budget
            );
            return self
                .stop(&run, Terminal::new(StopReason::RunTokenBudget, detail))
                .await;
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
        if !self
            .hot
            .reserve_tokens(reservation, context.daily_token_budget)
            .await?
        {
            let (used, reserved) = self.hot.tokens_of_day(run.team_id, reservation.day).await?;
            let detail = format!(
                "the next LLM call may use up to {reserve} tokens; the team has used {used} and reserved {reserved} of its daily budget of {}",
                context.daily_token_budget
            );
            return self
                .stop(&run, Terminal::new(StopReason::TeamTokenBudget, detail))
                .await;
        }

        let started_at = Utc::now();
        let Some((attempt, seq)) = self
            .ledger
            .begin_step_attempt(run_id, step_no, &agent.name)
            .await?
        else {
            // The run ended (or the step was committed) since it was read:
            // give the reservation just made back.
            self.hot.cancel_reservation(run_id, step_no).await?;
            return self.current_outcome(run_id, step_no).await;
        };
        self.feed.publish(run_id, seq).await;

        // Only an earlier attempt can have stored a turn or tool results.
        let earlier_turn = if attempt > 1 {
            self.ledger.llm_turn(run_id, step_no).await?
        } else {
            None
        };
        let (turn, reused) = match earlier_turn {
            Some(turn) => (turn, true),
            None => {
                let request = ChatRequest {
                    model: agent.spec.model.clone(),
                    messages: prompt.messages,
                    tools: prompt.tools,
                    max_tokens: agent.spec.max_output_tokens,
                    temperature: agent.spec.temperature,
                };
                let circuit = Circuits::key(self.llm.endpoint(), &agent.spec.model);
                if let Gate::Open { until } = self.circuits.gate(self.hot.as_ref(), &circuit).await
                {
                    self.hot.cancel_reservation(run_id, step_no).await?;
                    let open = NewEvent::new(
                        EventType::LlmCircuitOpen,
                        Some(step_no),
                        json!({"model": agent.spec.model, "until": until, "attempt": attempt}),
                    );
                    if let Some(seq) = self.ledger.append_run_events(run_id, &[open]).await? {
                        self.feed.publish(run_id, seq).await;
                    }
                    return Err(StepError::CircuitOpen {
                        detail: format!(
                            "the provider failed {} calls in a row; no call to {} before {until}",
                            self.circuits.failures_to_open(),
                            agent.spec.model
                        ),
                        until,
                    });
                }
                let answer = self.llm.complete(&request, deadline).await;
                // Only a provider that does not answer counts against its circuit.
                match &answer {
                    Err(LlmError::Unavailable(_)) => {
                        self.circuits.failed(self.hot.as_ref(), &circuit).await
                    }
                    _ => self.circuits.succeeded(self.hot.as_ref(), &circuit).await,
                }
                let response = match answer {
                    Ok(response) => response,
                    Err(error) => {
                        self.hot.cancel_reservation(run_id, step_no).await?;
                        // Cut short by the run's own deadline (or too close to
                        // it for another try): the run is over once it passes.
                        if let Some(at) =
                            run_deadline.filter(|at| *at <= Instant::now() + RUN_DEADLINE_GRACE)
                        {
                            tokio::time::sleep_until(at).await;
                            if let Some(timeout) = timed_out(&run) {
                                return self.stop(&run, timeout).await;
                            }
                        }
                        return Err(error.into());
                    }
                };
                let fresh = LlmTurn {
                    agent: agent.name.clone(),
                    model: agent.spec.model.clone(),
                    message: response.message,
                    input_tokens: response.usage.prompt_tokens as i64,
                    output_tokens: response.usage.completion_tokens as i64,
                    context_trimmed: prompt.trimmed as i32,
                };
                let calls = tool_calls_of(&fresh.message);
                let mut events = vec![NewEvent::new(
                    EventType::LlmCompleted,
                    Some(step_no),
                    json!({
                        "agent": agent.name,
                        "model": fresh.model,
                        "input_tokens": fresh.input_tokens,
                        "output_tokens": fresh.output_tokens,
                        "tool_calls": calls.iter().map(|c| c.function.name.as_str()).collect::<Vec<_>>(),
                    }),
                )];
                events.extend(tool_started_events(&agent, step_no, &calls, &[], attempt));
                let (stored, seq) = persist("the LLM turn", deadline, || {
                    self.ledger.save_llm_turn(run_id, step_no, &fresh, &events)
                })
                .await?;
                if let Some(seq) = seq {
                    self.feed.publish(run_id, seq).await;
                }
                (stored, false)
            }
        };
        let actual = (turn.input_tokens + turn.output_tokens).max(0) as u64;
        persist("the token settlement", deadline, || {
            self.hot.settle_tokens(run_id, step_no, actual)
        })
        .await?;
        let calls = tool_calls_of(&turn.message);
        let done = if reused {
            let done = self.ledger.tool_calls(run_id, step_no).await?;
            let restarts = tool_started_events(&agent, step_no, &calls, &done, attempt);
            if !restarts.is_empty() {
                let appended = persist("the restarted tool events", deadline, || {
                    self.ledger.append_run_events(run_id, &restarts)
                })
                .await?;
                if let Some(seq) = appended {
                    self.feed.publish(run_id, seq).await;
                }
            }
            done
        } else {
            Vec::new()
        };
        let results = self
            .run_tools(run_id, step_no, &agent, &calls, done, deadline)
            .await?;

        let commit = self
            .decide(
                &run, &agent, step_no, attempt, started_at, turn, &calls, results,
            )
            .await?;
        let committed = persist("the step's commit", deadline, || {
            self.ledger.commit_step(&commit)
        })
        .await?;
        match committed {
            CommitResult::Committed { outcome, last_seq } => {
                self.feed.publish(run_id, last_seq).await;
                if commit.terminal.is_some() {
                    self.release(run_id).await;
                }
                tracing::debug!(next = ?outcome.next, "step committed");
                Ok(outcome)
            }
            CommitResult::AlreadyCommitted(outcome) | CommitResult::RunEnded(outcome) => {
                if outcome.next == StepNext::Finish {
                    self.release(run_id).await;
                }
                Ok(outcome)
            }
        }
    }

    /// The kill switches checked before any spend.
    async fn kill_switch(&self, run: &Run, step_no: i32) -> Result<Option<Terminal>, StepError> {
        if let Some(reason) = self.hot.cancel_flag(run.id).await? {
            return Ok(Some(Terminal::new(StopReason::Cancelled, reason)));
        }
        if let Some(timeout) = timed_out(run) {
            return Ok(Some(timeout));
        }
        if step_no > run.limits.max_steps as i32 {
            return Ok(Some(Terminal::new(
                StopReason::MaxSteps,
                format!(
                    "the run reached its limit of {} steps",
                    run.limits.max_steps
                ),
            )));
        }
        Ok(None)
    }

    async fn stop(&self, run: &Run, terminal: Terminal) -> Result<StepOutcome, StepError> {
        self.finalize(run.id, terminal).await?;
        self.current_outcome(run.id, run.next_step).await
    }

    /// The outcome for a step that this call did not commit.
    async fn current_outcome(&self, run_id: RunId, step_no: i32) -> Result<StepOutcome, StepError> {
        if let Some(outcome) = self.ledger.step_outcome(run_id, step_no).await? {
            return Ok(outcome);
        }
        let run = self
            .ledger
            .get_run(run_id)
            .await?
            .ok_or_else(|| StepError::fatal(StopReason::Internal, "run not found"))?;
        if run.status.is_terminal() {
            Ok(StepOutcome::finished(&run))
        } else {
            Err(StepError::Store(format!(
                "step {step_no} could not start: the run is {} at step {}",
                run.status, run.next_step
            )))
        }
    }

    async fn release(&self, run_id: RunId) {
        if let Err(error) = self.hot.release_run(run_id).await {
            tracing::warn!(%error, "could not release hot state");
        }
    }

    /// Runs the turn's tool calls concurrently (handoffs excepted), skipping
    /// those a previous attempt finished, and keeps each result as it lands.
    async fn run_tools(
        &self,
        run_id: RunId,
        step_no: i32,
        agent: &AgentVersion,
        calls: &[ToolCall],
        done: Vec<ToolCallRecord>,
        deadline: Instant,
    ) -> Result<Vec<ToolCallRecord>, StepError> {
        let pending = pending_calls(agent, calls, &done);
        let futures = pending.into_iter().map(|(index, call)| async move {
            let call_ref = CallRef {
                run_id,
                step_no,
                call_index: index as i32,
            };
            let spec = agent.spec.tool(&call.function.name);
            let record = match spec {
                Some(spec) => {
                    self.tools
                        .run(spec, call_ref, &call.id, &call.function.arguments, deadline)
                        .await
                }
                None => unknown_tool(call_ref, call),
            };
            // A call with effects outside agentrun is kept the moment it
            // returns, so a retried step never makes it again; built-ins are
            // simply re-run and kept with the step.
            if spec.is_some_and(|s| matches!(s.kind, ToolKind::Http { .. })) {
                persist("a tool call's result", deadline, || {
                    self.ledger.save_tool_call(run_id, step_no, &record)
                })
                .await?;
            }
            Ok::<_, StepError>(record)
        });
        let mut records = done;
        for result in join_all(futures).await {
            records.push(result?);
        }
        records.sort_by_key(|r| r.call_index);
        Ok(records)
    }

    /// Turns the LLM turn and tool results into the step's commit: the next
    /// message(s), a handoff, a repair prompt, or the end of the run.
    #[allow(clippy::too_many_arguments)]
    async fn decide(
        &self,
        run: &Run,
        agent: &AgentVersion,
        step_no: i32,
        attempt: i32,
        started_at: chrono::DateTime<Utc>,
        turn: LlmTurn,
        calls: &[ToolCall],
        results: Vec<ToolCallRecord>,
    ) -> Result<StepCommit, StepError> {
        let step = Some(step_no);
        let mut events = Vec::new();
        let mut messages = vec![turn.message.clone()];
        let mut handoff_to = None;
        let mut terminal = None;
        let mut repairs_used = run.repairs_used;

        for (index, call) in calls.iter().enumerate() {
            if let Some(target) = agent.spec.handoff_target(&call.function.name) {
                let content = if handoff_to.is_some() || terminal.is_some() {
                    json!({"error": "only one handoff per turn is performed"})
                } else if run.handoff_depth + 1 > run.limits.max_handoff_depth as i32 {
                    terminal = Some(Terminal::new(
                        StopReason::HandoffDepth,
                        format!(
                            "handoff to {target} would exceed the limit of {} handoffs",
                            run.limits.max_handoff_depth
                        ),
                    ));
                    json!({"error": "handoff limit reached"})
                } else {
                    match self
                        .ledger
                        .get_agent(run.team_id, target.as_str(), None)
                        .await?
                    {
                        Some(next) => {
                            events.push(NewEvent::new(
                                EventType::Handoff,
                                step,
                                json!({
                                    "from": agent.name,
                                    "to": next.name,
                                    "version": next.version,
                                    "depth": run.handoff_depth + 1,
                                }),
                            ));
                            handoff_to = Some((next.name.clone(), next.version));
                            json!({"transferred_to": next.name})
                        }
                        None => json!({"error": format!("agent {target} does not exist")}),
                    }
                };
                messages.push(ChatMessage::Tool {
                    tool_call_id: call.id.clone(),
                    content: content.to_string(),
                });
            } else if let Some(record) = results.iter().find(|r| r.call_index == index as i32) {
                events.push(NewEvent::new(
                    EventType::ToolCompleted,
                    step,
                    json!({
                        "call_index": record.call_index,
                        "tool": record.name,
                        "is_error": record.is_error,
                        "attempts": record.attempts,
                        "duration_ms": (record.finished_at - record.started_at).num_milliseconds(),
                    }),
                ));
                messages.push(ChatMessage::Tool {
                    tool_call_id: call.id.clone(),
                    content: record.result.clone(),
                });
            }
        }

        if calls.is_empty() {
            let content = match &turn.message {
                ChatMessage::Assistant { content, .. } => content.clone().unwrap_or_default(),
                _ => String::new(),
            };
            let checked = match self.schemas.validator(run.team_id, agent).await {
                Ok(validator) => check_output(validator.as_deref(), &content),
                Err(problem) => Err(vec![problem]),
            };
            match checked {
                Ok(output) => {
                    terminal = Some(Terminal {
                        reason: StopReason::Completed,
                        detail: None,
                        output: Some(output),
                        raw_output: Some(content),
                    });
                }
                Err(problems) => {
                    events.push(NewEvent::new(
                        EventType::OutputInvalid,
                        step,
                        json!({"errors": problems, "repairs_used": repairs_used}),
                    ));
                    if repairs_used < agent.spec.max_repairs as i32 {
                        repairs_used += 1;
                        messages.push(ChatMessage::User {
                            content: repair_prompt(&problems),
                        });
                    } else {
                        terminal = Some(Terminal {
                            reason: StopReason::OutputInvalid,
                            detail: Some(format!(
                                "the answer failed its output schema after {repairs_used} repair attempts: {}",
                                problems.join("; ")
                            )),
                            output: None,
                            raw_output: Some(content),
                        });
                    }
                }
            }
        }

        let after = terminal.as_ref().map(|terminal| {
            let mut after = run.clone();
            after.status = terminal.reason.status();
            after.stop_reason = Some(terminal.reason);
            after.stop_detail = terminal.detail.clone();
            after.output = terminal.output.clone();
            after.raw_output = terminal.raw_output.clone();
            after.input_tokens += turn.input_tokens;
            after.output_tokens += turn.output_tokens;
            after.llm_calls += 1;
            after
        });
        events.push(NewEvent::new(
            EventType::StepCompleted,
            step,
            json!({
                "agent": agent.name,
                "input_tokens": turn.input_tokens,
                "output_tokens": turn.output_tokens,
                "context_trimmed": turn.context_trimmed,
                "next": if terminal.is_some() { "finish" } else { "step" },
            }),
        ));
        if let Some(after) = &after {
            events.push(terminal_event(after, step));
        }
        Ok(StepCommit {
            run_id: run.id,
            step_no,
            attempt,
            agent: agent.name.clone(),
            agent_version: agent.version,
            model: turn.model,
            started_at,
            input_tokens: turn.input_tokens,
            output_tokens: turn.output_tokens,
            context_trimmed: turn.context_trimmed,
            messages,
            events,
            handoff_to,
            repairs_used,
            terminal,
            tool_calls: results,
        })
    }
}

/// An LLM call that fails this close to the run's deadline ends the run
/// there rather than being tried again.
const RUN_DEADLINE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The run's timeout, once its deadline has passed.
fn timed_out(run: &Run) -> Option<Terminal> {
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

fn tool_calls_of(message: &ChatMessage) -> Vec<ToolCall> {
    match message {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls.clone(),
        _ => Vec::new(),
    }
}

/// Tool calls (not handoffs) that have no result yet, with their index.
fn pending_calls<'a>(
    agent: &AgentVersion,
    calls: &'a [ToolCall],
    done: &[ToolCallRecord],
) -> Vec<(usize, &'a ToolCall)> {
    calls
        .iter()
        .enumerate()
        .filter(|(index, call)| {
            agent.spec.handoff_target(&call.function.name).is_none()
                && !done.iter().any(|d| d.call_index == *index as i32)
        })
        .collect()
}

/// `tool.started` for each tool call not finished yet.
fn tool_started_events(
    agent: &AgentVersion,
    step_no: i32,
    calls: &[ToolCall],
    done: &[ToolCallRecord],
    attempt: i32,
) -> Vec<NewEvent> {
    pending_calls(agent, calls, done)
        .into_iter()
        .map(|(index, call)| {
            NewEvent::new(
                EventType::ToolStarted,
                Some(step_no),
                json!({"call_index": index, "tool": call.function.name, "attempt": attempt}),
            )
        })
        .collect()
}

fn unknown_tool(call_ref: CallRef, call: &ToolCall) -> ToolCallRecord {
    let now = Utc::now();
    ToolCallRecord {
        call_index: call_ref.call_index,
        tool_call_id: call.id.clone(),
        name: call.function.name.clone(),
        arguments: serde_json::from_str(&call.function.arguments)
            .unwrap_or_else(|_| json!(call.function.arguments)),
        result: json!({"error": format!("no tool named {:?}", call.function.name)}).to_string(),
        is_error: true,
        truncated: false,
        attempts: 0,
        started_at: now,
        finished_at: now,
    }
}
