//! The capabilities the engine and the API rely on, each a small trait with
//! one adapter per backend (see `crate::adapters`).

pub mod event_feed;
pub mod hot_store;
pub mod llm;
pub mod orchestrator;

pub use event_feed::{EventFeed, EventSource, EventSourceError};
pub use hot_store::{
    CancelFlags, CircuitState, CircuitStates, HotHealth, HotStore, HotStoreError, IdempotencyClaim,
    IdempotencyKeys, RateLimits, RunSlots, SlotHolder, TokenBudget, TokenReservation,
};
pub use llm::{
    ChatRequest, ChatResponse, LlmClient, LlmClients, LlmError, TextDeltas, ToolDefinition, Usage,
};
pub use orchestrator::{Orchestrator, OrchestratorError, StartOutcome};
