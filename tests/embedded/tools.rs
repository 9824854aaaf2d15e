use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun_e2e::{spawn_app_with, ToolReceiver};
use chrono::{DateTime, Utc};
use serde_json::json;

use agentrun_e2e::agent;

/// Two HTTP tool calls from one LLM turn run at the same time: each starts
/// before the other finishes (from the recorded timestamps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_calls_from_one_turn_overlap() {
    let receiver = ToolReceiver::start(Duration::from_millis(300)).await;
    let script = MockScript::turns(vec![
        MockTurn::tools(&[("fetch_a", json!({"q": 1})), ("fetch_b", json!({"q": 2}))]),
        MockTurn::text("done"),
    ]);
    let app = spawn_app_with(HashMap::from([("parallel".to_owned(), script)])).await;
    let http_tool =
        |name: &str| json!({"name": name, "kind": "http", "url": receiver.url, "secret": "s3cret"});
    app.put_agent(
        "parallel",
        agent(
            "parallel",
            json!({"tools": [http_tool("fetch_a"), http_tool("fetch_b")]}),
        ),
    )
    .await;
    let id = app.start_run("parallel", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "done");

    let steps = app.steps(&id).await;
    let calls = steps[0]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    let time = |v: &serde_json::Value| v.as_str().unwrap().parse::<DateTime<Utc>>().unwrap();
    let (a_start, a_end) = (
        time(&calls[0]["started_at"]),
        time(&calls[0]["finished_at"]),
    );
    let (b_start, b_end) = (
        time(&calls[1]["started_at"]),
        time(&calls[1]["finished_at"]),
    );
    assert!(
        a_start < b_end && b_start < a_end,
        "calls did not overlap: {calls:?}"
    );

    // Each call carried its own idempotency key and a signature.
    let counts = receiver.counts();
    assert_eq!(counts.get(&format!("{id}:1:0")), Some(&1));
    assert_eq!(counts.get(&format!("{id}:1:1")), Some(&1));
    let signatures = receiver.signatures.lock().unwrap().clone();
    assert!(signatures
        .iter()
        .all(|s| s.as_deref().is_some_and(|s| s.starts_with("sha256="))));
}

/// A tool that keeps timing out is retried twice, then its error goes back
/// to the model, and the run still completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timing_out_tool_is_retried_twice_then_reported_to_the_model() {
    let receiver = ToolReceiver::start(Duration::from_millis(500)).await;
    let script = MockScript::turns(vec![
        MockTurn::tool("slow", json!({})),
        MockTurn::text("gave up on the tool"),
    ]);
    let app = spawn_app_with(HashMap::from([("timeouts".to_owned(), script)])).await;
    app.put_agent(
        "timeouts",
        agent("timeouts", json!({"tools": [{"name": "slow", "kind": "http", "url": receiver.url, "timeout_ms": 100}]})),
    )
    .await;
    let id = app.start_run("timeouts", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let steps = app.steps(&id).await;
    let call = &steps[0]["tool_calls"][0];
    assert_eq!(call["is_error"], true);
    assert_eq!(call["attempts"], 3);
    assert!(call["result"].as_str().unwrap().contains("timed out"));
    assert_eq!(receiver.counts().get(&format!("{id}:1:0")), Some(&3));
}
