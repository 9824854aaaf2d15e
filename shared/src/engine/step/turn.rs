//! The step's LLM turn: the one an earlier attempt kept, or a new call —
//! unless the provider's circuit is open. A new turn is kept at once when
//! calls with effects outside agentrun follow (HTTP tools, or a built-in that
//! takes a while), so no retry asks the model again before making them; a
//! turn followed only by instant built-ins, or a final answer, goes to the
//! step's commit directly. The call's reservation is settled when the
//! next step reserves, or when the run ends. A streaming agent's call sends
//! its text to stream subscribers as it arrives; a kept turn, reused, sends
//! none.

use crate::metrics::{Timer, LLM_SECONDS};
use serde_json::json;
use tokio::time::Instant;

use super::approval::calls_needing_approval;
use super::deltas::StepDeltas;
use super::guards::{timed_out, FinalTurn, Ready};
use super::tools::tool_started_events;
use crate::domain::agent::Builtin;
use crate::domain::{Approval, ChatMessage, EventType, NewEvent, StepOutcome, ToolCall, ToolKind};
use crate::engine::{persist, Circuits, Engine, Gate, StepError};
use crate::ledger::{AgentVersion, LlmTurn};
use crate::ports::{ChatRequest, TextDeltas};

/// An LLM call that fails this close to the run's deadline ends the run
/// there rather than being tried again.
const RUN_DEADLINE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) struct Turn {
    pub turn: LlmTurn,
    /// Kept by an earlier attempt.
    pub reused: bool,
    pub calls: Vec<ToolCall>,
    /// `llm.completed` and `tool.started` of a turn not kept on its own: they
    /// go out with the commit.
    pub pending_events: Vec<NewEvent>,
    /// The turn was the run's final one (wind-down). A kept turn never is:
    /// a final turn's calls are not made, so it is not kept before them.
    pub final_turn: Option<FinalTurn>,
    /// The answers to the calls that waited for approval (all given).
    pub approvals: Vec<Approval>,
}

pub(super) enum Taken {
    Turn(Box<Turn>),
    /// The run ended at its deadline while the model was asked.
    Finished(StepOutcome),
}

pub(super) fn tool_calls_of(message: &ChatMessage) -> Vec<ToolCall> {
    match message {
        ChatMessage::Assistant { tool_calls, .. } => tool_calls.clone(),
        _ => Vec::new(),
    }
}

/// Whether a call has effects outside agentrun or takes long enough that a
/// crash may fall between the model's answer and the commit — or waits for
/// approval, when the step runs again to make it.
fn must_keep_turn_first(agent: &AgentVersion, calls: &[ToolCall]) -> bool {
    !calls_needing_approval(agent, calls).is_empty()
        || calls.iter().any(|call| {
            agent.spec.tool(&call.function.name).is_some_and(|tool| {
                matches!(
                    tool.kind,
                    ToolKind::Http { .. }
                        | ToolKind::Builtin {
                            builtin: Builtin::Sleep,
                            ..
                        }
                )
            })
        })
}

impl Engine {
    pub(super) async fn take_turn(&self, ready: &Ready) -> Result<Taken, StepError> {
        let (run_id, step_no) = (ready.run.id, ready.step_no);
        // Only an earlier attempt can have kept a turn.
        if ready.attempt > 1 {
            if let Some(turn) = self.ledger.llm_turn(run_id, step_no).await? {
                let calls = tool_calls_of(&turn.message);
                return Ok(Taken::Turn(Box::new(Turn {
                    turn,
                    reused: true,
                    calls,
                    pending_events: Vec::new(),
                    final_turn: None,
                    approvals: Vec::new(),
                })));
            }
        }
        let agent = &ready.agent;
        let llm = self.llm.of(agent.spec.provider);
        let circuit = Circuits::key(llm.endpoint(), &agent.spec.model);
        if let Gate::Open { until } = self.circuits.gate(self.hot.as_ref(), &circuit).await {
            self.hot.cancel_reservation(run_id, step_no).await?;
            let open = NewEvent::new(
                EventType::LlmCircuitOpen,
                Some(step_no),
                json!({"model": agent.spec.model, "until": until, "attempt": ready.attempt}),
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
        let request = ChatRequest {
            model: agent.spec.model.clone(),
            messages: ready.prompt.messages.clone(),
            tools: ready.prompt.tools.clone(),
            max_tokens: ready
                .final_turn
                .map_or(agent.spec.max_output_tokens, |last| last.max_tokens),
            temperature: agent.spec.temperature,
            tool_choice: ready.final_turn.map(|_| "none"),
        };
        let model = self.metrics.model_label(&request.model);
        let mut timer = Timer::start(&self.metrics, LLM_SECONDS, &[("model", model.as_str())]);
        let deltas = agent
            .spec
            .stream
            .then(|| StepDeltas::new(self.feed.as_ref(), run_id, step_no));
        let answer = llm
            .complete(
                &request,
                ready.deadline,
                deltas.as_ref().map(|d| d as &dyn TextDeltas),
            )
            .await;
        if let (Some(deltas), Ok(_)) = (&deltas, &answer) {
            deltas.finish().await;
        }
        timer.finish(if answer.is_ok() { "ok" } else { "error" });
        drop(timer);
        self.circuits
            .record(self.hot.as_ref(), &circuit, &answer)
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                self.hot.cancel_reservation(run_id, step_no).await?;
                // Cut short by the run's own deadline (or too close to it
                // for another try): the run is over once it passes.
                if let Some(at) = ready
                    .run_deadline
                    .filter(|at| *at <= Instant::now() + RUN_DEADLINE_GRACE)
                {
                    tokio::time::sleep_until(at).await;
                    if let Some(timeout) = timed_out(&ready.run) {
                        return self.stop(&ready.run, timeout).await.map(Taken::Finished);
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
            context_trimmed: ready.prompt.trimmed as i32,
        };
        // A final turn's tool calls are not made: its answer ends the run.
        let calls = if ready.final_turn.is_some() {
            Vec::new()
        } else {
            tool_calls_of(&fresh.message)
        };
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
        if deltas.is_some() {
            events[0].data["streamed"] = json!(true);
        }
        events.extend(tool_started_events(
            agent,
            step_no,
            &calls,
            &[],
            ready.attempt,
        ));
        let (turn, pending_events) = if must_keep_turn_first(agent, &calls) {
            let (stored, seq) = persist("the LLM turn", ready.deadline, || {
                self.ledger.save_llm_turn(run_id, step_no, &fresh, &events)
            })
            .await?;
            if let Some(seq) = seq {
                self.feed.publish(run_id, seq).await;
            }
            (stored, Vec::new())
        } else {
            (fresh, events)
        };
        Ok(Taken::Turn(Box::new(Turn {
            turn,
            reused: false,
            calls,
            pending_events,
            final_turn: ready.final_turn,
            approvals: Vec::new(),
        })))
    }
}
