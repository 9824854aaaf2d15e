//! agentrun: runs LLM agents as durable, observable, budgeted jobs.
//!
//! Layout: `domain` (types and rules), `ports` (traits the engine talks to),
//! `adapters` (their implementations), `ledger` (the PostgreSQL source of
//! truth), `engine` (one agent step), `admission` (accepting a run),
//! `starter` (starting runs whose start was lost), `outbound` (the guard on
//! requests made for teams), `api` (the HTTP router),
//! `sse` (the event-stream core), `mock_llm` (the OpenAI-compatible test
//! double), `embedded` (wires it all in one process) and `cloud` (wires the
//! Lambda functions).

pub mod adapters;
pub mod admission;
pub mod api;
pub mod asl;
pub mod cloud;
pub mod domain;
pub mod embedded;
pub mod engine;
pub mod ledger;
pub mod listen;
pub mod metrics;
pub mod mock_llm;
pub mod outbound;
pub mod policy;
pub mod ports;
pub mod secret;
pub mod sse;
pub mod sse_client;
pub mod starter;
pub mod webhooks;
