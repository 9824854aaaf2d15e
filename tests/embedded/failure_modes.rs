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
