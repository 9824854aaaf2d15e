//! Failure modes that earlier leaked or failed: slots left held across a
//! restart or a lost reply, a hot store that cannot be reached, a database
//! that goes away for half a minute, a provider that is down.

use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun_e2e::{agent, fast_llm, fast_policy, spawn_app_with};
use serde_json::json;

/// A terminal step whose commit went through but whose reply was lost (the
/// release after it never happened): the retry finds the step committed and
/// gives the slot back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_step_found_committed_gives_its_slot_back() {
    let script = MockScript::turns(vec![MockTurn::text("done")]);
    let app = spawn_app_with(HashMap::from([("once".to_owned(), script)])).await;
    app.put_agent("once", agent("once", json!({}))).await;
    let id = app.start_run("once", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    app.assert_slots_released().await;

    // As if the release after the commit had been lost.
    let engine = &app.platform.engine;
    let run_id: agentrun::domain::RunId = id.parse().unwrap();
    assert!(engine
        .hot
        .acquire_run_slot(app.team, run_id, 10)
        .await
        .unwrap());
    assert_eq!(app.slots_held().await, 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let outcome = engine.execute_step(run_id, 1, deadline).await.unwrap();
    assert_eq!(outcome.next, agentrun::domain::StepNext::Finish);
    assert_eq!(app.slots_held().await, 0, "the retry gave the slot back");
    assert_eq!(app.mock.state.requests("once"), 1, "and called nothing");
}

/// A run that finished just before a crash still holds its slot (the
/// release never happened): the next start of the process gives it back
/// before it accepts any work, not a minute later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_gives_back_the_slots_of_runs_that_had_finished() {
    let script = MockScript::turns(vec![MockTurn::text("done")]);
    let app = spawn_app_with(HashMap::from([("once".to_owned(), script)])).await;
    app.put_agent("once", agent("once", json!({}))).await;
    let id = app.start_run("once", json!("go")).await;
    app.wait_finished(&id, Duration::from_secs(20)).await;
    app.assert_slots_released().await;
    let run_id: agentrun::domain::RunId = id.parse().unwrap();
    assert!(app
        .platform
        .engine
        .hot
        .acquire_run_slot(app.team, run_id, 10)
        .await
        .unwrap());
    assert_eq!(app.slots_held().await, 1);

    // A new process on the same database.
    let mut settings = agentrun::embedded::EmbeddedSettings::new(
        app.database_url.clone(),
        fast_llm(app.mock.base_url()),
    );
    settings.policy = fast_policy();
    let restarted = agentrun::embedded::Embedded::start(settings).await.unwrap();
    restarted.resume().await.unwrap();
    assert_eq!(
        app.slots_held().await,
        0,
        "released at start-up, before any work"
    );
}

/// Polls a run until it is terminal, through errors (the database may be
/// away): its final view.
async fn wait_through_outage(
    app: &agentrun_e2e::TestApp,
    id: &str,
    within: Duration,
) -> serde_json::Value {
    let until = std::time::Instant::now() + within;
    loop {
        let (status, run) = app.get(&format!("/v1/runs/{id}")).await;
        if status == 200 && !["queued", "running"].contains(&run["status"].as_str().unwrap_or("")) {
            return run;
        }
        assert!(
            std::time::Instant::now() < until,
            "run {id} not finished: {run}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// PostgreSQL goes away for 30 s while 20 runs are mid-flight (an immediate
/// shutdown, as a crash, then a start that recovers): every run succeeds
/// later, each step is committed once, events stay gap-free, no LLM call
/// and no tool call is repeated — the steps under way kept their model
/// answers and tool results and wrote them once the database was back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thirty_second_database_outage_fails_no_run() {
    let Some(postgres) = agentrun_e2e::postgres::PrivatePostgres::start() else {
        return;
    };
    let receiver = agentrun_e2e::ToolReceiver::start(Duration::ZERO).await;
    let script = MockScript {
        turns: vec![
            MockTurn::tool("charge", json!({"cents": 100})),
            MockTurn::tool("charge", json!({"cents": 200})),
            MockTurn::text("done"),
        ],
        latency_ms: agentrun::mock_llm::Latency::Range([200, 900]),
        ..MockScript::default()
    };
    // A step may hold its work through the whole outage.
    let policy = agentrun::policy::StepPolicy {
        step_timeout: Duration::from_secs(90),
        answer_margin: Duration::from_secs(5),
        ..fast_policy()
    };
    let app = agentrun_e2e::spawn_app_on(
        postgres.url("agentrun"),
        policy,
        HashMap::from([("steady".to_owned(), script)]),
    )
    .await;
    app.put_agent(
        "steady",
        agent(
            "steady",
            json!({"tools": [{"name": "charge", "kind": "http", "url": receiver.url}]}),
        ),
    )
    .await;
    app.patch_team(json!({"limits": {"max_concurrent_runs": 50}}))
        .await;
    let mut ids = Vec::new();
    for n in 0..20 {
        let (status, _, body) = app
            .post_run(&json!({"agent": "steady", "input": n}), None)
            .await;
        assert_eq!(status, 202, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    postgres.crash();
    tokio::time::sleep(Duration::from_secs(30)).await;
    postgres.resume();

    for id in &ids {
        let run = wait_through_outage(&app, id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"], 3, "{run}");
    }
    let db = app.db().await;
    let steps: i64 = db
        .query_one("SELECT count(*) FROM run_steps", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(steps, 60, "each step committed once");
    let gaps: i64 = db
        .query_one(
            "SELECT count(*) FROM (SELECT run_id, max(seq) AS top, count(*) AS n
             FROM run_events GROUP BY run_id) e WHERE top <> n",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(gaps, 0, "events 1..N in every run");
    assert_eq!(
        app.mock.state.requests("steady"),
        60,
        "no LLM call repeated"
    );
    let counts = receiver.counts();
    assert_eq!(counts.len(), 40, "two tool calls per run");
    assert!(
        counts.values().all(|n| *n == 1),
        "no tool call repeated: {counts:?}"
    );
    app.assert_slots_released().await;
}
