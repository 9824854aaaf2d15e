use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Fault, MockScript, MockTurn};
use agentrun_e2e::{fast_llm, fast_policy, spawn_app_with};
use serde_json::json;

use agentrun_e2e::agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_with_retry_after_is_waited_out_and_the_step_succeeds() {
    let script = MockScript {
        turns: vec![MockTurn::text("fine")],
        faults: vec![Fault {
            status: 429,
            retry_after: Some(0.3),
            times: 1,
        }],
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("limited".to_owned(), script)])).await;
    app.put_agent("limited", agent("limited", json!({}))).await;
    let id = app.start_run("limited", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.mock.state.requests("limited"), 2);
    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["attempt"], 1, "the client's own retry handled it");
    // Retry-After (300 ms) is longer than the client's backoff cap (100 ms),
    // so the step lasted at least that long.
    let started: chrono::DateTime<chrono::Utc> =
        steps[0]["started_at"].as_str().unwrap().parse().unwrap();
    let finished: chrono::DateTime<chrono::Utc> =
        steps[0]["finished_at"].as_str().unwrap().parse().unwrap();
    assert!(finished - started >= chrono::Duration::milliseconds(300));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_keeps_failing_ends_the_run_with_llm_unavailable() {
    let script = MockScript {
        fail_always: Some(503),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("down".to_owned(), script)])).await;
    app.put_agent("down", agent("down", json!({}))).await;
    let id = app.start_run("down", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "llm_unavailable");
    assert!(app.steps(&id).await.is_empty());
    // Each step attempt makes 1 + client retries calls; the orchestrator makes 1 + max_retries attempts.
    let calls_per_attempt = 1 + u64::from(fast_llm(String::new()).max_retries);
    let attempts = 1 + u64::from(fast_policy().max_retries);
    assert_eq!(
        app.mock.state.requests("down"),
        calls_per_attempt * attempts
    );
    let events = app.all_events(&id).await;
    let started = events.iter().filter(|e| e.event == "step.started").count() as u64;
    assert_eq!(started, attempts);
    assert_eq!(events.last().unwrap().event, "run.failed");
}
