//! Domain types: identifiers, agent specs, runs, messages and events.

pub mod agent;
pub mod approval;
pub mod error_code;
pub mod event;
pub mod ids;
pub mod limits;
pub mod message;
pub mod run;
pub mod team;

pub use agent::{
    AgentName, AgentSpec, Provider, RunLimits, ToolKind, ToolSpec, Webhook, WebhookSpec,
    AGENT_NAME_PATTERN,
};
pub use approval::{Approval, ApprovalAnswer, ApprovalKind, ApprovalRule, ApprovalStatus};
pub use error_code::ErrorCode;
pub use event::{EventType, NewEvent, RunEvent, TextDelta};
pub use ids::{RunId, TeamId, ThreadId};
pub use message::{ChatMessage, FunctionCall, ToolCall};
pub use run::{Run, RunStatus, StepNext, StepOutcome, StopReason, Terminal};
pub use team::{Micros, TeamLimits};
