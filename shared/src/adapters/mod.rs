//! Implementations of the ports: one module per backend.

pub mod anthropic;
pub mod aws;
pub mod degraded;
pub mod in_process;
pub mod llm_http;
pub mod openai;
pub mod postgres;
