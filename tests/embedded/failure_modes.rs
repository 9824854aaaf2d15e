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
    // The background work of `agentrun dev`: the starter, which also
    // reconciles the hot state once the database answers again.
    app.platform.resume().await.unwrap();
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

/// `host:port` and database name of a PostgreSQL URL of the tests.
fn authority_and_database(url: &str) -> (String, String) {
    let rest = url.split_once('@').map_or(url, |(_, rest)| rest);
    let (authority, database) = rest.split_once('/').unwrap();
    (authority.to_owned(), database.to_owned())
}

async fn health(app: &agentrun_e2e::TestApp) -> serde_json::Value {
    app.get("/healthz").await.1
}

/// The hot store's connections are cut mid-run (its pool then meets a dead
/// port): the runs go on and succeed on answers from the ledger, `/healthz`
/// says `degraded`, new runs are still admitted within the team's limit, a
/// repeated Idempotency-Key still finds its run, a cancel still stops its
/// run; once the store is back, health is `ok` and no slot is left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_store_outage_mid_run_degrades_and_loses_nothing() {
    let database_url = agentrun_e2e::fresh_database().await;
    let (authority, database) = authority_and_database(&database_url);
    let proxy = agentrun_e2e::tcp_proxy::TcpProxy::start(authority).await;
    let hot_url = format!("postgres://postgres@127.0.0.1:{}/{database}", proxy.port);
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::tool("noop", json!({"n": 2})),
            MockTurn::text("done"),
        ],
        latency_ms: agentrun::mock_llm::Latency::Range([300, 600]),
        ..MockScript::default()
    };
    let app = agentrun_e2e::spawn_app_tuned(
        database_url,
        fast_policy(),
        HashMap::from([("steady".to_owned(), script)]),
        |settings| settings.hot_database_url = Some(hot_url.into()),
    )
    .await;
    app.put_agent(
        "steady",
        agent(
            "steady",
            json!({"tools": [agentrun_e2e::echo_tool("noop")]}),
        ),
    )
    .await;
    app.patch_team(json!({"limits": {"max_concurrent_runs": 6}}))
        .await;
    let mut ids = Vec::new();
    for n in 0..4 {
        ids.push(app.start_run("steady", json!(n)).await);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.cut();

    // Degraded: noticed, said, and work goes on.
    let until = std::time::Instant::now() + Duration::from_secs(10);
    while health(&app).await["status"] != "degraded" {
        assert!(std::time::Instant::now() < until, "never said degraded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let said = health(&app).await;
    assert_eq!(said["hot_store"], "unreachable", "{said}");
    let keyed = json!({"agent": "steady", "input": "keyed"});
    let (status, _, first) = app.post_run(&keyed, Some("outage-key")).await;
    assert_eq!(status, 202, "admitted while degraded: {first}");
    let (status, headers, again) = app.post_run(&keyed, Some("outage-key")).await;
    assert_eq!(status, 202, "{again}");
    assert_eq!(again["id"], first["id"], "the ledger's key found the run");
    assert_eq!(headers["idempotent-replayed"], "true");
    let (status, _, conflict) = app
        .post_run(
            &json!({"agent": "steady", "input": "other"}),
            Some("outage-key"),
        )
        .await;
    assert_eq!(status, 409, "{conflict}");
    let cancelled = app.start_run("steady", json!("to cancel")).await;
    let (status, over) = {
        let (status, _, body) = app
            .post_run(&json!({"agent": "steady", "input": "one too many"}), None)
            .await;
        (status, body)
    };
    assert_eq!(
        status, 429,
        "6 in progress: the limit holds, counted in the ledger: {over}"
    );
    assert_eq!(over["error"]["code"], "concurrent_run_limit");
    let (status, body) = app
        .call_as(
            &app.key,
            "POST",
            &format!("/v1/runs/{cancelled}/cancel"),
            None,
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cancelled");

    ids.push(first["id"].as_str().unwrap().to_owned());
    for id in &ids {
        let run = app.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"], 3);
    }
    assert_eq!(app.run(&cancelled).await["status"], "cancelled");
    assert_eq!(health(&app).await["status"], "degraded", "still away");

    proxy.mend();
    let until = std::time::Instant::now() + Duration::from_secs(15);
    while health(&app).await["status"] != "ok" {
        assert!(std::time::Instant::now() < until, "never back to ok");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    app.assert_slots_released().await;
    let today = chrono::Utc::now().date_naive();
    let (_, reserved) = app
        .platform
        .engine
        .hot
        .tokens_of_day(app.team, today)
        .await
        .unwrap();
    assert_eq!(reserved, 0, "no reservation left behind");
}

/// The provider fails five calls in a row: the circuit opens, the next
/// attempt makes no call (an `llm.circuit_open` event says why) and waits
/// out the cool-down; then one probe goes through, the provider answers,
/// the circuit closes and the run succeeds. A run after it calls at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_opens_the_circuit_and_a_probe_closes_it() {
    // Each call is three HTTP tries (the client retries twice): five failed
    // calls use up the fifteen faults.
    let script = MockScript {
        turns: vec![MockTurn::text("back")],
        faults: vec![agentrun::mock_llm::Fault {
            status: 503,
            retry_after: None,
            times: 15,
        }],
        ..MockScript::default()
    };
    let policy = agentrun::policy::StepPolicy {
        max_retries: 8,
        ..fast_policy()
    };
    let app = agentrun_e2e::spawn_app_on(
        agentrun_e2e::fresh_database().await,
        policy,
        HashMap::from([("flaky".to_owned(), script)]),
    )
    .await;
    app.put_agent("flaky", agent("flaky", json!({}))).await;
    let started = std::time::Instant::now();
    let id = app.start_run("flaky", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert!(
        started.elapsed() >= Duration::from_millis(1_500),
        "it waited out the cool-down"
    );
    assert_eq!(
        app.mock.state.requests("flaky"),
        16,
        "five failed calls, then the probe; none while open"
    );
    let events = app.all_events(&id).await;
    let open: Vec<_> = events
        .iter()
        .filter(|e| e.event == "llm.circuit_open")
        .collect();
    assert_eq!(open.len(), 1, "{:?}", agentrun_e2e::types(&events));
    let data: serde_json::Value = serde_json::from_str(&open[0].data).unwrap();
    assert_eq!(data["data"]["model"], "flaky");
    assert!(data["data"]["until"].is_string());
    let shared: (i32, Option<chrono::DateTime<chrono::Utc>>) = {
        let row = app
            .db()
            .await
            .query_one("SELECT failures, open_until FROM hot_circuits", &[])
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(shared, (0, None), "closed, for every process");

    let next = app.start_run("flaky", json!("again")).await;
    let run = app.wait_finished(&next, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(app.mock.state.requests("flaky"), 17);
}

/// A provider that stays down: the circuit keeps the calls away, each probe
/// fails and opens it again, and once the waits are used up the run ends
/// `llm_unavailable`, having called far less than it would have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_that_stays_down_ends_the_run_llm_unavailable_through_the_circuit() {
    let script = MockScript {
        fail_always: Some(503),
        ..MockScript::default()
    };
    let policy = agentrun::policy::StepPolicy {
        max_retries: 8,
        circuit_cool_down: Duration::from_millis(300),
        circuit_waits: 2,
        ..fast_policy()
    };
    let app = agentrun_e2e::spawn_app_on(
        agentrun_e2e::fresh_database().await,
        policy,
        HashMap::from([("down".to_owned(), script)]),
    )
    .await;
    app.put_agent("down", agent("down", json!({}))).await;
    let id = app.start_run("down", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["stop_reason"], "llm_unavailable");
    assert!(
        run["stop_detail"].as_str().unwrap().contains("circuit"),
        "{run}"
    );
    let events = app.all_events(&id).await;
    let opened = events
        .iter()
        .filter(|e| e.event == "llm.circuit_open")
        .count();
    assert!(opened >= 2, "{:?}", agentrun_e2e::types(&events));
    // Five failed calls, and a failed probe after each cool-down; without
    // the circuit each of the 9 attempts would have made its call.
    let requests = app.mock.state.requests("down");
    assert!(requests <= 3 * 8, "{requests} requests");
}
