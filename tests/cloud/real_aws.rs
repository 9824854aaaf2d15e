//! What real AWS does that the emulator does not show by itself: DynamoDB
//! transactions cancelled for conflicts and throttling (injected by a proxy),
//! a provider asking to wait ten minutes, a task's time, heartbeats from
//! the moment a message arrives, and what the state machine can honour.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentrun::mock_llm::{Fault, Latency, MockScript, MockTurn};
use agentrun::policy::StepPolicy;
use agentrun_e2e::cloud::{aws_endpoint, spawn_cloud_setup, CloudSetup, SfnCalls};
use agentrun_e2e::faults::DynamoFaults;
use agentrun_e2e::{agent, echo_tool};
use aws_sdk_dynamodb::types::AttributeValue;
use serde_json::json;

/// Hot-store items that exist only while a run holds something: slot
/// markers and their index, and token reservations.
async fn held_items(cloud: &agentrun_e2e::cloud::Cloud) -> Vec<(String, String)> {
    let dynamo = aws_sdk_dynamodb::Client::new(&cloud.config);
    let mut held = Vec::new();
    let mut start = None;
    loop {
        let page = dynamo
            .scan()
            .table_name(&cloud.hot_table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .unwrap();
        for item in page.items() {
            let text = |name: &str| {
                item.get(name)
                    .and_then(|v: &AttributeValue| v.as_s().ok())
                    .cloned()
                    .unwrap_or_default()
            };
            let (pk, sk) = (text("pk"), text("sk"));
            if pk == "slots" || sk == "slot" || sk.starts_with("resv#") {
                held.push((pk, sk));
            }
        }
        start = page.last_evaluated_key;
        if start.is_none() {
            return held;
        }
    }
}

/// Ten runs at once in a team of ten slots, with every hot-store
/// transaction cancelled for a conflict at first (and every other one also
/// throttled): none is refused, none is stopped for the team's budget, and
/// every slot and reservation comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_conflicts_and_throttling_refuse_nothing_and_leak_nothing() {
    let faults = DynamoFaults::start(aws_endpoint()).await;
    let script = MockScript {
        turns: vec![MockTurn::tool("noop", json!({})), MockTurn::text("done")],
        latency_ms: Latency::Range([20, 120]),
        ..MockScript::default()
    };
    let setup = CloudSetup {
        hot_endpoint: Some(faults.url.clone()),
        ..CloudSetup::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("busy".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent("busy", agent("busy", json!({"tools": [echo_tool("noop")]})))
        .await;
    let (status, team) = app
        .admin("GET", &format!("/v1/admin/teams/{}", app.team), None)
        .await;
    assert_eq!(status, 200, "{team}");
    assert_eq!(team["limits"]["max_concurrent_runs"], 10, "{team}");

    let bodies: Vec<_> = (0..10)
        .map(|n| json!({"agent": "busy", "input": format!("run {n}")}))
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|body| app.post_run(body, None))).await;
    let mut ids = Vec::new();
    for (status, _, body) in &answers {
        assert_eq!(*status, 202, "a spurious refusal: {body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        let run = app.wait_finished(id, Duration::from_secs(120)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"], 2, "{run}");
    }
    app.assert_slots_released().await;
    let today = chrono::Utc::now().date_naive();
    let (used, reserved) = app
        .platform
        .engine
        .hot
        .tokens_of_day(app.team, today)
        .await
        .unwrap();
    assert_eq!(reserved, 0, "every reservation was settled or given back");
    let billed: i64 = futures_util::future::join_all(ids.iter().map(|id| app.run(id)))
        .await
        .iter()
        .map(|run| run["usage"]["total_tokens"].as_i64().unwrap())
        .sum();
    assert_eq!(used as i64, billed, "the day counts each call once");
    assert_eq!(held_items(&cloud).await, Vec::<(String, String)>::new());

    let injected = faults.injected();
    // Per run at least: the slot, two reservations, two settlements, the release.
    assert!(
        injected.transaction_conflicts >= 60,
        "conflicts were injected: {injected:?}"
    );
    assert!(injected.transaction_throttles > 0, "{injected:?}");
    assert!(injected.write_conflicts > 0, "{injected:?}");
}

/// A provider that keeps answering 429 with `Retry-After: 600`: no worker
/// sleeps through it. Each attempt hands the wait back to the state machine
/// at once as `Retryable.RateLimited` (its own, longer retry schedule),
/// and the run ends `llm_unavailable` once those retries are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_minute_retry_after_goes_back_to_the_state_machine() {
    let policy = StepPolicy {
        rate_limit_retries: 2,
        rate_limit_base: Duration::from_secs(1),
        rate_limit_max_delay: Duration::from_secs(2),
        ..StepPolicy::default()
    };
    let script = MockScript {
        turns: vec![MockTurn::text("never")],
        faults: vec![Fault {
            status: 429,
            retry_after: Some(600.0),
            times: 1_000,
        }],
        ..MockScript::default()
    };
    let setup = CloudSetup {
        asl: agentrun::asl::render(&policy),
        policy,
        ..CloudSetup::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("limited".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent("limited", agent("limited", json!({}))).await;
    let started = Instant::now();
    let id = app.start_run("limited", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["stop_reason"], "llm_unavailable", "{run}");
    assert!(
        run["stop_detail"]
            .as_str()
            .unwrap()
            .starts_with("Retryable.RateLimited"),
        "{run}"
    );
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED", "Catch → Finalize → Done");
    assert_eq!(
        cloud.task_failures(&id).await,
        vec!["Retryable.RateLimited"; 3],
        "the first try and both rate-limit retries"
    );
    // At most one request per attempt: the client waits neither ten
    // minutes nor for another try. (The emulator may replay a task's
    // failure instead of sending it again, so there can be fewer.)
    let requests = app.mock.state.requests("limited");
    assert!((1..=3).contains(&requests), "{requests} requests");
    assert!(
        took < Duration::from_secs(30),
        "every task ended at once, not after Retry-After: {took:?}"
    );
}

/// An agent whose `limits.timeout_seconds` is longer than the state machine
/// lets an execution run is refused when stored, and a run of one stored
/// earlier is refused before anything is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_the_state_machine_cannot_honour_is_refused() {
    let policy = StepPolicy {
        workflow_timeout: Duration::from_secs(900),
        ..StepPolicy::default()
    };
    let max = policy.max_run_timeout().as_secs();
    assert_eq!(max, 540);
    let setup = CloudSetup {
        asl: agentrun::asl::render(&policy),
        policy,
        ..CloudSetup::default()
    };
    let script = MockScript::turns(vec![MockTurn::text("done")]);
    let cloud = spawn_cloud_setup(HashMap::from([("long".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    let (status, refused) = app
        .call_as(
            &app.key,
            "PUT",
            "/v1/agents/long",
            Some(agent("long", json!({"limits": {"timeout_seconds": 600}}))),
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(
        refused["error"]["code"], "timeout_not_supported",
        "{refused}"
    );
    assert_eq!(
        refused["error"]["details"]["field"],
        "limits.timeout_seconds"
    );
    assert_eq!(refused["error"]["details"]["limit"], max);
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 540 s"),
        "{refused}"
    );
    app.put_agent(
        "long",
        agent("long", json!({"limits": {"timeout_seconds": 500}})),
    )
    .await;

    // Stored before this deployment's limit (as another deployment might).
    let spec: agentrun::domain::AgentSpec =
        serde_json::from_value(agent("long", json!({"limits": {"timeout_seconds": 3600}})))
            .unwrap();
    app.platform
        .engine
        .ledger
        .put_agent(app.team, "long", &spec)
        .await
        .unwrap();
    let (status, _, refused) = app
        .post_run(&json!({"agent": "long", "input": "go"}), None)
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "timeout_not_supported");
    assert_eq!(app.run_rows().await, 0, "nothing was created");
    assert_eq!(app.slots_held().await, 0);
    let (status, _, accepted) = app
        .post_run(&json!({"agent": "long", "version": 1, "input": "go"}), None)
        .await;
    assert_eq!(status, 202, "{accepted}");
    let run = app
        .wait_finished(accepted["id"].as_str().unwrap(), Duration::from_secs(60))
        .await;
    assert_eq!(run["status"], "succeeded", "{run}");
}

/// The worker heartbeats the moment a message arrives (a cold start or a
/// slow batch cannot let the heartbeat lapse while the LLM call runs), and
/// drops a message whose task is already closed without touching the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_goes_out_at_receipt_and_a_closed_task_is_dropped() {
    let calls = SfnCalls::default();
    let config = agentrun::adapters::aws::sdk_config(Some(&aws_endpoint())).await;
    let setup = CloudSetup {
        worker_sfn: Some(calls.client(&config)),
        ..CloudSetup::default()
    };
    let script = MockScript {
        turns: vec![MockTurn::text("slow answer")],
        latency_ms: Latency::Fixed(2_000),
        ..MockScript::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("slow".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent("slow", agent("slow", json!({}))).await;
    let id = app.start_run("slow", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");

    let (received_at, body) = cloud.received.lock().unwrap()[0].clone();
    let beats = calls.times("SendTaskHeartbeat");
    let answered = calls.times("SendTaskSuccess");
    assert_eq!(answered.len(), 1);
    let first_beat = *beats.first().expect("a heartbeat");
    assert!(
        first_beat.duration_since(received_at) < Duration::from_secs(1),
        "first heartbeat {:?} after receipt",
        first_beat.duration_since(received_at)
    );
    assert!(
        answered[0].duration_since(received_at) >= Duration::from_secs(2),
        "the heartbeat went out before the LLM answered, not after"
    );

    // The same message again: its task is closed, so it is dropped.
    let requests = app.mock.state.requests("slow");
    let worker = agentrun::adapters::aws::StepWorker::new(
        app.platform.engine.clone(),
        calls.client(&config),
        StepPolicy::default(),
    );
    worker.handle(&body, None).await.unwrap();
    assert!(calls.times("SendTaskHeartbeat").len() > beats.len());
    assert_eq!(calls.times("SendTaskSuccess").len(), 1, "nothing answered");
    assert_eq!(app.mock.state.requests("slow"), requests);
}

/// Reads a text served in parts (`{text, next_offset}`) from `path`.
async fn read_parts(app: &agentrun_e2e::TestApp, path: &str) -> String {
    let mut whole = String::new();
    let mut offset = 0;
    loop {
        let separator = if path.contains('?') { '&' } else { '?' };
        let response = app
            .http
            .get(format!("{}{path}{separator}offset={offset}", app.url))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.bytes().await.unwrap();
        assert!(body.len() < LAMBDA_RESPONSE_LIMIT, "{} bytes", body.len());
        let part: serde_json::Value = serde_json::from_slice(&body).unwrap();
        whole.push_str(part["text"].as_str().unwrap());
        match part["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => return whole,
        }
    }
}

/// A buffered Lambda answers at most 6 MB.
const LAMBDA_RESPONSE_LIMIT: usize = 6_000_000;

/// A run whose output is 10 MB and whose tool answered 100 KB: every
/// response stays under the Lambda limit (the output and the result are
/// read in parts), the terminal event is mirrored without its data (a
/// DynamoDB item holds 400 KB), and the relay's stream is complete, the
/// terminal event whole from the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_output_stays_under_every_limit() {
    let output = "y".repeat(10 * 1024 * 1024);
    let blob = "b".repeat(100 * 1024);
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"blob": blob})),
            MockTurn::text(&output),
        ],
        usage: Some(agentrun::ports::Usage {
            prompt_tokens: 100,
            completion_tokens: 100,
        }),
        ..MockScript::default()
    };
    let cloud = spawn_cloud_setup(
        HashMap::from([("huge".to_owned(), script)]),
        CloudSetup::default(),
    )
    .await;
    let app = &cloud.app;
    app.put_agent("huge", agent("huge", json!({"tools": [echo_tool("noop")]})))
        .await;
    let id = app.start_run("huge", json!("go")).await;
    app.wait_finished(&id, Duration::from_secs(90)).await;

    let get = |path: String| async move {
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&app.key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let body = response.bytes().await.unwrap();
        assert!(
            body.len() < LAMBDA_RESPONSE_LIMIT,
            "{path}: {} bytes",
            body.len()
        );
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    let run = get(format!("/v1/runs/{id}")).await;
    assert_eq!(run["status"], "succeeded", "{}", run["stop_detail"]);
    assert_eq!(run["output_inline"], false);
    assert_eq!(run["output"], serde_json::Value::Null);
    assert_eq!(run["output_bytes"], output.len() + 2, "a JSON string");
    let text = read_parts(app, &format!("/v1/runs/{id}/output")).await;
    assert_eq!(serde_json::from_str::<String>(&text).unwrap(), output);
    let raw = read_parts(app, &format!("/v1/runs/{id}/output?part=raw_output")).await;
    assert_eq!(raw, output);
    let listed = get("/v1/runs".to_owned()).await;
    assert_eq!(listed["data"][0]["id"], id.as_str());

    let steps = get(format!("/v1/runs/{id}/steps")).await;
    let call = &steps["data"][0]["tool_calls"][0];
    assert_eq!(call["result_cut"], true, "{call}");
    let result_bytes = call["result_bytes"].as_u64().unwrap() as usize;
    assert!(result_bytes > blob.len(), "{result_bytes}");
    let result = read_parts(app, call["links"]["result"].as_str().unwrap()).await;
    assert_eq!(result.len(), result_bytes);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&result).unwrap()["blob"],
        blob.as_str()
    );

    // The mirror: every item fits DynamoDB; the terminal one went without
    // its data.
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    let mirrored = aws_sdk_dynamodb::Client::new(&cloud.config)
        .query()
        .table_name(&cloud.events_table)
        .key_condition_expression("run_id = :run")
        .expression_attribute_values(":run", AttributeValue::S(id.clone()))
        .send()
        .await
        .unwrap();
    let ledger_events = app
        .count("SELECT count(*) FROM run_events WHERE run_id = $1", &id)
        .await;
    assert_eq!(mirrored.count() as i64, ledger_events);
    for item in mirrored.items() {
        let size: usize = item
            .iter()
            .map(|(name, value)| name.len() + value.as_s().map_or(8, String::len))
            .sum();
        assert!(size < 400 * 1024, "an item of {size} bytes");
    }
    let terminal = mirrored.items().last().unwrap();
    assert_eq!(terminal["type"].as_s().unwrap(), "run.succeeded");
    assert_eq!(terminal["data_truncated"].as_bool().unwrap(), &true);

    // The relay's stream from the table: complete and whole.
    let state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        cloud.orchestrator.clone(),
        None,
    )
    .reading_events_from(std::sync::Arc::new(
        agentrun::adapters::aws::DynamoEventFeed::new(
            &cloud.config,
            &cloud.events_table,
            app.platform.engine.ledger.clone(),
        ),
    ));
    let relay = format!(
        "http://{}",
        agentrun_e2e::serve(agentrun::api::relay_router(state))
            .await
            .0
    );
    let text = app
        .http
        .get(format!("{relay}/v1/runs/{id}/events"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let frames = agentrun::sse_client::SseParser::default().push(text.as_bytes());
    assert_eq!(
        agentrun_e2e::seqs(&frames),
        (1..=ledger_events).collect::<Vec<_>>()
    );
    let last = frames.last().unwrap();
    assert_eq!(last.event, "run.succeeded");
    let data: serde_json::Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(
        data["data"]["output"].as_str().map(str::len),
        Some(output.len())
    );
}

/// Through a pooler that shares server connections (RDS Proxy), named
/// statements would pin each client to one: the cloud path's ledger sends
/// unnamed ones, and after a whole run no connection holds any.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cloud_ledger_leaves_no_statement_in_the_session() {
    let receiver = agentrun_e2e::ToolReceiver::start(Duration::ZERO).await;
    let script = MockScript::turns(vec![
        MockTurn::tool("charge", json!({"cents": 100})),
        MockTurn::text("done"),
    ]);
    let cloud = spawn_cloud_setup(
        HashMap::from([("pooled".to_owned(), script)]),
        CloudSetup::default(),
    )
    .await;
    let app = &cloud.app;
    app.put_agent(
        "pooled",
        agent(
            "pooled",
            json!({"tools": [{"name": "charge", "kind": "http", "url": receiver.url}]}),
        ),
    )
    .await;
    let id = app.start_run("pooled", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.steps(&id).await.len(), 2);
    let ledger = &app.platform.engine.ledger;
    assert_eq!(
        ledger.statement_mode(),
        agentrun::ledger::StatementMode::Unnamed
    );
    let counts = agentrun_e2e::prepared_statements(ledger).await;
    assert!(!counts.is_empty(), "the run used the pool");
    assert!(counts.iter().all(|n| *n == 0), "{counts:?}");
}

/// A task that times out while its step still waits on the model: the next
/// heartbeat finds it closed and the worker stops the step there, so the
/// late answer is never paid for nor committed; the run ends through the
/// state machine's retries and Catch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_closes_mid_step_stops_the_step() {
    let machine = StepPolicy {
        step_timeout: Duration::from_secs(3),
        heartbeat: Duration::from_secs(2),
        max_retries: 1,
        retry_base: Duration::from_secs(1),
        retry_max_delay: Duration::from_secs(1),
        ..StepPolicy::default()
    };
    // The worker itself would give the step minutes.
    let worker = StepPolicy {
        heartbeat: Duration::from_millis(1_500),
        ..StepPolicy::default()
    };
    let script = MockScript {
        turns: vec![MockTurn::text("too late")],
        latency_ms: Latency::Fixed(8_000),
        ..MockScript::default()
    };
    let setup = CloudSetup {
        asl: agentrun::asl::render(&machine),
        policy: worker,
        ..CloudSetup::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("late".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent("late", agent("late", json!({}))).await;
    let id = app.start_run("late", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED", "Catch → Finalize → Done: {history:?}");
    // Well past when an unstopped step would have committed its answer.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(app.step_rows(&id).await, 0, "no abandoned step committed");
    assert_eq!(run["usage"]["llm_calls"], 0);
    let requests = app.mock.state.requests("late");
    assert!(
        (1..=2).contains(&requests),
        "one request per attempt, each dropped: {requests}"
    );
}

/// The hot store's DynamoDB endpoint goes away mid-run: the runs go on
/// through the real state machine and succeed on answers from the ledger,
/// `/healthz` says `degraded`, and new runs are still admitted; once it is
/// back, health is `ok` and no slot is left held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dynamodb_outage_mid_run_degrades_and_the_runs_succeed() {
    let faults = DynamoFaults::passthrough(aws_endpoint()).await;
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::tool("noop", json!({"n": 2})),
            MockTurn::text("done"),
        ],
        latency_ms: Latency::Range([300, 600]),
        ..MockScript::default()
    };
    let setup = CloudSetup {
        hot_endpoint: Some(faults.url.clone()),
        ..CloudSetup::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("steady".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent(
        "steady",
        agent("steady", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.start_run("steady", json!(n)).await);
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    faults.set_down(true);
    let until = Instant::now() + Duration::from_secs(30);
    while app.get("/healthz").await.1["status"] != "degraded" {
        assert!(Instant::now() < until, "never said degraded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    ids.push(app.start_run("steady", json!("while away")).await);
    for id in &ids {
        let run = app.wait_finished(id, Duration::from_secs(90)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["steps"], 3);
        let (status, _) = cloud.execution(id).await;
        assert_eq!(status, "SUCCEEDED");
    }
    faults.set_down(false);
    let until = Instant::now() + Duration::from_secs(30);
    while app.get("/healthz").await.1["status"] != "ok" {
        assert!(Instant::now() < until, "never back to ok");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    app.assert_slots_released().await;
}

/// A worker that dies the moment it takes a step's message (no heartbeat,
/// no answer, the message gone): the task's heartbeat lapses, the state
/// machine tries the step again with a new message, and the run succeeds
/// with each step once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_on_receipt_is_replaced_when_its_heartbeat_lapses() {
    let machine = StepPolicy {
        heartbeat: Duration::from_secs(2),
        retry_base: Duration::from_secs(1),
        retry_max_delay: Duration::from_secs(1),
        ..StepPolicy::default()
    };
    let script = MockScript::turns(vec![
        MockTurn::tool("noop", json!({})),
        MockTurn::text("done"),
    ]);
    let setup = CloudSetup {
        asl: agentrun::asl::render(&machine),
        ..CloudSetup::default()
    };
    let cloud = spawn_cloud_setup(HashMap::from([("mortal".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent(
        "mortal",
        agent("mortal", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    cloud
        .drop_next_message
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let id = app.start_run("mortal", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.step_rows(&id).await, 2);
    assert_eq!(app.mock.state.requests("mortal"), 2, "nothing done twice");
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    assert!(
        history.iter().any(|(kind, _)| kind == "TaskTimedOut"),
        "the lapse is in the history: {history:?}"
    );
}

/// With `steps_per_task`, one Step task runs several agent steps one after
/// the other, each committed on its own: a four-step run takes one task
/// instead of four (fewer state transitions), with nothing done twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_steps_per_task_cut_the_transitions_and_commit_each_step() {
    let setup = CloudSetup {
        policy: StepPolicy {
            steps_per_task: 5,
            ..StepPolicy::default()
        },
        ..CloudSetup::default()
    };
    let script = MockScript::turns(vec![
        MockTurn::tool("noop", json!({"n": 1})),
        MockTurn::tool("noop", json!({"n": 2})),
        MockTurn::tool("noop", json!({"n": 3})),
        MockTurn::text("done"),
    ]);
    let cloud = spawn_cloud_setup(HashMap::from([("batched".to_owned(), script)]), setup).await;
    let app = &cloud.app;
    app.put_agent(
        "batched",
        agent("batched", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("batched", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.step_rows(&id).await, 4);
    assert_eq!(app.mock.state.requests("batched"), 4);
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    let tasks = history
        .iter()
        .filter(|(kind, name)| kind == "TaskStateEntered" && name.as_deref() == Some("Step"))
        .count();
    assert_eq!(tasks, 1, "one Step task for the four steps: {history:?}");
    let events = app.all_events(&id).await;
    let seqs = agentrun_e2e::seqs(&events);
    assert_eq!(seqs, (1..=seqs.len() as i64).collect::<Vec<_>>());
    let started = events.iter().filter(|e| e.event == "step.started").count();
    assert_eq!(
        started,
        4,
        "each step began once: {:?}",
        agentrun_e2e::types(&events)
    );
}
