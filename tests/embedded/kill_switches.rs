use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Latency, MockScript, MockTurn};
use agentrun::ports::Usage;
use agentrun_e2e::{spawn_app_with, types, TestApp};
use serde_json::{json, Value};

use agentrun_e2e::{agent, echo_tool};

/// A model that calls a tool forever.
fn looping(latency_ms: u64) -> MockScript {
    MockScript {
        turns: vec![MockTurn::tool("noop", json!({}))],
        latency_ms: Latency::Fixed(latency_ms),
        ..MockScript::default()
    }
}

async fn last_event(app: &TestApp, id: &str) -> String {
    types(&app.all_events(id).await).pop().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runaway_loop_stops_at_max_steps() {
    let app = spawn_app_with(HashMap::from([("loop".to_owned(), looping(0))])).await;
    app.put_agent(
        "looper",
        agent(
            "loop",
            json!({"tools": [echo_tool("noop")], "wind_down": false, "limits": {"max_steps": 3}}),
        ),
    )
    .await;
    let id = app.start_run("looper", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "max_steps");
    assert_eq!(app.steps(&id).await.len(), 3);
    assert_eq!(app.mock.state.requests("loop"), 3);
    assert_eq!(last_event(&app, &id).await, "run.failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_token_budget_stops_before_a_call_that_could_cross_it() {
    let script = MockScript {
        usage: Some(Usage {
            prompt_tokens: 300,
            completion_tokens: 100,
        }),
        ..looping(0)
    };
    let app = spawn_app_with(HashMap::from([("spender".to_owned(), script)])).await;
    app.put_agent(
        "spender",
        agent(
            "spender",
            json!({"tools": [echo_tool("noop")], "wind_down": false, "max_output_tokens": 200, "limits": {"run_token_budget": 1000}}),
        ),
    )
    .await;
    let id = app.start_run("spender", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "run_token_budget");
    // 400 tokens a call: after two calls (800 spent) the next one's
    // reservation (prompt estimate + 200 max output) would cross 1,000.
    assert_eq!(run["usage"]["total_tokens"], 800);
    assert_eq!(app.mock.state.requests("spender"), 2);
    assert_eq!(last_event(&app, &id).await, "run.failed");
}

/// A model that calls a tool five times, then answers in the schema
/// (which a model offered no tools answers with at once).
fn looping_then_answering() -> MockScript {
    let mut turns = vec![MockTurn::tool("noop", json!({})); 5];
    turns.push(MockTurn::json(json!({"answer": "done what I could"})));
    MockScript::turns(turns)
}

fn answering_agent(model: &str, extra: Value) -> Value {
    let mut spec = agent(
        model,
        json!({
            "tools": [echo_tool("noop")],
            "output_schema": {"type": "object", "required": ["answer"],
                              "properties": {"answer": {"type": "string"}}},
        }),
    );
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

/// At the last step `max_steps` allows the agent gets one turn without
/// tools: its answer is schema-valid, so the run succeeds, wound down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_max_steps_the_agent_winds_down_with_a_final_answer() {
    let app = spawn_app_with(HashMap::from([(
        "looping".to_owned(),
        looping_then_answering(),
    )]))
    .await;
    app.put_agent(
        "winder",
        answering_agent("looping", json!({"limits": {"max_steps": 3}})),
    )
    .await;
    app.put_agent(
        "stopper",
        answering_agent(
            "looping",
            json!({"wind_down": false, "limits": {"max_steps": 3}}),
        ),
    )
    .await;

    let id = app.start_run("winder", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["stop_reason"], "completed");
    assert_eq!(run["wound_down"], true);
    assert_eq!(run["output"]["answer"], "done what I could");
    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 3);
    assert_eq!(steps[1]["tool_calls"].as_array().unwrap().len(), 1);
    assert!(steps[2]["tool_calls"].as_array().unwrap().is_empty());
    let events = app.all_events(&id).await;
    let last = events.last().unwrap();
    assert_eq!(last.event, "run.succeeded");
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["data"]["wound_down"], true);
    // The final turn's instruction is in the conversation, before the answer.
    let db = app.db().await;
    let run_id: uuid::Uuid = id.parse().unwrap();
    let messages: Vec<Value> = db
        .query(
            "SELECT message FROM run_messages WHERE run_id = $1 ORDER BY seq",
            &[&run_id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let instruction = &messages[messages.len() - 2];
    assert_eq!(instruction["role"], "user");
    assert!(instruction["content"]
        .as_str()
        .unwrap()
        .contains("final turn"));

    // Through the Anthropic API (whose mock refuses tool blocks without
    // tools): the final turn keeps the tools defined, none callable.
    let mut anthropic = answering_agent("looping", json!({"limits": {"max_steps": 3}}));
    anthropic["provider"] = json!("anthropic");
    app.put_agent("anthropic-winder", anthropic).await;
    let id = app.start_run("anthropic-winder", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["wound_down"], true);
    assert_eq!(app.mock.state.requests_in("messages"), 3);

    // Off, the same model ends at the limit as before.
    let id = app.start_run("stopper", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "max_steps");
    assert_eq!(run["wound_down"], false);
    assert_eq!(app.steps(&id).await.len(), 3);
}

/// When the next call's reservation would cross the run's token budget,
/// the final turn gets what the budget has left and the run succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn near_its_token_budget_the_agent_winds_down() {
    let script = MockScript {
        usage: Some(Usage {
            prompt_tokens: 300,
            completion_tokens: 100,
        }),
        ..looping_then_answering()
    };
    let app = spawn_app_with(HashMap::from([("spender".to_owned(), script)])).await;
    app.put_agent(
        "spender",
        answering_agent(
            "spender",
            json!({"max_output_tokens": 200, "limits": {"run_token_budget": 1000}}),
        ),
    )
    .await;
    let id = app.start_run("spender", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["wound_down"], true);
    assert_eq!(run["output"]["answer"], "done what I could");
    // Two calls with tools (800 tokens), then the final turn.
    assert_eq!(app.mock.state.requests("spender"), 3);
    assert_eq!(app.steps(&id).await.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_cycle_ends_with_handoff_depth() {
    let ping = MockScript::turns(vec![MockTurn::tool("transfer_to_pong", json!({}))]);
    let pong = MockScript::turns(vec![MockTurn::tool("transfer_to_ping", json!({}))]);
    let app = spawn_app_with(HashMap::from([
        ("ping".to_owned(), ping),
        ("pong".to_owned(), pong),
    ]))
    .await;
    app.put_agent(
        "ping",
        agent(
            "ping",
            json!({"handoffs": ["pong"], "limits": {"max_handoff_depth": 3}}),
        ),
    )
    .await;
    app.put_agent("pong", agent("pong", json!({"handoffs": ["ping"]})))
        .await;
    let id = app.start_run("ping", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "handoff_depth");
    assert_eq!(run["handoff_depth"], 3);
    let events = types(&app.all_events(&id).await);
    assert_eq!(events.iter().filter(|e| *e == "handoff").count(), 3);
    assert_eq!(events.last().unwrap(), "run.failed");
    assert_eq!(app.steps(&id).await.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_deadline_times_the_run_out_mid_step() {
    let app = spawn_app_with(HashMap::from([("slow".to_owned(), looping(400))])).await;
    app.put_agent(
        "slow",
        agent(
            "slow",
            json!({"tools": [echo_tool("noop")], "limits": {"timeout_seconds": 1}}),
        ),
    )
    .await;
    let id = app.start_run("slow", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "timed_out");
    assert_eq!(run["stop_reason"], "timeout");
    let started: chrono::DateTime<chrono::Utc> =
        run["started_at"].as_str().unwrap().parse().unwrap();
    let finished: chrono::DateTime<chrono::Utc> =
        run["finished_at"].as_str().unwrap().parse().unwrap();
    // Ended by the deadline, not by running out of steps (25 steps × 400 ms).
    assert!(finished - started < chrono::Duration::seconds(5), "{run}");
    assert!(app.steps(&id).await.len() < 5);
    assert_eq!(last_event(&app, &id).await, "run.timed_out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_run_and_nothing_commits_after_it() {
    let app = spawn_app_with(HashMap::from([("busy".to_owned(), looping(200))])).await;
    app.put_agent("busy", agent("busy", json!({"tools": [echo_tool("noop")]})))
        .await;
    let id = app.start_run("busy", json!("go")).await;
    app.wait_for_step(&id, 2).await;
    let response = app
        .http
        .post(format!("{}/v1/runs/{id}/cancel", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"reason": "user pressed stop"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "cancelled");
    assert_eq!(body["stop_reason"], "cancelled");
    assert_eq!(body["stop_detail"], "user pressed stop");

    app.assert_no_more_steps(&id).await;
    assert_eq!(last_event(&app, &id).await, "run.cancelled");

    // Cancelling again is harmless; cancelling a finished run of another kind is a conflict.
    let again = app
        .http
        .post(format!("{}/v1/runs/{id}/cancel", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status().as_u16(), 202);
}
