//! End-to-end tests of the cloud path on the AWS emulator: the real state
//! machine executes runs whose steps the step worker answers over SQS task
//! tokens, with a real PostgreSQL and the mock LLM.

mod hot_store;
mod real_aws;

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentrun::adapters::aws::{sdk_config, StepFunctionsOrchestrator, StepWorker};
use agentrun::cloud::{handle_finalize_event, handle_step_batch};
use agentrun::domain::RunId;
use agentrun::embedded::load_agent_dir;
use agentrun::mock_llm::{parse_scripts, Fault, Latency, MockScript, MockTurn};
use agentrun::policy::StepPolicy;
use agentrun::ports::{Orchestrator, OrchestratorError, StartOutcome};
use agentrun_e2e::cloud::{spawn_cloud, spawn_cloud_with, spawn_cloud_wrapped};
use agentrun_e2e::{agent, echo_tool, seqs, ToolReceiver};
use serde_json::json;

/// The reconciliation schedule's EventBridge event, as the finalize
/// function receives it.
fn scheduled_event() -> serde_json::Value {
    json!({
        "version": "0", "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-28T12:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/agentrun-reconcile"],
        "detail": {}
    })
}

fn steps_entered(history: &[(String, Option<String>)]) -> usize {
    history
        .iter()
        .filter(|(kind, name)| kind == "TaskStateEntered" && name.as_deref() == Some("Step"))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_triage_run_waits_for_its_approval_and_executes_through_the_real_state_machine() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut scripts =
        parse_scripts(&std::fs::read_to_string(examples.join("mock-llm.json")).unwrap()).unwrap();
    for script in scripts.values_mut() {
        script.latency_ms = Latency::Fixed(0);
    }
    let cloud = spawn_cloud(scripts).await;
    let app = &cloud.app;
    load_agent_dir(
        &app.platform.engine.ledger,
        app.team,
        &examples.join("agents"),
    )
    .await
    .unwrap();
    let id = app
        .start_run("support-triage", json!("I was charged twice"))
        .await;
    // The refund over $50 parks the execution in `Wait for input`: no
    // slot held, no step message in flight, the task token in the ledger.
    let pending = app.wait_for_approval(&id, Duration::from_secs(60)).await;
    assert_eq!(pending[0]["name"], "issue_refund");
    let run_id: uuid::Uuid = id.parse().unwrap();
    let db = app.db().await;
    let until = std::time::Instant::now() + Duration::from_secs(30);
    while db
        .query_one("SELECT wait_token FROM runs WHERE id = $1", &[&run_id])
        .await
        .unwrap()
        .get::<_, Option<String>>(0)
        .is_none()
    {
        assert!(
            std::time::Instant::now() < until,
            "the wait's task token was never kept"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(app.slots_held().await, 0);
    let (status, history) = cloud.execution_now(&id).await;
    assert_eq!(status, "RUNNING");
    assert!(
        history
            .iter()
            .any(|(kind, name)| kind == "TaskStateEntered"
                && name.as_deref() == Some("Wait for input")),
        "{history:?}"
    );
    assert_eq!(app.mock.state.total_requests(), 4);
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, answered) = app
        .answer_approval(&id, request_id, json!({"approve": true}))
        .await;
    assert_eq!(status, 200, "{answered}");

    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["category"], "billing");
    assert_eq!(run["output"]["refund_cents"], 7900);
    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 5);
    assert_eq!(steps[3]["tool_calls"][0]["name"], "issue_refund");
    assert_eq!(steps[3]["tool_calls"].as_array().unwrap().len(), 1);

    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    // Step 4 twice: once to ask, once, answered, to make the refund.
    assert_eq!(
        steps_entered(&history),
        6,
        "one Step task per agent step, and the resumed one: {history:?}"
    );
    app.assert_slots_released().await;
    let events = app.all_events(&id).await;
    let n = events.len() as i64;
    assert_eq!(seqs(&events), (1..=n).collect::<Vec<_>>());
    assert_eq!(events.last().unwrap().event, "run.succeeded");
}

/// Unanswered, the `Wait for input` state times out at the request's
/// expiry; the step that follows ends the run `cancelled` with
/// `approval_timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_approval_times_out_in_the_state_machine() {
    let script = MockScript::turns(vec![
        MockTurn::tool("refund", json!({"amount_cents": 9900})),
        MockTurn::text("done"),
    ]);
    let cloud = spawn_cloud(HashMap::from([("patient".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent(
        "patient",
        agent(
            "patient",
            json!({"approval_timeout_seconds": 2, "tools": [{
                "name": "refund", "kind": "builtin", "builtin": "echo", "requires_approval": true
            }]}),
        ),
    )
    .await;
    let id = app.start_run("patient", json!("refund me")).await;
    app.wait_for_approval(&id, Duration::from_secs(60)).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["stop_reason"], "approval_timeout");
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    // The wait timed out into a Step, which ended the run.
    let entered: Vec<&str> = history
        .iter()
        .filter(|(kind, _)| kind.ends_with("StateEntered"))
        .filter_map(|(_, name)| name.as_deref())
        .collect();
    assert_eq!(
        entered,
        [
            "Step",
            "Route",
            "Wait for input",
            "Step",
            "Route",
            "Finalize",
            "Done"
        ],
        "{history:?}"
    );
    assert_eq!(app.steps(&id).await.len(), 0);
    app.assert_slots_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retryable_step_failure_is_retried_by_the_state_machine() {
    // The client's own retries (2) are used up by the first three faults, so
    // the first attempt fails with Retryable.LlmUnavailable; the second works.
    let script = MockScript {
        turns: vec![MockTurn::text("fine")],
        faults: vec![Fault {
            status: 503,
            retry_after: None,
            times: 3,
        }],
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("flaky".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent("flaky", agent("flaky", json!({}))).await;
    let id = app.start_run("flaky", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0]["attempt"], 2);
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    assert!(
        history.iter().any(|(kind, _)| kind == "TaskFailed"),
        "{history:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fatal_step_error_goes_to_finalize_and_fails_the_run() {
    let script = MockScript {
        fail_always: Some(400),
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("refusing".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent("refusing", agent("refusing", json!({})))
        .await;
    let id = app.start_run("refusing", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "llm_unavailable");
    assert!(
        run["stop_detail"]
            .as_str()
            .unwrap()
            .starts_with("Fatal.llm_unavailable"),
        "{run}"
    );
    let (status, history) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED", "Catch → Finalize → Done");
    assert_eq!(steps_entered(&history), 1);
    assert_eq!(
        app.mock.state.requests("refusing"),
        1,
        "a 400 is not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_delivered_twice_still_makes_each_step_and_tool_call_once() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let script = MockScript::turns(vec![
        MockTurn::tool("charge", json!({"cents": 100})),
        MockTurn::text("done"),
    ]);
    let cloud = spawn_cloud(HashMap::from([("twice".to_owned(), script)])).await;
    cloud.deliver_twice.store(true, Ordering::SeqCst);
    let app = &cloud.app;
    app.put_agent(
        "twice",
        agent(
            "twice",
            json!({"tools": [{"name": "charge", "kind": "http", "url": receiver.url}]}),
        ),
    )
    .await;
    let id = app.start_run("twice", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(app.step_rows(&id).await, 2);
    assert_eq!(receiver.counts().get(&format!("{id}:1:0")), Some(&1));
    assert_eq!(app.mock.state.requests("twice"), 2);
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_lost_after_the_commit_is_completed_by_the_redelivery_without_repeating() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let script = MockScript::turns(vec![
        MockTurn::tool("charge", json!({"cents": 100})),
        MockTurn::text("done"),
    ]);
    let cloud = spawn_cloud(HashMap::from([("lost".to_owned(), script)])).await;
    cloud.lose_next_answer.store(true, Ordering::SeqCst);
    let app = &cloud.app;
    app.put_agent(
        "lost",
        agent(
            "lost",
            json!({"tools": [{"name": "charge", "kind": "http", "url": receiver.url}]}),
        ),
    )
    .await;
    let id = app.start_run("lost", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let steps = app.steps(&id).await;
    assert_eq!(steps.len(), 2);
    assert_eq!(
        steps[0]["attempt"], 1,
        "the redelivery returned the stored outcome"
    );
    assert_eq!(receiver.counts().get(&format!("{id}:1:0")), Some(&1));
    assert_eq!(app.mock.state.requests("lost"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_through_the_api_stops_the_execution() {
    let script = MockScript {
        turns: vec![MockTurn::tool("noop", json!({}))],
        latency_ms: Latency::Fixed(200),
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("endless".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent(
        "endless",
        agent("endless", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("endless", json!("go")).await;
    app.wait_for_step(&id, 2).await;
    let (status, body) = app
        .call_as(&app.key, "POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["status"], "cancelled");
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "ABORTED");
    app.assert_no_more_steps(&id).await;
    assert_eq!(app.run(&id).await["status"], "cancelled");
}

/// An execution that times out never reaches `Finalize`: the status-change
/// event settles the run (as the EventBridge rule does in AWS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_execution_timeout_is_settled_from_the_status_change_event() {
    let policy = agentrun::policy::StepPolicy {
        workflow_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let script = MockScript {
        turns: vec![MockTurn::tool("noop", json!({}))],
        latency_ms: Latency::Fixed(300),
        ..MockScript::default()
    };
    let cloud = spawn_cloud_with(
        HashMap::from([("slow".to_owned(), script)]),
        &agentrun::asl::render(&policy),
    )
    .await;
    let app = &cloud.app;
    app.put_agent("slow", agent("slow", json!({"tools": [echo_tool("noop")]})))
        .await;
    let id = app.start_run("slow", json!("go")).await;
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "TIMED_OUT");
    assert_eq!(
        app.run(&id).await["status"],
        "running",
        "nothing settled it yet"
    );

    // The event as EventBridge delivers it (fields the handler does not read trimmed).
    let event = json!({
        "version": "0",
        "detail-type": "Step Functions Execution Status Change",
        "source": "aws.states",
        "resources": [cloud.orchestrator.execution_arn(id.parse().unwrap())],
        "detail": {
            "executionArn": cloud.orchestrator.execution_arn(id.parse().unwrap()),
            "name": id,
            "status": "TIMED_OUT",
            "input": json!({"run_id": id, "step_no": 1}).to_string()
        }
    });
    let engine = &app.platform.engine;
    // Through the finalize function's handler, twice (EventBridge delivers at least once).
    for _ in 0..2 {
        assert_eq!(
            handle_finalize_event(engine, cloud.orchestrator.as_ref(), event.clone())
                .await
                .unwrap(),
            json!({})
        );
    }
    let run = app.run(&id).await;
    assert_eq!(run["status"], "timed_out");
    assert_eq!(run["stop_reason"], "timeout");
    let events = app.all_events(&id).await;
    assert_eq!(
        events.iter().filter(|e| e.event == "run.timed_out").count(),
        1
    );
    let (_, team) = app
        .admin("GET", &format!("/v1/admin/teams/{}", app.team), None)
        .await;
    assert_eq!(team["running_runs"], 0, "the slot was released");
}

/// The step function's handler on a captured SQS batch: a malformed message
/// and a stale task token are dropped; with Step Functions out of reach the
/// message comes back as a partial batch failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_handler_reports_partial_batch_failures_on_a_captured_sqs_event() {
    let cloud = spawn_cloud(HashMap::new()).await;
    let engine = cloud.app.platform.engine.clone();
    let run_id = uuid::Uuid::new_v4();
    let event: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(json!({
        "Records": [
            {
                "messageId": "m-malformed",
                "receiptHandle": "r1",
                "body": "not json",
                "attributes": {"ApproximateReceiveCount": "1", "SentTimestamp": "1764240000000",
                               "SenderId": "AIDAEXAMPLE", "ApproximateFirstReceiveTimestamp": "1764240000001"},
                "messageAttributes": {},
                "md5OfBody": "0",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:agentrun-steps",
                "awsRegion": "us-east-1"
            },
            {
                "messageId": "m-stale",
                "receiptHandle": "r2",
                "body": json!({"run_id": run_id, "step_no": 1, "task_token": "no-such-token"}).to_string(),
                "attributes": {},
                "messageAttributes": {},
                "md5OfBody": "0",
                "eventSource": "aws:sqs",
                "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:agentrun-steps",
                "awsRegion": "us-east-1"
            }
        ]
    }))
    .unwrap();
    let config = sdk_config(Some(&agentrun_e2e::cloud::aws_endpoint())).await;
    let worker = StepWorker::new(
        engine.clone(),
        aws_sdk_sfn::Client::new(&config),
        StepPolicy::default(),
    );
    let response = handle_step_batch(&worker, event.clone()).await;
    assert!(
        response.batch_item_failures.is_empty(),
        "{:?}",
        response.batch_item_failures
    );

    let closed = format!("http://127.0.0.1:{}", agentrun_e2e::free_port());
    let unreachable = StepWorker::new(
        engine,
        aws_sdk_sfn::Client::new(&sdk_config(Some(&closed)).await),
        StepPolicy::default(),
    );
    let response = handle_step_batch(&unreachable, event).await;
    let failed: Vec<&str> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.as_str())
        .collect();
    assert_eq!(
        failed,
        vec!["m-stale"],
        "only the message that must be answered comes back"
    );
}

/// The api function's router on a captured API Gateway HTTP API (v2) event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_handler_serves_a_captured_api_gateway_event() {
    use tower::ServiceExt;
    let cloud = spawn_cloud(HashMap::from([(
        "gw".to_owned(),
        MockScript::turns(vec![MockTurn::text("hi")]),
    )]))
    .await;
    let app = &cloud.app;
    app.put_agent("gw", agent("gw", json!({}))).await;
    let event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": "/v1/runs",
        "rawQueryString": "",
        "headers": {
            "authorization": format!("Bearer {}", app.key),
            "content-type": "application/json",
            "host": "abc123.execute-api.us-east-1.amazonaws.com",
            "idempotency-key": "gw-1"
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.us-east-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {"method": "POST", "path": "/v1/runs", "protocol": "HTTP/1.1",
                     "sourceIp": "203.0.113.7", "userAgent": "curl/8.5.0"},
            "requestId": "JKJaXmPLvHcESHA=",
            "routeKey": "$default",
            "stage": "$default",
            "time": "27/Nov/2026:14:15:00 +0000",
            "timeEpoch": 1764252900000u64
        },
        "body": json!({"agent": "gw", "input": "hello"}).to_string(),
        "isBase64Encoded": false
    });
    let request = lambda_http::request::from_str(&event.to_string()).unwrap();
    let router = agentrun::api::router(agentrun::api::AppState::new(
        app.platform.engine.clone(),
        cloud.orchestrator.clone(),
        None,
    ));
    let response = router.oneshot(request).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let run: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let id = run["id"].as_str().unwrap();
    let finished = app.wait_finished(id, Duration::from_secs(60)).await;
    assert_eq!(finished["status"], "succeeded", "{finished}");
    let (status, _) = cloud.execution(id).await;
    assert_eq!(status, "SUCCEEDED");
}

/// The streaming core over the events table, as a separate relay instance
/// runs it.
fn relay_followers(
    cloud: &agentrun_e2e::cloud::Cloud,
    config: &aws_config::SdkConfig,
) -> Arc<agentrun::sse::RunFollowers> {
    let relay = Arc::new(agentrun::adapters::aws::DynamoEventFeed::new(
        config,
        &cloud.events_table,
        cloud.app.platform.engine.ledger.clone(),
    ));
    agentrun::sse::RunFollowers::new(relay.clone(), relay)
}

/// The relay's streaming core reads a cloud run from the DynamoDB events
/// table (as a separate relay instance would), with Last-Event-ID replay:
/// no gap, no duplicate, the same events as the ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_core_streams_a_cloud_run_from_the_dynamodb_feed_with_replay() {
    use std::sync::Arc;

    use agentrun::adapters::aws::DynamoEventFeed;

    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::tool("noop", json!({"n": 2})),
            MockTurn::text("finished"),
        ],
        latency_ms: Latency::Fixed(150),
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("relayed".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent(
        "relayed",
        agent("relayed", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("relayed", json!("go")).await;
    let run: agentrun::domain::RunId = id.parse().unwrap();

    let config = sdk_config(Some(&agentrun_e2e::cloud::aws_endpoint())).await;
    let followers = relay_followers(&cloud, &config);
    let mut first = followers.subscribe(run, 0, false);
    let mut seen = Vec::new();
    for _ in 0..4 {
        let frame = tokio::time::timeout(Duration::from_secs(20), first.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push(frame);
    }
    drop(first); // the client went away mid-run
    let last = seen.last().unwrap().id().unwrap();
    let mut second = followers.subscribe(run, last, false);
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), second.recv())
        .await
        .unwrap()
    {
        seen.push(frame.unwrap());
    }
    let streamed: Vec<i64> = seen.iter().filter_map(|f| f.id()).collect();
    assert_eq!(streamed, (1..=streamed.len() as i64).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap().event(), "run.succeeded");
    assert_eq!(
        app.count("SELECT count(*) FROM run_events WHERE run_id = $1", &id)
            .await,
        streamed.len() as i64
    );

    // Every event was mirrored to the table.
    let mirrored = aws_sdk_dynamodb::Client::new(&config)
        .query()
        .table_name(&cloud.events_table)
        .key_condition_expression("run_id = :run")
        .expression_attribute_values(
            ":run",
            aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mirrored.count() as usize, streamed.len());

    // The relay function's router over HTTP: same frames, Last-Event-ID replay.
    let state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        cloud.orchestrator.clone(),
        None,
    )
    .reading_events_from(Arc::new(DynamoEventFeed::new(
        &config,
        &cloud.events_table,
        app.platform.engine.ledger.clone(),
    )));
    let relay_url = format!(
        "http://{}",
        agentrun_e2e::serve(agentrun::api::relay_router(state))
            .await
            .0
    );
    let response = app
        .http
        .get(format!("{relay_url}/v1/runs/{id}/events"))
        .bearer_auth(&app.key)
        .header("last-event-id", "3")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let text = response.text().await.unwrap();
    let frames = agentrun::sse_client::SseParser::default().push(text.as_bytes());
    assert_eq!(
        seqs(&frames),
        (4..=streamed.len() as i64).collect::<Vec<_>>()
    );
    let anonymous = app
        .http
        .get(format!("{relay_url}/v1/runs/{id}/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let (status, _) = app
        .call_as(&app.key, "GET", &format!("/v1/runs/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let not_here = app
        .http
        .get(format!("{relay_url}/v1/runs"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        not_here.status().as_u16(),
        404,
        "the relay serves only event streams"
    );
}

/// A streaming agent on the cloud path: the step worker writes its text
/// deltas to the events table as short-lived items, a batch per 250 ms at
/// most, and a separate relay's subscriber gets them before llm.completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_agents_deltas_reach_the_relay_through_the_events_table() {
    use agentrun::sse::StreamFrame;
    use aws_sdk_dynamodb::types::AttributeValue;

    let answer = "Your refund of 42 dollars is approved and on its way. ".repeat(6);
    let pieces = answer.chars().count().div_ceil(8);
    let script = MockScript {
        turns: vec![MockTurn::text(&answer)],
        chunk_delay_ms: 40,
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("writer".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent("writer", agent("writer", json!({"stream": true})))
        .await;
    let id = app.start_run("writer", json!("go")).await;
    let run: RunId = id.parse().unwrap();

    let config = sdk_config(Some(&agentrun_e2e::cloud::aws_endpoint())).await;
    let followers = relay_followers(&cloud, &config);
    let mut frames = followers.subscribe(run, 0, true);
    let mut seen = Vec::new();
    while let Some(frame) = tokio::time::timeout(Duration::from_secs(30), frames.recv())
        .await
        .unwrap()
    {
        seen.push(frame.unwrap());
    }
    let completed_at = seen
        .iter()
        .position(|f| f.event() == "llm.completed")
        .unwrap();
    let deltas: Vec<_> = seen
        .iter()
        .enumerate()
        .filter_map(|(at, frame)| match frame {
            StreamFrame::Delta(delta) => Some((at, delta.clone())),
            StreamFrame::Event(_) => None,
        })
        .collect();
    assert!(deltas.len() >= 2, "{} deltas", deltas.len());
    assert!(deltas.iter().all(|(at, _)| *at < completed_at));
    // In order, without a gap, and the whole text: the relay watched the
    // run before its step began, and read the last batch before sending
    // llm.completed.
    let mut expected = 0;
    let mut text = String::new();
    for (_, delta) in &deltas {
        assert_eq!(delta.offset, expected);
        expected += delta.text.chars().count();
        text.push_str(&delta.text);
    }
    assert_eq!(text, answer);
    let durable: Vec<i64> = seen.iter().filter_map(StreamFrame::id).collect();
    assert_eq!(durable, (1..=durable.len() as i64).collect::<Vec<_>>());
    assert_eq!(seen.last().unwrap().event(), "run.succeeded");

    // Batched: fewer items than the pieces the model wrote; each expires.
    let items = aws_sdk_dynamodb::Client::new(&config)
        .query()
        .table_name(&cloud.events_table)
        .key_condition_expression("run_id = :run")
        .expression_attribute_values(":run", AttributeValue::S(format!("{id}/deltas")))
        .send()
        .await
        .unwrap();
    let items = items.items();
    assert!(
        items.len() >= deltas.len() && items.len() < pieces,
        "{} items for {pieces} pieces",
        items.len()
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for item in items {
        let expires: u64 = item["expires_at"].as_n().unwrap().parse().unwrap();
        assert!(expires > now && expires <= now + 3600, "{item:?}");
    }
}

/// Sends the first start to a Step Functions endpoint that does not answer,
/// and every later one to the emulator.
struct FirstStartUnreachable {
    unreachable: StepFunctionsOrchestrator,
    reachable: Arc<dyn Orchestrator>,
    tried: AtomicBool,
}

#[async_trait::async_trait]
impl Orchestrator for FirstStartUnreachable {
    async fn start(&self, run: RunId) -> Result<StartOutcome, OrchestratorError> {
        if !self.tried.swap(true, Ordering::SeqCst) {
            return self.unreachable.start(run).await;
        }
        self.reachable.start(run).await
    }

    async fn stop(&self, run: RunId) -> Result<(), OrchestratorError> {
        self.reachable.stop(run).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_that_fails_then_a_retry_with_the_same_key_runs_once() {
    let closed = format!("http://127.0.0.1:{}", agentrun_e2e::free_port());
    let unreachable_config = sdk_config(Some(&closed)).await;
    let script = MockScript::turns(vec![MockTurn::text("done")]);
    let cloud = spawn_cloud_wrapped(
        HashMap::from([("steady".to_owned(), script)]),
        include_str!("../../infra/statemachine/run.asl.json"),
        move |reachable| {
            Arc::new(FirstStartUnreachable {
                unreachable: StepFunctionsOrchestrator::new(
                    &unreachable_config,
                    "arn:aws:states:us-east-1:123456789012:stateMachine:unreachable",
                ),
                reachable,
                tried: AtomicBool::new(false),
            })
        },
    )
    .await;
    let app = &cloud.app;
    app.put_agent("steady", agent("steady", json!({}))).await;
    let body = json!({"agent": "steady", "input": "go"});

    let (status, headers, refused) = app.post_run(&body, Some("flaky-start")).await;
    assert_eq!(status, 503, "{refused}");
    assert_eq!(refused["error"]["code"], "orchestrator_unavailable");
    assert!(headers.get("retry-after").is_some());
    let id = refused["error"]["details"]["run_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.run(&id).await["status"],
        "queued",
        "recorded for the starter"
    );

    let (status, headers, replay) = app.post_run(&body, Some("flaky-start")).await;
    assert_eq!(status, 202, "{replay}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(replay["id"], id.as_str());
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(cloud.executions_named(&id).await, 1);
    assert_eq!(app.run_rows().await, 1);
    app.assert_slots_released().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scheduled_reconciliation_starts_a_run_whose_execution_never_started() {
    let script = MockScript::turns(vec![MockTurn::text("done")]);
    let cloud = spawn_cloud(HashMap::from([("steady".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent("steady", agent("steady", json!({}))).await;
    let stale = app.insert_queued_run("steady").await;
    let fresh = app.insert_queued_run("steady").await;
    // The api function died after the insert a minute ago; `fresh` may still
    // be in the hands of its request.
    app.db()
        .await
        .execute(
            "UPDATE runs SET created_at = now() - interval '1 minute' WHERE id::text = $1",
            &[&stale],
        )
        .await
        .unwrap();
    let scheduled = scheduled_event();
    let engine = &app.platform.engine;
    assert_eq!(
        handle_finalize_event(engine, cloud.orchestrator.as_ref(), scheduled.clone())
            .await
            .unwrap(),
        json!({})
    );
    let run = app.wait_finished(&stale, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(cloud.executions_named(&stale).await, 1);
    assert_eq!(cloud.executions_named(&fresh).await, 0);
    assert_eq!(app.run(&fresh).await["status"], "queued");

    // Once past the grace, the next pass starts it; a pass finding the stale
    // run's execution already there starts nothing twice.
    tokio::time::sleep(agentrun::starter::STARTER_GRACE).await;
    assert_eq!(
        handle_finalize_event(engine, cloud.orchestrator.as_ref(), scheduled)
            .await
            .unwrap(),
        json!({})
    );
    let run = app.wait_finished(&fresh, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(cloud.executions_named(&stale).await, 1);
    assert_eq!(cloud.executions_named(&fresh).await, 1);
    app.assert_slots_released().await;
}

/// Secrets come from Secrets Manager at cold start (never plain variables in
/// AWS), and the finalize function applies migrations on `{"action":
/// "migrate"}` (as Terraform invokes it at deploy), idempotently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_read_secrets_from_secrets_manager_and_finalize_applies_migrations() {
    use agentrun::cloud::{CloudPlatform, CloudSettings};

    let endpoint = agentrun_e2e::cloud::aws_endpoint();
    let config = sdk_config(Some(&endpoint)).await;
    let secrets = aws_sdk_secretsmanager::Client::new(&config);
    let secret = |value: String| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create_secret()
                .name(format!("agentrun-test-{}", uuid::Uuid::new_v4().simple()))
                .secret_string(value)
                .send()
                .await
                .unwrap()
                .arn
                .unwrap()
        }
    };
    let database_url = agentrun_e2e::fresh_database().await;
    let env = HashMap::from([
        (
            "DATABASE_URL_SECRET_ARN".to_owned(),
            secret(database_url.clone()).await,
        ),
        (
            "AGENTRUN_ADMIN_KEY_SECRET_ARN".to_owned(),
            secret("adm_from_secret\n".to_owned()).await,
        ),
        (
            "OPENAI_BASE_URL".to_owned(),
            "http://127.0.0.1:9/v1".to_owned(),
        ),
        ("AWS_ENDPOINT_URL".to_owned(), endpoint.clone()),
        (
            "STATE_MACHINE_ARN".to_owned(),
            "arn:aws:states:us-east-1:123456789012:stateMachine:none".to_owned(),
        ),
    ]);
    let settings = CloudSettings::load(env.clone()).await.unwrap();
    assert_eq!(settings.database_url.expose(), database_url);
    assert_eq!(
        settings.admin_key.as_ref().map(|k| k.expose()),
        Some("adm_from_secret")
    );
    let shown = format!("{settings:?}");
    assert!(
        !shown.contains(&database_url) && !shown.contains("adm_from_secret"),
        "secrets in the settings' debug output: {shown}"
    );

    let mut missing = env.clone();
    missing.insert(
        "DATABASE_URL_SECRET_ARN".to_owned(),
        "arn:aws:secretsmanager:us-east-1:123456789012:secret:nothing-here".to_owned(),
    );
    let refused = CloudSettings::load(missing)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.contains("DATABASE_URL") && refused.contains("nothing-here"),
        "{refused}"
    );

    let platform = CloudPlatform::connect(settings).await.unwrap();
    let orchestrator = platform.orchestrator().unwrap();
    let migrate = json!({"action": "migrate"});
    let first = handle_finalize_event(&platform.engine, orchestrator.as_ref(), migrate.clone())
        .await
        .unwrap();
    assert_eq!(
        first["applied"].as_u64(),
        Some(agentrun::ledger::MIGRATIONS.len() as u64)
    );
    let again = handle_finalize_event(&platform.engine, orchestrator.as_ref(), migrate)
        .await
        .unwrap();
    assert_eq!(again, json!({"applied": 0}));
    // Anything else fails the invocation, so it is seen rather than dropped.
    assert!(
        handle_finalize_event(&platform.engine, orchestrator.as_ref(), json!({"what": 1}))
            .await
            .is_err()
    );
}

/// A run through the resources Terraform created from `infra/examples/minimal`
/// on the emulator (queues, tables, the state machine from the committed
/// ASL), with the project's step and finalize handlers polling them. `make
/// test` applies the example before and destroys it after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_goes_through_the_resources_terraform_created() {
    use agentrun_e2e::cloud::{spawn_cloud_on, CloudResources};

    let (Ok(outputs), Ok(endpoint)) = (
        std::env::var("AGENTRUN_TEST_INFRA_OUTPUTS"),
        std::env::var("AGENTRUN_TEST_INFRA_ENDPOINT"),
    ) else {
        eprintln!("SKIPPED: no Terraform-made resources (AGENTRUN_TEST_INFRA_OUTPUTS); `make test` applies them");
        return;
    };
    let outputs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(outputs).unwrap()).unwrap();
    let output = |name: &str| {
        outputs[name]["value"]
            .as_str()
            .unwrap_or_else(|| panic!("output {name}: {outputs}"))
            .to_owned()
    };
    let resources = CloudResources {
        step_queue: output("step_queue_url"),
        finalize_queue: output("finalize_queue_url"),
        state_machine_arn: output("state_machine_arn"),
        hot_table: output("hot_table"),
        events_table: output("events_table"),
    };
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::text("done"),
        ],
        ..MockScript::default()
    };
    let cloud = spawn_cloud_on(
        &endpoint,
        resources,
        HashMap::from([("deployed".to_owned(), script)]),
    )
    .await;
    let app = &cloud.app;
    app.put_agent(
        "deployed",
        agent("deployed", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("deployed", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(90)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["steps"], 2);
    let (status, _) = cloud.execution(&id).await;
    assert_eq!(status, "SUCCEEDED");
    let mirrored = aws_sdk_dynamodb::Client::new(&cloud.config)
        .query()
        .table_name(&cloud.events_table)
        .key_condition_expression("run_id = :run")
        .expression_attribute_values(
            ":run",
            aws_sdk_dynamodb::types::AttributeValue::S(id.clone()),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(mirrored.count() as usize, app.all_events(&id).await.len());
    app.assert_slots_released().await;
}

/// On AWS the finalize function delivers webhooks: those its batch's runs
/// queued as they ended, and on its schedule those whose retry came. A
/// failed run's end is announced like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_finalize_function_delivers_webhooks_and_retries_them_on_its_schedule() {
    let receiver = agentrun_e2e::WebhookReceiver::start(1).await;
    let script = MockScript {
        fail_always: Some(400),
        ..MockScript::default()
    };
    let cloud = spawn_cloud(HashMap::from([("hooked".to_owned(), script)])).await;
    let app = &cloud.app;
    app.put_agent(
        "hooked",
        agent(
            "hooked",
            json!({"webhook": {"url": receiver.url, "secret": "cloud-secret"}}),
        ),
    )
    .await;
    let id = app.start_run("hooked", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(60)).await;
    assert_eq!(run["status"], "failed", "{run}");
    // The harness's own finalize poller settled the run but delivers nothing.
    let (_, listed) = app.get(&format!("/v1/runs/{id}/webhooks")).await;
    assert_eq!(listed["data"][0]["status"], "pending", "{listed}");
    assert!(receiver.received().is_empty());

    // The state machine's finalize message for this run, handled again by
    // the function: the run is settled already, and its webhook is tried.
    let finalize: aws_lambda_events::event::sqs::SqsEvent = serde_json::from_value(json!({
        "Records": [{
            "messageId": "m-finalize",
            "receiptHandle": "r1",
            "body": json!({"run_id": id, "error": {"Error": "Fatal.llm_unavailable", "Cause": "400"}}).to_string(),
            "attributes": {},
            "messageAttributes": {},
            "md5OfBody": "0",
            "eventSource": "aws:sqs",
            "eventSourceARN": "arn:aws:sqs:us-east-1:123456789012:agentrun-finalize",
            "awsRegion": "us-east-1"
        }]
    }))
    .unwrap();
    let engine = &app.platform.engine;
    let answer = handle_finalize_event(
        engine,
        cloud.orchestrator.as_ref(),
        serde_json::to_value(finalize).unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(answer["batchItemFailures"], json!([]), "{answer}");
    assert_eq!(receiver.received().len(), 1, "the first attempt is made");
    let (_, listed) = app.get(&format!("/v1/runs/{id}/webhooks")).await;
    assert_eq!(
        listed["data"][0]["attempts"][0]["status_code"], 500,
        "{listed}"
    );

    // Its retry time comes; the schedule's pass delivers it.
    app.db()
        .await
        .execute(
            "UPDATE webhook_deliveries SET next_attempt_at = now() WHERE run_id::text = $1",
            &[&id],
        )
        .await
        .unwrap();
    let scheduled = scheduled_event();
    handle_finalize_event(engine, cloud.orchestrator.as_ref(), scheduled)
        .await
        .unwrap();
    let received = receiver.received();
    assert_eq!(received.len(), 2);
    let body = agentrun_e2e::verify_webhook(&received[1], "cloud-secret");
    assert_eq!(body["type"], "run.failed");
    assert_eq!(body["run"]["stop_reason"], "llm_unavailable");
    let (_, listed) = app.get(&format!("/v1/runs/{id}/webhooks")).await;
    assert_eq!(listed["data"][0]["status"], "delivered", "{listed}");
}
