//! Context summarization: when a step's prompt would exceed the agent's
//! `input_token_budget`, the oldest turns are summarized into one message
//! by the agent's `summarizer_model` (its own model unless set). The
//! summary is kept in the ledger at once, as the conversation's next
//! message (`ChatMessage::Summary`, covering the messages before a point),
//! with its call's tokens and a `context.summarized` event, so a retry or a
//! resumed run reuses it and never summarizes twice. Its call is budgeted
//! like any other: within the run's token budget, and reserved against the
//! team's day. When summarizing is not possible (no room in a budget, the
//! provider fails), the prompt is trimmed as before.

use chrono::Utc;
use serde_json::json;
use tokio::time::Instant;

use super::context::{build_prompt, Prompt};
use crate::domain::limits::prefix;
use crate::domain::message::estimate_tokens;
use crate::domain::{ChatMessage, EventType, NewEvent, Run};
use crate::engine::{Circuits, Engine, Gate, StepError};
use crate::ledger::AgentVersion;
use crate::ports::{ChatRequest, TokenReservation};

/// What the summarizer is told.
const SUMMARIZER_INSTRUCTIONS: &str = "You summarize a conversation between a user, an assistant \
    and its tools for the assistant that will continue it. Keep the user's request, the facts \
    found (ids, names, numbers, dates), the decisions made and what is still to do. Be concise; \
    write plain text.";

/// Longest summary asked for, in tokens (less when the agent allows less).
const SUMMARY_MAX_TOKENS: u32 = 1024;

/// Characters of one message the summarizer sees at most.
const SUMMARIZED_MESSAGE_CHARS: usize = 2_000;

/// A summary call's key among the run's token reservations: apart from the
/// steps' own calls (negative), and one per length of the conversation it
/// summarizes, so a retry of the same summary keeps its reservation and
/// another summary gets its own.
fn summary_key(message_count: usize) -> i32 {
    -(message_count.min(i32::MAX as usize) as i32)
}

/// The summary call may take at most this share of what is left of the
/// step, so the step's own call keeps its time.
const SUMMARY_SHARE_OF_STEP: u32 = 2;

/// Less time than this left in the step: no summary.
const MIN_SUMMARY_TIME: std::time::Duration = std::time::Duration::from_secs(2);

/// The latest summary: its text and how many messages it covers.
fn latest(history: &[ChatMessage]) -> Option<(&str, usize)> {
    history.iter().rev().find_map(|m| match m {
        ChatMessage::Summary { content, covers } => Some((content.as_str(), *covers)),
        _ => None,
    })
}

/// Where the summary ends: the oldest messages go, the recent ones (half
/// the budget) stay, and the kept part starts with no tool result (whose
/// call it would have lost). `None` when nothing new would be summarized.
fn covers(history: &[ChatMessage], budget_tokens: u64) -> Option<usize> {
    let already = latest(history).map_or(0, |(_, covers)| covers);
    let keep_chars = budget_tokens as usize * 4 / 2;
    let mut kept = 0;
    let mut cut = history.len();
    for (index, message) in history.iter().enumerate().rev() {
        if index < already || kept + message.text_len() > keep_chars {
            break;
        }
        kept += message.text_len();
        cut = index;
    }
    while matches!(history.get(cut), Some(ChatMessage::Tool { .. })) {
        cut += 1;
    }
    (cut > already && cut <= history.len()).then_some(cut)
}

fn cut(text: &str) -> String {
    let kept = prefix(text, SUMMARIZED_MESSAGE_CHARS);
    if kept.len() == text.len() {
        return text.to_owned();
    }
    format!("{kept}… [{} more characters]", text.len() - kept.len())
}

/// The text the summarizer reads: the latest summary, then the messages
/// after what it covers, up to `covers`.
fn transcript(history: &[ChatMessage], covers: usize) -> String {
    let mut lines = Vec::new();
    let from = match latest(history) {
        Some((content, already)) => {
            lines.push(format!("Earlier summary: {content}"));
            already
        }
        None => 0,
    };
    for message in &history[from..covers] {
        lines.push(match message {
            ChatMessage::Summary { .. } => continue,
            ChatMessage::System { content } => format!("System: {}", cut(content)),
            ChatMessage::User { content } => format!("User: {}", cut(content)),
            ChatMessage::Tool { content, .. } => format!("Tool result: {}", cut(content)),
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                let mut line = format!("Assistant: {}", cut(content.as_deref().unwrap_or("")));
                for call in tool_calls {
                    line.push_str(&format!(
                        " [called {}({})]",
                        call.function.name,
                        cut(&call.function.arguments)
                    ));
                }
                line
            }
        });
    }
    lines.join("\n")
}

impl Engine {
    /// Summarizes the oldest turns of `history`, whose prompt (`before`
    /// tokens) exceeds the agent's budget, keeping the summary in the
    /// ledger and at the end of `history` (and its tokens on `run`, as the
    /// ledger has them); gives the prompt with the summary. Any failure
    /// leaves both as they were (`None`).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn summarize(
        &self,
        run: &mut Run,
        agent: &AgentVersion,
        step_no: i32,
        daily_budget: u64,
        history: &mut Vec<ChatMessage>,
        before: u64,
        deadline: Instant,
    ) -> Result<Option<Prompt>, StepError> {
        let spec = &agent.spec;
        let Some(covers) = covers(history, u64::from(spec.input_token_budget)) else {
            return Ok(None);
        };
        let model = spec
            .summarizer_model
            .clone()
            .unwrap_or_else(|| spec.model.clone());
        let request = ChatRequest {
            model: model.clone(),
            messages: vec![
                ChatMessage::System {
                    content: SUMMARIZER_INSTRUCTIONS.to_owned(),
                },
                ChatMessage::User {
                    content: transcript(history, covers),
                },
            ],
            tools: Vec::new(),
            max_tokens: SUMMARY_MAX_TOKENS.min(spec.max_output_tokens),
            temperature: None,
            tool_choice: None,
        };
        let chars: usize = request.messages.iter().map(ChatMessage::text_len).sum();
        let reserve = estimate_tokens(chars) + u64::from(request.max_tokens);
        if run.tokens_used() + reserve > run.limits.run_token_budget {
            tracing::info!(
                reserve,
                "no room in the run's budget to summarize; trimming instead"
            );
            return Ok(None);
        }
        let llm = self.llm.of(spec.provider);
        let circuit = Circuits::key(llm.endpoint(), &model);
        if let Gate::Open { .. } = self.circuits.gate(self.hot.as_ref(), &circuit).await {
            tracing::info!(%model, "the summarizer's circuit is open; trimming instead");
            return Ok(None);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left < MIN_SUMMARY_TIME {
            return Ok(None);
        }
        let summary_deadline = Instant::now() + left / SUMMARY_SHARE_OF_STEP;
        let key = summary_key(history.len());
        let reservation = TokenReservation {
            team: run.team_id,
            run: run.id,
            step_no: key,
            day: Utc::now().date_naive(),
            tokens: reserve,
        };
        if !self.hot.reserve_tokens(reservation, daily_budget).await? {
            tracing::info!(
                reserve,
                "no room in the team's day to summarize; trimming instead"
            );
            return Ok(None);
        }
        let answer = llm.complete(&request, summary_deadline, None).await;
        self.circuits
            .record(self.hot.as_ref(), &circuit, &answer)
            .await;
        let response = match answer {
            Ok(response) => response,
            Err(error) => {
                self.hot.cancel_reservation(run.id, key).await?;
                tracing::warn!(%error, %model, "summarizing failed; trimming instead");
                return Ok(None);
            }
        };
        let (input, output) = (
            response.usage.prompt_tokens as i64,
            response.usage.completion_tokens as i64,
        );
        self.hot
            .settle_tokens(run.id, key, (input + output).max(0) as u64)
            .await?;
        let content = match response.message {
            ChatMessage::Assistant {
                content: Some(text),
                ..
            } if !text.trim().is_empty() => text,
            _ => {
                tracing::warn!(%model, "the summarizer answered without text; trimming instead");
                return Ok(None);
            }
        };
        let summary = ChatMessage::Summary { content, covers };
        let mut summarized = history.clone();
        summarized.push(summary.clone());
        let shown = build_prompt(spec, summarized.clone());
        let after = shown.untrimmed_tokens;
        // A summary no shorter than what it replaces is not kept (its call
        // is still metered); trimming takes over.
        let kept = after < before;
        let event = NewEvent::new(
            EventType::ContextSummarized,
            Some(step_no),
            json!({
                "model": model,
                "covers": covers,
                "kept": kept,
                "before_tokens": before,
                "after_tokens": if kept { after } else { before },
                "input_tokens": input,
                "output_tokens": output,
            }),
        );
        let saved = self
            .ledger
            .save_summary(
                run.id,
                step_no,
                &agent.name,
                kept.then_some(&summary),
                history.len() as i32,
                &model,
                (input, output),
                &event,
            )
            .await?;
        let Some(seq) = saved else {
            return Ok(None);
        };
        self.feed.publish(run.id, seq).await;
        run.input_tokens += input;
        run.output_tokens += output;
        run.llm_calls += 1;
        run.last_seq = seq;
        if !kept {
            return Ok(None);
        }
        *history = summarized;
        Ok(Some(shown))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(text: &str) -> ChatMessage {
        ChatMessage::User {
            content: text.to_owned(),
        }
    }

    fn tool(text: &str) -> ChatMessage {
        ChatMessage::Tool {
            tool_call_id: "c".to_owned(),
            content: text.to_owned(),
        }
    }

    fn assistant() -> ChatMessage {
        ChatMessage::Assistant {
            content: Some("calling".to_owned()),
            tool_calls: Vec::new(),
        }
    }

    #[test]
    fn the_summary_ends_before_the_recent_turns_and_never_inside_a_call() {
        let big = "x".repeat(400);
        let history = vec![
            user("task"),
            assistant(),
            tool(&big),
            assistant(),
            tool(&big),
        ];
        // 100 tokens: 200 characters kept, which the last result alone
        // exceeds; the kept part may not start with a tool result.
        let cut = covers(&history, 100).unwrap();
        assert_eq!(cut, 5);
        // 250 tokens: the last call and its result stay.
        assert_eq!(covers(&history, 250), Some(3));
        // Nothing new once a summary covers it all.
        let mut summarized = history.clone();
        summarized.push(ChatMessage::Summary {
            content: "s".to_owned(),
            covers: 5,
        });
        assert_eq!(covers(&summarized, 100), None);
    }
}
