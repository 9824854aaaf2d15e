//! Context summarization: the oldest turns are summarized when a prompt
//! would exceed the agent's `input_token_budget`, and a summary is made
//! once, even across a crash.

use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Latency, MockLlm, MockScript, MockTurn};
use agentrun::sse_client::ParsedEvent;
use agentrun_e2e::{
    agent, api_key, count_for_run, fresh_database, spawn_app_with, wait_for_count, wait_healthy,
    DevServer,
};
use serde_json::{json, Value};

const BUDGET: u64 = 1_500;

/// A run's summaries.
const SUMMARIZED: &str =
    "SELECT count(*) FROM run_events WHERE run_id = $1 AND type = 'context.summarized'";

/// A model that echoes about 400 tokens at every step, and answers in the
/// schema when offered no tools (its final turn).
fn echoing(latency_ms: u64) -> MockScript {
    let blob = "lorem ipsum ".repeat(135);
    let mut turns = vec![MockTurn::tool("echo", json!({"blob": blob})); 3];
    turns.push(MockTurn::json(json!({"answer": "done"})));
    MockScript {
        turns,
        latency_ms: Latency::Fixed(latency_ms),
        ..MockScript::default()
    }
}

fn summarizer() -> MockScript {
    MockScript::turns(vec![MockTurn::text(
        "The user asked to echo blobs; every echo came back intact.",
    )])
}

fn echo_agent(max_steps: u32) -> Value {
    echo_agent_on("openai", max_steps)
}

fn echo_agent_on(provider: &str, max_steps: u32) -> Value {
    agent(
        "echoer",
        json!({
            "provider": provider,
            "summarizer_model": "summarizer",
            "input_token_budget": BUDGET,
            "tools": [{"name": "echo", "kind": "builtin", "builtin": "echo"}],
            "output_schema": {"type": "object", "required": ["answer"],
                              "properties": {"answer": {"type": "string"}}},
            "limits": {"max_steps": max_steps},
        }),
    )
}

fn summarized(events: &[ParsedEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "context.summarized")
        .map(|e| serde_json::from_str::<Value>(&e.data).unwrap()["data"].clone())
        .collect()
}

/// Thirty steps of large tool results: every prompt stays under the
/// budget through summaries (nothing trimmed), each summary made once and
/// metered with the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_run_stays_under_its_input_budget_through_summaries() {
    long_run_through_summaries("openai").await;
}

/// The same through the Anthropic Messages API, whose mock refuses what
/// the API refuses (tool blocks without tools, a first turn not the user's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_anthropic_run_stays_under_its_input_budget_through_summaries() {
    long_run_through_summaries("anthropic").await;
}

async fn long_run_through_summaries(provider: &str) {
    let app = spawn_app_with(HashMap::from([
        ("echoer".to_owned(), echoing(0)),
        ("summarizer".to_owned(), summarizer()),
    ]))
    .await;
    app.put_agent("echoer", echo_agent_on(provider, 30)).await;
    let id = app.start_run("echoer", json!("echo blobs")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["wound_down"], true);

    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 30);
    for step in &steps {
        // The mock counts the prompt it was sent (without tool definitions).
        let sent = step["input_tokens"].as_u64().unwrap();
        assert!(
            sent <= BUDGET,
            "step {} sent {sent} tokens",
            step["step_no"]
        );
        assert_eq!(step["context_trimmed"], 0, "{step}");
    }
    let summaries = summarized(&app.all_events(&id).await);
    assert!(summaries.len() >= 5, "{summaries:?}");
    for summary in &summaries {
        let (before, after) = (
            summary["before_tokens"].as_u64().unwrap(),
            summary["after_tokens"].as_u64().unwrap(),
        );
        assert!(before > BUDGET && after <= BUDGET, "{summary}");
        assert_eq!(summary["kept"], true);
        assert_eq!(summary["model"], "summarizer");
        // It reads the earlier summary and the newer turns, not everything.
        assert!(
            summary["input_tokens"].as_u64().unwrap() < 2 * BUDGET,
            "{summary}"
        );
    }
    let made = summaries.len() as u64;
    assert_eq!(app.mock.state.requests("summarizer"), made);
    assert_eq!(run["usage"]["llm_calls"], 30 + made);
    let step_tokens: i64 = steps
        .iter()
        .map(|s| s["input_tokens"].as_i64().unwrap() + s["output_tokens"].as_i64().unwrap())
        .sum();
    assert!(run["usage"]["total_tokens"].as_i64().unwrap() > step_tokens);
    let api = if provider == "anthropic" {
        "messages"
    } else {
        "chat_completions"
    };
    assert_eq!(app.mock.state.requests_in(api), 30 + made);
}

/// `agentrun dev` is killed right after a step kept its summary, while the
/// step's own call is under way; after the restart the step reuses the
/// summary instead of asking for it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_a_summary_reuses_it() {
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        HashMap::from([
            ("echoer".to_owned(), echoing(2_500)),
            ("summarizer".to_owned(), summarizer()),
        ]),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("agentrun-sum-{}", uuid::Uuid::new_v4().simple()));
    let (agents, state) = (dir.join("agents"), dir.join("state"));
    std::fs::create_dir_all(&agents).unwrap();
    std::fs::write(agents.join("echoer.json"), echo_agent(3).to_string()).unwrap();
    let database_url = fresh_database().await;
    let port = agentrun_e2e::free_port();
    let http = reqwest::Client::new();
    let start = || DevServer::start(&database_url, &mock.base_url(), &agents, &state, port, &[]);

    let mut server = start();
    wait_healthy(&http, &server.url).await;
    let key = api_key(&state);
    let created = server
        .post_run(
            &http,
            &key,
            json!({"agent": "echoer", "input": "echo blobs"}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let db = agentrun_e2e::connect(&database_url).await;
    let run_id: uuid::Uuid = id.parse().unwrap();
    wait_for_count(
        &db,
        SUMMARIZED,
        &id,
        1,
        Duration::from_secs(30),
        "no summary was made",
    )
    .await;
    let summarized_step: i32 = db
        .query_one(
            "SELECT step_no FROM run_events WHERE run_id = $1 AND type = 'context.summarized'",
            &[&run_id],
        )
        .await
        .unwrap()
        .get(0);
    // The step's own call takes 2.5 s: it has not committed yet.
    let committed: i64 = db
        .query_one(
            "SELECT count(*) FROM run_steps WHERE run_id = $1 AND step_no = $2",
            &[&run_id, &summarized_step],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(committed, 0);
    server.kill();

    let mut server = start();
    wait_healthy(&http, &server.url).await;
    let run = server
        .wait_finished(&http, &key, &id, Duration::from_secs(60))
        .await;
    server.kill();
    assert_eq!(run["status"], "succeeded", "{run}");
    let for_step: i64 = db
        .query_one(
            "SELECT count(*) FROM run_messages WHERE run_id = $1 AND step_no = $2
               AND message->>'role' = 'summary'",
            &[&run_id, &summarized_step],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(for_step, 1, "the step summarized twice");
    let all = count_for_run(&db, SUMMARIZED, &id).await;
    assert_eq!(mock.state.requests("summarizer"), all as u64);
    let _ = std::fs::remove_dir_all(&dir);
}
