//! End-to-end tests of the embedded mode: real PostgreSQL, the mock LLM and
//! real HTTP. One binary, one module per area.

mod accounts;
mod api;
mod crash;
mod happy_path;
mod idempotency;
mod kill_switches;
mod llm_faults;
mod repair;
mod sse;
mod tools;
mod usage;

use serde_json::{json, Value};

/// A minimal agent spec on `model`, with `extra` fields merged in.
pub fn agent(model: &str, extra: Value) -> Value {
    let mut spec = json!({"model": model, "instructions": "You are a test agent."});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// A no-op builtin tool.
pub fn echo_tool(name: &str) -> Value {
    json!({"name": name, "kind": "builtin", "builtin": "echo"})
}
