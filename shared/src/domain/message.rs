//! Conversation messages in the OpenAI Chat Completions wire form, which is
//! also how the ledger stores them.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "lowercase")]
pub enum ChatMessage {
    System {
        content: String,
    },
    User {
        content: String,
    },
    Assistant {
        #[serde(default)]
        content: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        tool_calls: Vec<ToolCall>,
    },
    Tool {
        tool_call_id: String,
        content: String,
    },
    /// A summary of the conversation's first `covers` messages, which the
    /// prompt shows in their place (never sent to a provider as such).
    Summary {
        content: String,
        covers: usize,
    },
}

impl ChatMessage {
    /// Characters of text the message carries, for token estimates.
    pub fn text_len(&self) -> usize {
        match self {
            ChatMessage::System { content }
            | ChatMessage::User { content }
            | ChatMessage::Summary { content, .. } => content.len(),
            ChatMessage::Tool { content, .. } => content.len() + 16,
            ChatMessage::Assistant {
                content,
                tool_calls,
            } => {
                content.as_deref().map_or(0, str::len)
                    + tool_calls
                        .iter()
                        .map(|c| c.function.name.len() + c.function.arguments.len() + 16)
                        .sum::<usize>()
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".to_owned()
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FunctionCall {
    pub name: String,
    /// JSON text, as the provider sends it.
    pub arguments: String,
}

/// Rough token estimate (four characters a token), used for budgets before a call.
pub fn estimate_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}
