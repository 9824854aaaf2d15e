//! What the step comes to: a handoff, a final answer checked against the
//! output schema (a repair prompt when it fails, within `max_repairs`), or
//! the next step — as the one commit that records it all.

use serde_json::json;

use super::approval::{decision, refusal, Decision};
use super::guards::{max_steps_detail, Ready};
use super::turn::Turn;
use crate::domain::event::terminal_event;
use crate::domain::Run;
use crate::domain::{ChatMessage, EventType, NewEvent, StopReason, Terminal};
use crate::engine::context::final_turn_message;
use crate::engine::output::{check_output, repair_prompt};
use crate::engine::{Engine, StepError};
use crate::ledger::{StepCommit, ToolCallRecord};

impl Engine {
    pub(super) async fn decide(
        &self,
        ready: &Ready,
        turn: Box<Turn>,
        results: Vec<ToolCallRecord>,
    ) -> Result<StepCommit, StepError> {
        let Turn {
            turn,
            calls,
            pending_events,
            final_turn,
            approvals,
            ..
        } = *turn;
        let (run, agent, step_no) = (&ready.run, &ready.agent, ready.step_no);
        let step = Some(step_no);
        let mut events = pending_events;
        let mut messages = match final_turn {
            Some(_) => vec![final_turn_message(&agent.spec), turn.message.clone()],
            None => vec![turn.message.clone()],
        };
        let mut wound_down = false;
        let mut handoff_to = None;
        let mut terminal = None;
        let mut repairs_used = run.repairs_used;

        for (index, call) in calls.iter().enumerate() {
            if let Some(target) = agent.spec.handoff_target(&call.function.name) {
                let refused = match decision(&approvals, index, call) {
                    Some(Decision::Refused(approval)) => Some(refusal(approval)),
                    _ => None,
                };
                let content = if let Some(refused) = refused {
                    refused
                } else if handoff_to.is_some() || terminal.is_some() {
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

        let (content, called_tools) = match &turn.message {
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => (content.clone().unwrap_or_default(), !tool_calls.is_empty()),
            _ => (String::new(), false),
        };
        if let (Some(last), true) = (final_turn, called_tools && content.trim().is_empty()) {
            terminal = Some(Terminal::new(
                last.otherwise,
                format!(
                    "{}; the final turn without tools called tools instead of answering",
                    limit_detail(run, last.otherwise)
                ),
            ));
        } else if calls.is_empty() {
            let checked = match self.schemas.validator(run.team_id, agent).await {
                Ok(validator) => check_output(validator.as_deref(), &content),
                Err(problem) => Err(vec![problem]),
            };
            match checked {
                Ok(output) => {
                    wound_down = final_turn.is_some();
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
                    if let Some(last) = final_turn {
                        terminal = Some(Terminal {
                            reason: last.otherwise,
                            detail: Some(format!(
                                "{}; the final answer failed its output schema: {}",
                                limit_detail(run, last.otherwise),
                                problems.join("; ")
                            )),
                            output: None,
                            raw_output: Some(content),
                        });
                    } else if repairs_used < agent.spec.max_repairs as i32 {
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
            after.wound_down = wound_down;
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
            attempt: ready.attempt,
            agent: agent.name.clone(),
            agent_version: agent.version,
            model: turn.model,
            started_at: ready.started_at,
            input_tokens: turn.input_tokens,
            output_tokens: turn.output_tokens,
            context_trimmed: turn.context_trimmed,
            messages,
            events,
            handoff_to,
            repairs_used,
            terminal,
            wound_down,
            tool_calls: results,
            begin_next: false,
        })
    }
}

/// The limit a final turn stood in for, as its stop detail says it.
fn limit_detail(run: &Run, reason: StopReason) -> String {
    match reason {
        StopReason::RunTokenBudget => format!(
            "the run reached its token budget of {}",
            run.limits.run_token_budget
        ),
        _ => max_steps_detail(run),
    }
}
