use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun_e2e::{spawn_app_with, types};
use serde_json::json;

use agentrun_e2e::agent;

fn answer_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "required": ["answer", "confidence"],
        "properties": {"answer": {"type": "string"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}},
        "additionalProperties": false
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_answer_is_repaired_once_and_succeeds() {
    let script = MockScript::turns(vec![
        MockTurn::json(json!({"answer": "42", "confidence": 7})),
        MockTurn::json(json!({"answer": "42", "confidence": 0.9})),
    ]);
    let app = spawn_app_with(HashMap::from([("repairable".to_owned(), script)])).await;
    app.put_agent(
        "answerer",
        agent("repairable", json!({"output_schema": answer_schema()})),
    )
    .await;
    let id = app
        .start_run("answerer", json!("what is the answer?"))
        .await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!({"answer": "42", "confidence": 0.9}));
    let events = types(&app.all_events(&id).await);
    assert_eq!(events.iter().filter(|e| *e == "output.invalid").count(), 1);
    // The repair prompt carried the validation error to the model.
    let messages = app
        .db()
        .await
        .query(
            "SELECT message->>'content' FROM run_messages WHERE run_id = $1 AND message->>'role' = 'user' ORDER BY seq",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    let repair: String = messages[1].get(0);
    assert!(repair.contains("/confidence"), "{repair}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_invalid_answers_fail_with_output_invalid_and_keep_the_raw_output() {
    let script = MockScript::turns(vec![MockTurn::text("not json at all")]);
    let app = spawn_app_with(HashMap::from([("stubborn".to_owned(), script)])).await;
    app.put_agent(
        "stubborn",
        agent("stubborn", json!({"output_schema": answer_schema()})),
    )
    .await;
    let id = app.start_run("stubborn", json!("answer")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "output_invalid");
    assert_eq!(run["raw_output"], "not json at all");
    assert!(run["output"].is_null());
    assert_eq!(app.steps(&id).await.len(), 3);
    let events = app.all_events(&id).await;
    let kinds = types(&events);
    assert_eq!(kinds.iter().filter(|e| *e == "output.invalid").count(), 3);
    let last: serde_json::Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(last["type"], "run.failed");
    assert_eq!(last["data"]["raw_output"], "not json at all");
}
