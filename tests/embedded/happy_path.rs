use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentrun::embedded::load_agent_dir;
use agentrun::mock_llm::{parse_scripts, MockScript};
use agentrun_e2e::{seqs, spawn_app_with, types};

/// The shipped examples and their mock scripts, without latency.
fn example_scripts() -> (PathBuf, HashMap<String, MockScript>) {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut scripts =
        parse_scripts(&std::fs::read_to_string(examples.join("mock-llm.json")).unwrap()).unwrap();
    for script in scripts.values_mut() {
        script.latency_ms = agentrun::mock_llm::Latency::Fixed(0);
    }
    (examples, scripts)
}

/// The shipped example: triage → lookup tool → handoff → billing → invoice
/// tool → a refund over $50, which waits for approval holding no slot →
/// approved, made once → schema-valid answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_hands_off_to_billing_and_returns_schema_valid_output() {
    let (examples, scripts) = example_scripts();
    let app = spawn_app_with(scripts).await;
    let loaded = load_agent_dir(
        &app.platform.engine.ledger,
        app.team,
        &examples.join("agents"),
    )
    .await
    .unwrap();
    assert_eq!(loaded.len(), 3);

    let id = app
        .start_run("support-triage", serde_json::json!("I was charged twice"))
        .await;

    // The $79 refund waits for a person: no slot held, nothing running.
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["name"], "issue_refund");
    assert_eq!(pending[0]["kind"], "tool");
    assert_eq!(pending[0]["arguments"]["amount_cents"], 7900);
    assert_eq!(pending[0]["step_no"], 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.slots_held().await, 0);
    assert_eq!(app.run(&id).await["status"], "waiting");
    assert_eq!(app.mock.state.total_requests(), 4);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tool_calls WHERE run_id = $1 AND name = 'issue_refund'",
            &id
        )
        .await,
        0
    );
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, answered) = app
        .answer_approval(
            &id,
            request_id,
            serde_json::json!({"approve": true, "comment": "ok, duplicate"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["status"], "approved");

    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["stop_reason"], "completed");
    assert_eq!(run["waiting_for"], serde_json::Value::Null);
    assert_eq!(run["active_agent"], "billing");
    assert_eq!(run["handoff_depth"], 1);
    assert_eq!(run["output"]["category"], "billing");
    assert_eq!(run["output"]["refund_cents"], 7900);

    // Exactly one ledger row per step, numbered 1..=5; the refund made once.
    let steps = app.steps(&id).await;
    let numbers: Vec<i64> = steps
        .iter()
        .map(|s| s["step_no"].as_i64().unwrap())
        .collect();
    assert_eq!(numbers, vec![1, 2, 3, 4, 5]);
    assert_eq!(app.step_rows(&id).await, 5);
    let agents: Vec<&str> = steps.iter().map(|s| s["agent"].as_str().unwrap()).collect();
    assert_eq!(
        agents,
        vec![
            "support-triage",
            "support-triage",
            "billing",
            "billing",
            "billing"
        ]
    );
    assert_eq!(steps[0]["tool_calls"][0]["name"], "lookup_customer");
    assert!(steps[0]["tool_calls"][0]["result"]
        .as_str()
        .unwrap()
        .contains("cus_1001"));
    assert_eq!(steps[2]["tool_calls"][0]["name"], "list_invoices");
    assert_eq!(steps[3]["tool_calls"][0]["name"], "issue_refund");
    assert_eq!(steps[3]["tool_calls"][0]["is_error"], false);
    assert_eq!(
        app.count(
            "SELECT count(*) FROM tool_calls WHERE run_id = $1 AND name = 'issue_refund'",
            &id
        )
        .await,
        1
    );

    // Usage on the run is the sum of its steps.
    let input: i64 = steps
        .iter()
        .map(|s| s["input_tokens"].as_i64().unwrap())
        .sum();
    let output: i64 = steps
        .iter()
        .map(|s| s["output_tokens"].as_i64().unwrap())
        .sum();
    assert!(input > 0 && output > 0);
    assert_eq!(run["usage"]["input_tokens"], input);
    assert_eq!(run["usage"]["output_tokens"], output);
    assert_eq!(run["usage"]["llm_calls"], 5);
    assert_eq!(app.mock.state.total_requests(), 5);

    // Events 1..N with no gap, in a sensible order, ending with the terminal one.
    let events = app.all_events(&id).await;
    let n = events.len() as i64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>());
    let kinds = types(&events);
    assert_eq!(kinds.first().unwrap(), "run.queued");
    assert_eq!(kinds.last().unwrap(), "run.succeeded");
    assert_eq!(kinds.iter().filter(|k| *k == "step.completed").count(), 5);
    assert_eq!(kinds.iter().filter(|k| *k == "handoff").count(), 1);
    for kind in ["approval.requested", "approval.answered", "run.resumed"] {
        assert_eq!(
            kinds.iter().filter(|k| *k == kind).count(),
            1,
            "{kind}: {kinds:?}"
        );
    }
    app.assert_slots_released().await;
    assert_eq!(
        app.count("SELECT count(*) FROM run_events WHERE run_id = $1", &id)
            .await,
        n
    );
    // Embedded, statements are prepared once per connection and kept.
    let counts = agentrun_e2e::prepared_statements(&app.platform.engine.ledger).await;
    assert!(counts.iter().any(|n| *n > 0), "{counts:?}");
}

/// The same example through the Anthropic Messages API: the triage and
/// billing agents name `provider: "anthropic"`, the billing model is
/// overloaded once (529 with retry-after), and the run still ends with the
/// schema-valid answer, every call made in the Messages format.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_runs_through_the_anthropic_messages_api() {
    let (examples, mut scripts) = example_scripts();
    let billing = scripts.get_mut("mock-billing").unwrap();
    billing.faults = vec![agentrun::mock_llm::Fault {
        status: 529,
        retry_after: Some(0.05),
        times: 1,
    }];
    let app = spawn_app_with(scripts).await;
    for name in ["support-triage", "billing"] {
        let text = std::fs::read_to_string(examples.join(format!("agents/{name}.json"))).unwrap();
        let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
        spec["provider"] = serde_json::json!("anthropic");
        let stored = app.put_agent(name, spec).await;
        assert_eq!(stored["spec"]["provider"], "anthropic", "{stored}");
    }

    let id = app
        .start_run("support-triage", serde_json::json!("I was charged twice"))
        .await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, answered) = app
        .answer_approval(&id, request_id, serde_json::json!({"approve": true}))
        .await;
    assert_eq!(status, 200, "{answered}");
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["active_agent"], "billing");
    assert_eq!(run["output"]["refund_cents"], 7900);
    assert_eq!(run["usage"]["llm_calls"], 5);
    let steps = app.steps(&id).await;
    assert_eq!(steps[0]["tool_calls"][0]["name"], "lookup_customer");
    assert!(steps[0]["tool_calls"][0]["result"]
        .as_str()
        .unwrap()
        .contains("cus_1001"));
    assert_eq!(steps[2]["tool_calls"][0]["name"], "list_invoices");
    assert!(steps
        .iter()
        .all(|s| s["input_tokens"].as_i64().unwrap() > 0));

    // Five answers and the one 529, all in the Messages format.
    assert_eq!(app.mock.state.requests("mock-billing"), 4);
    assert_eq!(app.mock.state.requests_in("messages"), 6);
    assert_eq!(app.mock.state.requests_in("chat_completions"), 0);
}
