//! An accepted run always starts: admission survives dropped connections,
//! a replay of a queued run starts it, and the starter picks up what is left.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use agentrun::domain::RunId;
use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun::ports::{Orchestrator, OrchestratorError, StartOutcome};
use agentrun::starter::ensure_started;
use agentrun_e2e::{agent, spawn_app_with, start_app, TestApp};
use futures_util::future::join_all;
use serde_json::json;
use tokio::io::AsyncWriteExt;

fn quick_scripts() -> HashMap<String, MockScript> {
    HashMap::from([(
        "quick".to_owned(),
        MockScript::turns(vec![MockTurn::text("ok")]),
    )])
}

async fn unlimited(app: &TestApp) {
    app.put_agent("quick", agent("quick", json!({}))).await;
    app.patch_team(json!({"limits": {"max_concurrent_runs": 100000,
        "runs_per_second": 100000.0, "run_burst": 100000}}))
        .await;
}

/// Sends a `POST /v1/runs` over a raw connection and closes it at a random
/// point: as often part-way through the request as 0–25 ms after all of it.
async fn post_and_drop(url: &str, key: &str, n: usize) {
    let body = json!({"agent": "quick", "input": format!("dropped {n}")}).to_string();
    let idempotency = if n.is_multiple_of(2) {
        format!("Idempotency-Key: drop-{n}\r\n")
    } else {
        String::new()
    };
    let request = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: test\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\n{idempotency}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let random = uuid::Uuid::new_v4().as_u128();
    let cut = if random & 1 == 0 {
        (random >> 1) as usize % request.len()
    } else {
        request.len() + (random >> 1) as usize % 26
    };
    let address = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    if cut < request.len() {
        stream.write_all(&request.as_bytes()[..cut]).await.unwrap();
    } else {
        stream.write_all(request.as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis((cut - request.len()) as u64)).await;
    }
    drop(stream);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_run_created_by_a_dropped_request_starts_within_two_seconds() {
    // No starter runs in this app (`resume` is not called): only admission starts runs.
    let app = spawn_app_with(quick_scripts()).await;
    unlimited(&app).await;
    for wave in 0..10 {
        join_all((0..30).map(|i| post_and_drop(&app.url, &app.key, wave * 30 + i))).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    let rows = app
        .db()
        .await
        .query(
            "SELECT id::text, status, extract(epoch FROM started_at - created_at)::float8
             FROM runs WHERE team_id = $1",
            &[&app.team.0],
        )
        .await
        .unwrap();
    println!("300 dropped POSTs created {} runs", rows.len());
    assert!(
        !rows.is_empty(),
        "some requests were complete before the drop"
    );
    assert!(
        rows.len() < 300,
        "some requests were cut before they were complete"
    );
    for row in &rows {
        let (id, status, delay): (String, String, Option<f64>) =
            (row.get(0), row.get(1), row.get(2));
        let delay = delay.unwrap_or_else(|| panic!("run {id} never started (status {status})"));
        assert!(
            delay <= 2.0,
            "run {id} started {delay:.2} s after it was created"
        );
    }
    for row in &rows {
        let id: String = row.get(0);
        let run = app.wait_finished(&id, Duration::from_secs(30)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
    }
    app.assert_slots_released().await;
}

/// Drives runs with the in-process orchestrator, except that the first start
/// never returns (as if the request died right after creating the run).
struct FirstStartHangs {
    inner: OnceLock<Arc<dyn Orchestrator>>,
    hung: AtomicBool,
}

#[async_trait::async_trait]
impl Orchestrator for FirstStartHangs {
    async fn start(&self, run: RunId) -> Result<StartOutcome, OrchestratorError> {
        if !self.hung.swap(true, Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        self.inner.get().expect("wired").start(run).await
    }

    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError> {
        self.inner.get().expect("wired").stop(run).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_of_a_queued_run_starts_it() {
    let orchestrator = Arc::new(FirstStartHangs {
        inner: OnceLock::new(),
        hung: AtomicBool::new(false),
    });
    let app = start_app(quick_scripts(), Some(orchestrator.clone()), |_, _| {}).await;
    let inner: Arc<dyn Orchestrator> = app.platform.orchestrator.clone();
    assert!(orchestrator.inner.set(inner).is_ok());
    app.put_agent("quick", agent("quick", json!({}))).await;

    let body = json!({"agent": "quick", "input": "hello"});
    let first = app
        .http
        .post(format!("{}/v1/runs", app.url))
        .bearer_auth(&app.key)
        .header("idempotency-key", "replay-1")
        .json(&body)
        .timeout(Duration::from_millis(500))
        .send()
        .await;
    assert!(first.is_err(), "the first request never gets an answer");
    let rows = app
        .db()
        .await
        .query("SELECT id::text, status FROM runs", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    let status: String = rows[0].get(1);
    assert_eq!(status, "queued", "created, never started");

    let (status, headers, replay) = app.post_run(&body, Some("replay-1")).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    let id: String = rows[0].get(0);
    assert_eq!(replay["id"], id.as_str());
    let run = app.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.mock.state.requests("quick"), 1);
    app.assert_slots_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_starter_starts_a_run_left_queued_within_its_interval() {
    let app = spawn_app_with(quick_scripts()).await;
    app.put_agent("quick", agent("quick", json!({}))).await;
    // The background work, starter included, is running before the run appears.
    app.platform.resume().await.unwrap();
    let id = app.insert_queued_run("quick").await;
    let run = app.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let row = app
        .db()
        .await
        .query_one(
            "SELECT extract(epoch FROM started_at - created_at)::float8 FROM runs WHERE id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    let delay: f64 = row.get(0);
    // Grace (2 s) plus one interval (2 s), with a margin for a busy machine.
    assert!(
        (2.0..6.0).contains(&delay),
        "started {delay:.2} s after creation"
    );
    app.assert_slots_released().await;
}

/// An orchestrator whose executions have all ended already.
struct EverythingEnded;

#[async_trait::async_trait]
impl Orchestrator for EverythingEnded {
    async fn start(&self, _run: RunId) -> Result<StartOutcome, OrchestratorError> {
        Ok(StartOutcome::Ended)
    }

    async fn stop(&self, _run: RunId) -> Result<(), OrchestratorError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_run_whose_execution_ended_is_ended_and_gives_back_its_slot() {
    let app = spawn_app_with(quick_scripts()).await;
    app.put_agent("quick", agent("quick", json!({}))).await;
    let id = app.insert_queued_run("quick").await;
    assert_eq!(app.slots_held().await, 1);
    let outcome = ensure_started(&app.platform.engine, &EverythingEnded, id.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(outcome, StartOutcome::Ended);
    let run = app.run(&id).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "internal");
    app.assert_slots_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_the_hot_store_lost_still_answers_with_its_run_from_the_ledger() {
    let app = spawn_app_with(quick_scripts()).await;
    unlimited(&app).await;
    let body = json!({"agent": "quick", "input": "hello"});
    let (status, _, first) = app.post_run(&body, Some("lost-1")).await;
    assert_eq!(status, 202, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    app.wait_finished(&id, Duration::from_secs(10)).await;
    // As if the hot store lost the key (or was away when the run took it).
    let db = app.db().await;
    let dropped = db
        .execute("DELETE FROM hot_idempotency_keys WHERE key = 'lost-1'", &[])
        .await
        .unwrap();
    assert_eq!(dropped, 1);

    let (status, headers, replay) = app.post_run(&body, Some("lost-1")).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay["id"], id.as_str());

    db.execute("DELETE FROM hot_idempotency_keys WHERE key = 'lost-1'", &[])
        .await
        .unwrap();
    let other = json!({"agent": "quick", "input": "something else"});
    let (status, _, conflict) = app.post_run(&other, Some("lost-1")).await;
    assert_eq!(status, 409, "{conflict}");
    assert_eq!(
        conflict["error"]["code"], "idempotency_key_conflict",
        "{conflict}"
    );

    let runs: i64 = db
        .query_one("SELECT count(*) FROM runs", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(runs, 1, "one run for the key");
    app.assert_slots_released().await;
}
