//! End-to-end tests of the embedded mode: real PostgreSQL, the mock LLM and
//! real HTTP. One binary, one module per area.

mod accounts;
mod admission;
mod api;
mod approvals;
mod cli;
mod console;
mod crash;
mod edge;
mod failure_modes;
mod happy_path;
mod idempotency;
mod kill_switches;
mod llm_faults;
mod metrics;
mod outbound;
mod repair;
mod sse;
mod summarization;
mod threads;
mod tls;
mod tools;
mod usage;
mod webhooks;
