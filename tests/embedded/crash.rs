use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentrun::mock_llm::{MockLlm, MockScript, MockTurn};
use agentrun_e2e::{api_key, free_port, fresh_database, wait_healthy, DevServer, ToolReceiver};
use serde_json::{json, Value};

use agentrun_e2e::agent;

/// SIGKILL the server in the middle of a step (one tool call done, another
/// still running); after a restart the run finishes with no duplicate step,
/// no repeated tool call and no repeated LLM call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_resumes_the_run_without_repeating_anything() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let script = MockScript::turns(vec![
        MockTurn::tools(&[
            ("charge", json!({"cents": 100})),
            ("audit", json!({"ms": 4000})),
        ]),
        MockTurn::tool("charge", json!({"cents": 200})),
        MockTurn::text("done"),
    ]);
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        HashMap::from([("crashy".to_owned(), script)]),
    )
    .await
    .unwrap();
    let dir: PathBuf =
        std::env::temp_dir().join(format!("agentrun-crash-{}", uuid::Uuid::new_v4().simple()));
    let agents = dir.join("agents");
    let state = dir.join("state");
    std::fs::create_dir_all(&agents).unwrap();
    let spec = agent(
        "crashy",
        json!({"tools": [
            {"name": "charge", "kind": "http", "url": receiver.url},
            {"name": "audit", "kind": "builtin", "builtin": "sleep", "timeout_ms": 10000}
        ]}),
    );
    std::fs::write(agents.join("crashy.json"), spec.to_string()).unwrap();
    let database_url = fresh_database().await;
    let port = free_port();
    let http = reqwest::Client::new();

    let mut server = DevServer::start(&database_url, &mock.base_url(), &agents, &state, port, &[]);
    wait_healthy(&http, &server.url).await;
    let key = api_key(&state);
    let created = server
        .post_run(
            &http,
            &key,
            json!({"agent": "crashy", "input": "charge me"}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let run_uuid: uuid::Uuid = id.parse().unwrap();

    let db = agentrun_e2e::connect(&database_url).await;
    agentrun_e2e::wait_for_count(
        &db,
        "SELECT count(*) FROM tool_calls WHERE run_id = $1 AND step_no = 1",
        &id,
        1,
        Duration::from_secs(20),
        "the first tool call never finished",
    )
    .await;
    server.kill();
    let steps: i64 = db
        .query_one(
            "SELECT count(*) FROM run_steps WHERE run_id = $1",
            &[&run_uuid],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, 0, "the kill landed mid-step");
    let slots = "SELECT count(*) FROM hot_run_slots WHERE run_id = $1";
    let held: i64 = db.query_one(slots, &[&run_uuid]).await.unwrap().get(0);
    assert_eq!(held, 1, "the killed run still holds its slot");

    let mut server = DevServer::start(&database_url, &mock.base_url(), &agents, &state, port, &[]);
    wait_healthy(&http, &server.url).await;
    assert_eq!(api_key(&state), key, "the restarted server keeps the key");
    // Polled, not long-polled: the slot is given back just after the run
    // ends, and the server is killed as soon as the run is seen ended.
    let until = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let run: Value = http
            .get(format!("{}/v1/runs/{id}", server.url))
            .bearer_auth(&key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if !["queued", "running"].contains(&run["status"].as_str().unwrap()) {
            break run;
        }
        assert!(
            Instant::now() < until,
            "run did not finish after the restart: {run}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    server.kill();

    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "done");
    let step_rows = db
        .query(
            "SELECT step_no, attempt FROM run_steps WHERE run_id = $1 ORDER BY step_no",
            &[&run_uuid],
        )
        .await
        .unwrap();
    let rows: Vec<(i32, i32)> = step_rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(rows, vec![(1, 2), (2, 1), (3, 1)]);
    // Each charge reached the receiver exactly once; the model was asked once per step.
    let counts = receiver.counts();
    assert_eq!(counts.len(), 2, "{counts:?}");
    assert_eq!(counts.get(&format!("{id}:1:0")), Some(&1));
    assert_eq!(counts.get(&format!("{id}:2:0")), Some(&1));
    assert_eq!(mock.state.requests("crashy"), 3);
    // Events stay gap-free; step 1 shows its two attempts.
    let events = db
        .query(
            "SELECT seq, type, data FROM run_events WHERE run_id = $1 ORDER BY seq",
            &[&run_uuid],
        )
        .await
        .unwrap();
    let seqs: Vec<i64> = events.iter().map(|r| r.get(0)).collect();
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let attempts: Vec<i64> = events
        .iter()
        .filter(|r| r.get::<_, String>(1) == "step.started" && r.get::<_, Value>(2)["step_no"] == 1)
        .map(|r| r.get::<_, Value>(2)["attempt"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 2]);
    // The slot came back when the resumed run ended.
    let held: i64 = db.query_one(slots, &[&run_uuid]).await.unwrap().get(0);
    assert_eq!(held, 0, "the run's slot leaked");
    let _ = std::fs::remove_dir_all(&dir);
}
