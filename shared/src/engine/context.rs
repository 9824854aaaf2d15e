//! Builds the prompt for a step and keeps it inside the agent's input budget:
//! the conversation's latest summary stands in for the messages it covers
//! (see `engine::summary`), and, when that is not enough, the oldest tool
//! results are abbreviated.

use crate::domain::limits::prefix;
use crate::domain::message::estimate_tokens;
use crate::domain::{AgentSpec, ChatMessage};
use crate::ports::ToolDefinition;

#[derive(Clone, Debug)]
pub struct Prompt {
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolDefinition>,
    pub estimated_tokens: u64,
    /// The estimate before any tool result was abbreviated.
    pub untrimmed_tokens: u64,
    /// How many tool results were abbreviated to fit.
    pub trimmed: usize,
}

/// What the prompt shows of a summary.
fn summary_text(content: &str) -> String {
    format!("Summary of the earlier conversation:\n{content}")
}

/// The conversation as the model sees it: after the latest summary's
/// first `covers` messages, with the summary in their place.
pub fn visible(history: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let latest = history
        .iter()
        .rposition(|m| matches!(m, ChatMessage::Summary { .. }));
    let Some(at) = latest else {
        return history;
    };
    let (content, covers) = match &history[at] {
        ChatMessage::Summary { content, covers } => (content.clone(), *covers),
        _ => return history,
    };
    // A user message: some providers want the turns to begin with one.
    let mut shown = vec![ChatMessage::User {
        content: summary_text(&content),
    }];
    shown.extend(
        history
            .into_iter()
            .enumerate()
            .filter(|(index, message)| {
                *index >= covers && !matches!(message, ChatMessage::Summary { .. })
            })
            .map(|(_, message)| message),
    );
    shown
}

/// Tool results longer than this are candidates for abbreviation.
const KEEP_CHARS: usize = 200;

pub fn tool_definitions(spec: &AgentSpec) -> Vec<ToolDefinition> {
    let mut tools: Vec<ToolDefinition> = spec
        .tools
        .iter()
        .map(|t| ToolDefinition::function(&t.name, &t.description, t.parameters.clone()))
        .collect();
    tools.extend(spec.handoffs.iter().map(|agent| {
        ToolDefinition::function(
            &agent.handoff_tool(),
            &format!("Hand the conversation over to the {agent} agent."),
            serde_json::json!({"type": "object", "properties": {}}),
        )
    }));
    tools
}

pub fn build_prompt(spec: &AgentSpec, history: Vec<ChatMessage>) -> Prompt {
    assemble(spec, history, tool_definitions(spec))
}

/// What a run's final turn (graceful wind-down) says to the model; it is
/// kept in the conversation with the answer.
pub fn final_turn_message(spec: &AgentSpec) -> ChatMessage {
    let mut content = "This is your final turn: no more tool calls are possible. \
                       Give your best final answer now, from what you know so far."
        .to_owned();
    if spec.output_schema.is_some() {
        content.push_str(" Answer with JSON that matches the output schema.");
    }
    ChatMessage::User { content }
}

/// The prompt of a final turn: the conversation and the final-turn
/// message. The tools stay defined (providers refuse a conversation with
/// tool calls but no tools) and the call says none may be called.
pub fn build_final_prompt(spec: &AgentSpec, mut history: Vec<ChatMessage>) -> Prompt {
    history.push(final_turn_message(spec));
    assemble(spec, history, tool_definitions(spec))
}

fn assemble(spec: &AgentSpec, history: Vec<ChatMessage>, tools: Vec<ToolDefinition>) -> Prompt {
    let tool_chars: usize = tools
        .iter()
        .map(|t| {
            t.function.name.len()
                + t.function.description.len()
                + t.function.parameters.to_string().len()
        })
        .sum();
    let mut messages = Vec::with_capacity(history.len() + 1);
    messages.push(ChatMessage::System {
        content: spec.instructions.clone(),
    });
    messages.extend(visible(history));
    let mut chars: usize = tool_chars + messages.iter().map(ChatMessage::text_len).sum::<usize>();
    let untrimmed_tokens = estimate_tokens(chars);
    let budget_chars = spec.input_token_budget as usize * 4;
    let mut trimmed = 0;
    for message in messages.iter_mut() {
        if chars <= budget_chars {
            break;
        }
        if let ChatMessage::Tool { content, .. } = message {
            if content.len() > KEEP_CHARS {
                let cut = content.len() - KEEP_CHARS;
                let abbreviated = format!(
                    "{}… [abbreviated by agentrun: {cut} characters omitted to fit the context window]",
                    prefix(content, KEEP_CHARS)
                );
                chars = chars - content.len() + abbreviated.len();
                *content = abbreviated;
                trimmed += 1;
            }
        }
    }
    Prompt {
        messages,
        tools,
        estimated_tokens: estimate_tokens(chars),
        untrimmed_tokens,
        trimmed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(budget: u32) -> AgentSpec {
        serde_json::from_value(json!({
            "model": "m", "instructions": "be brief", "input_token_budget": budget
        }))
        .unwrap()
    }

    fn tool(content: &str) -> ChatMessage {
        ChatMessage::Tool {
            tool_call_id: "c".into(),
            content: content.into(),
        }
    }

    #[test]
    fn oldest_tool_results_are_abbreviated_first() {
        let history = vec![
            ChatMessage::User {
                content: "hi".into(),
            },
            tool(&"a".repeat(4000)),
            tool(&"b".repeat(4000)),
        ];
        // ~2,000 tokens of history against a 1,500-token budget: one trim suffices.
        let prompt = build_prompt(&spec(1500), history);
        assert_eq!(prompt.trimmed, 1);
        match (&prompt.messages[2], &prompt.messages[3]) {
            (
                ChatMessage::Tool { content: first, .. },
                ChatMessage::Tool {
                    content: second, ..
                },
            ) => {
                assert!(first.contains("abbreviated by agentrun"));
                assert_eq!(second.len(), 4000);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(prompt.estimated_tokens <= 1500);
    }

    #[test]
    fn prompts_within_budget_are_untouched() {
        let prompt = build_prompt(&spec(32_000), vec![tool(&"x".repeat(5000))]);
        assert_eq!(prompt.trimmed, 0);
        assert_eq!(prompt.messages.len(), 2);
    }
}
