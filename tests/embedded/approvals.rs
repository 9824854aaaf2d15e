//! Approvals in the embedded mode: a run parks for a person's answer
//! holding no slot; an approval makes the call once (with edited arguments
//! when given), a refusal tells the model, an unanswered request ends the
//! run `approval_timeout`; answers are the team's, once; a restart while
//! waiting loses nothing; an answer racing a cancel leaves one outcome.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use agentrun::mock_llm::{MockLlm, MockScript, MockTurn};
use agentrun_e2e::{
    agent, api_key, free_port, fresh_database, spawn_app_with, wait_healthy, DevServer,
    ToolReceiver,
};
use serde_json::{json, Value};

/// An agent whose `refund` HTTP tool (at `url`) needs approval over $50.
fn refunder(model: &str, url: &str, extra: Value) -> Value {
    let mut spec = agent(
        model,
        json!({"tools": [{
            "name": "refund", "kind": "http", "url": url,
            "requires_approval": {"when": "amount_cents > 5000"}
        }]}),
    );
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

fn refund_script(amount_cents: i64) -> MockScript {
    MockScript::turns(vec![
        MockTurn::tool("refund", json!({"amount_cents": amount_cents})),
        MockTurn::text("done"),
    ])
}

/// A refusal, with its comment, is what the model reads as the call's
/// result; the tool is never called, and the run goes on to its answer.
/// A call under the threshold does not wait at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_call_is_not_made_and_the_model_reads_the_refusal() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let app = spawn_app_with(HashMap::from([
        ("refuser".to_owned(), refund_script(9900)),
        ("small".to_owned(), refund_script(1200)),
    ]))
    .await;
    app.put_agent("refuser", refunder("refuser", &receiver.url, json!({})))
        .await;
    app.put_agent("small", refunder("small", &receiver.url, json!({})))
        .await;

    let small = app.start_run("small", json!("refund me")).await;
    let run = app.wait_finished(&small, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(receiver.counts().len(), 1, "the small refund ran at once");

    let id = app.start_run("refuser", json!("refund me")).await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    assert_eq!(pending.len(), 1);
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, answered) = app
        .answer_approval(
            &id,
            request_id,
            json!({"approve": false, "comment": "over the customer's limit"}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["status"], "rejected");
    assert_eq!(answered["comment"], "over the customer's limit");

    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "done");
    assert_eq!(
        receiver.counts().len(),
        1,
        "the refused refund was not made"
    );
    let steps = app.steps(&id).await;
    let call = &steps[0]["tool_calls"][0];
    assert_eq!(call["is_error"], true, "{call}");
    let result: Value = serde_json::from_str(call["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["code"], "approval_rejected");
    assert_eq!(result["comment"], "over the customer's limit");
    // The second request's prompt held it: the tool message of step 1.
    let told = app
        .count(
            "SELECT count(*) FROM run_messages WHERE run_id = $1 AND step_no = 1
             AND message->>'role' = 'tool' AND message->>'content' LIKE '%over the customer''s limit%'",
            &id,
        )
        .await;
    assert_eq!(told, 1);
    assert_eq!(app.mock.state.requests("refuser"), 2);
    app.assert_slots_released().await;
}

/// Approved with other arguments: the call is made once, with those.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_with_edited_arguments_makes_the_call_with_them() {
    let app = spawn_app_with(HashMap::from([(
        "editor".to_owned(),
        MockScript::turns(vec![
            MockTurn::tool("refund", json!({"amount_cents": 9900})),
            MockTurn::text("done"),
        ]),
    )]))
    .await;
    app.put_agent(
        "editor",
        agent(
            "editor",
            json!({"tools": [{"name": "refund", "kind": "builtin", "builtin": "echo",
                              "requires_approval": true}]}),
        ),
    )
    .await;
    let id = app.start_run("editor", json!("refund me")).await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, answered) = app
        .answer_approval(
            &id,
            request_id,
            json!({"approve": true, "arguments": {"amount_cents": 4000}}),
        )
        .await;
    assert_eq!(status, 200, "{answered}");
    assert_eq!(answered["approved_arguments"]["amount_cents"], 4000);
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let call = &app.steps(&id).await[0]["tool_calls"][0];
    assert_eq!(call["arguments"]["amount_cents"], 4000, "{call}");
    assert!(call["result"].as_str().unwrap().contains("4000"), "{call}");
}

/// Unanswered within `approval_timeout_seconds`: cancelled,
/// `approval_timeout`; a late answer gets 409.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_request_ends_the_run_with_approval_timeout() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let app = spawn_app_with(HashMap::from([("patient".to_owned(), refund_script(9900))])).await;
    app.put_agent(
        "patient",
        refunder(
            "patient",
            &receiver.url,
            json!({"approval_timeout_seconds": 1}),
        ),
    )
    .await;
    let id = app.start_run("patient", json!("refund me")).await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "cancelled", "{run}");
    assert_eq!(run["stop_reason"], "approval_timeout");
    assert!(receiver.counts().is_empty());
    // The turn that asked is billed, though its step never committed.
    assert_eq!(run["usage"]["llm_calls"], 1, "{run}");
    assert!(run["usage"]["input_tokens"].as_i64().unwrap() > 0, "{run}");
    assert_eq!(run["usage"]["by_model"][0]["model"], "patient", "{run}");
    assert_eq!(app.steps(&id).await.len(), 0);
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, body) = app
        .answer_approval(&id, request_id, json!({"approve": true}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "run_already_finished");
    app.assert_slots_released().await;
}

/// Answers are the run's team's, and given once: a second answer is 409,
/// another team's is 404, a request of no such id 404, a bad body 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_answer_is_409_and_another_teams_answer_is_404() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let app = spawn_app_with(HashMap::from([("twice".to_owned(), refund_script(9900))])).await;
    app.put_agent("twice", refunder("twice", &receiver.url, json!({})))
        .await;
    let (_, other_key) = app.create_team("other-approvers", json!({})).await;
    let id = app.start_run("twice", json!("refund me")).await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let path = format!("/v1/runs/{id}/approvals/{request_id}");

    let (status, body) = app
        .call_as(&other_key, "POST", &path, Some(json!({"approve": true})))
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "run_not_found");
    for (answer, code) in [
        (json!({"approve": "yes"}), "invalid_body"),
        (json!({"comment": "no verdict"}), "invalid_body"),
        (
            json!({"approve": false, "arguments": {"amount_cents": 1}}),
            "invalid_body",
        ),
        (json!({"approve": true, "arguments": [1]}), "invalid_body"),
    ] {
        let (status, body) = app.answer_approval(&id, request_id, answer.clone()).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some(code)),
            "{answer}: {body}"
        );
    }
    let (status, body) = app
        .answer_approval(
            &id,
            &uuid::Uuid::new_v4().to_string(),
            json!({"approve": true}),
        )
        .await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"]["code"], "approval_not_found");
    assert_eq!(app.run(&id).await["status"], "waiting");

    let (status, body) = app
        .answer_approval(&id, request_id, json!({"approve": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .answer_approval(&id, request_id, json!({"approve": false}))
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "approval_already_answered");
    assert_eq!(body["error"]["details"]["approval"]["status"], "approved");

    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(receiver.counts().values().sum::<u32>(), 1);
}

/// While a run waits its slot is free for another; answered while the
/// team's one slot is taken, it waits in line and goes on when the slot
/// is given back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answered_run_waits_in_line_for_a_slot() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let app = spawn_app_with(HashMap::from([("queued".to_owned(), refund_script(9900))])).await;
    app.put_agent("queued", refunder("queued", &receiver.url, json!({})))
        .await;
    app.put_napper("napper", "napper-model", 2500, "rested")
        .await;
    app.patch_team(json!({"limits": {"max_concurrent_runs": 1}}))
        .await;

    let waiting = app.start_run("queued", json!("refund me")).await;
    let pending = app
        .wait_for_approval(&waiting, Duration::from_secs(20))
        .await;
    assert_eq!(app.slots_held().await, 0);
    // The slot the waiting run gave back lets another run start.
    let napper = app.start_run("napper", json!("nap")).await;
    app.wait_for_step(&napper, 1).await;
    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, body) = app
        .answer_approval(&waiting, request_id, json!({"approve": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        app.run(&waiting).await["status"],
        "waiting",
        "answered, in line for the slot"
    );
    assert!(receiver.counts().is_empty());

    let napped = app.wait_finished(&napper, Duration::from_secs(20)).await;
    assert_eq!(napped["status"], "succeeded", "{napped}");
    let run = app.wait_finished(&waiting, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(receiver.counts().values().sum::<u32>(), 1);
    let napped_at: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(napped["finished_at"].clone()).unwrap();
    let waiting_id: uuid::Uuid = waiting.parse().unwrap();
    let resumed_at: chrono::DateTime<chrono::Utc> = app
        .db()
        .await
        .query_one(
            "SELECT created_at FROM run_events WHERE run_id = $1 AND type = 'run.resumed'",
            &[&waiting_id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(
        resumed_at >= napped_at,
        "resumed {resumed_at} before the slot was free at {napped_at}"
    );
    app.assert_slots_released().await;
}

/// An answer and a cancel at once: the cancel ends the run either way; the
/// call is made at most once, and not at all when the answer came second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_racing_a_cancel_leaves_one_outcome() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let app = spawn_app_with(HashMap::from([("racer".to_owned(), refund_script(9900))])).await;
    app.put_agent("racer", refunder("racer", &receiver.url, json!({})))
        .await;
    for _ in 0..3 {
        let id = app.start_run("racer", json!("refund me")).await;
        let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
        let request_id = pending[0]["request_id"].as_str().unwrap().to_owned();
        let before: u32 = receiver.counts().values().sum();
        let cancel_path = format!("/v1/runs/{id}/cancel");
        let (answered, cancelled) = tokio::join!(
            app.answer_approval(&id, &request_id, json!({"approve": true})),
            app.call_as(&app.key, "POST", &cancel_path, None),
        );
        assert_eq!(cancelled.0, 202, "{:?}", cancelled.1);
        let run = app.wait_finished(&id, Duration::from_secs(20)).await;
        assert_eq!(run["status"], "cancelled", "{run}");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let made = receiver.counts().values().sum::<u32>() - before;
        match answered.0 {
            200 => assert!(made <= 1, "made {made} times"),
            409 => {
                assert_eq!(answered.1["error"]["code"], "run_already_finished");
                assert_eq!(made, 0);
            }
            other => panic!("the answer got {other}: {}", answered.1),
        }
        assert_eq!(
            app.steps(&id).await.len(),
            0,
            "no step committed after the cancel"
        );
    }
    app.assert_slots_released().await;
}

/// SIGKILL `agentrun dev` while a run waits; after the restart the run
/// still waits, and the approval makes it go on, the call made once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_waiting_across_a_restart_goes_on_once_approved() {
    let receiver = ToolReceiver::start(Duration::ZERO).await;
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        HashMap::from([("restarted".to_owned(), refund_script(9900))]),
    )
    .await
    .unwrap();
    let dir: PathBuf = std::env::temp_dir().join(format!(
        "agentrun-approval-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let agents = dir.join("agents");
    let state = dir.join("state");
    std::fs::create_dir_all(&agents).unwrap();
    let spec = refunder("restarted", &receiver.url, json!({}));
    std::fs::write(agents.join("restarted.json"), spec.to_string()).unwrap();
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
            json!({"agent": "restarted", "input": "refund me"}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    let get = |path: String| {
        let (http, key) = (http.clone(), key.clone());
        async move {
            http.get(path)
                .bearer_auth(&key)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let until = Instant::now() + Duration::from_secs(20);
    while get(format!("{}/v1/runs/{id}", server.url)).await["status"] != "waiting" {
        assert!(Instant::now() < until, "the run never waited");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.kill();

    let mut server = DevServer::start(&database_url, &mock.base_url(), &agents, &state, port, &[]);
    wait_healthy(&http, &server.url).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let run = get(format!("{}/v1/runs/{id}", server.url)).await;
    assert_eq!(run["status"], "waiting", "{run}");
    assert!(receiver.counts().is_empty());
    let approvals = get(format!("{}/v1/runs/{id}/approvals", server.url)).await;
    let request_id = approvals["data"][0]["request_id"].as_str().unwrap();
    let answered = http
        .post(format!(
            "{}/v1/runs/{id}/approvals/{request_id}",
            server.url
        ))
        .bearer_auth(&key)
        .json(&json!({"approve": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    let run = server
        .wait_finished(&http, &key, &id, Duration::from_secs(30))
        .await;
    server.kill();
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "done");
    assert_eq!(receiver.counts().values().sum::<u32>(), 1);
    assert_eq!(mock.state.requests("restarted"), 2, "no LLM call repeated");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run that comes to wait is announced to its webhook, signed, with the
/// pending requests; its end is announced after as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_run_is_announced_to_its_webhook_with_its_requests() {
    let tool = ToolReceiver::start(Duration::ZERO).await;
    let hook = agentrun_e2e::WebhookReceiver::start(0).await;
    let app = spawn_app_with(HashMap::from([(
        "announced".to_owned(),
        refund_script(9900),
    )]))
    .await;
    // The background work, the webhook deliverer among it.
    app.platform.resume().await.unwrap();
    app.put_agent(
        "announced",
        refunder(
            "announced",
            &tool.url,
            json!({"webhook": {"url": hook.url, "secret": "hook-secret"}}),
        ),
    )
    .await;
    let id = app.start_run("announced", json!("refund me")).await;
    let pending = app.wait_for_approval(&id, Duration::from_secs(20)).await;
    let received = hook.wait_for(1, Duration::from_secs(10)).await;
    let body = agentrun_e2e::verify_webhook(&received[0], "hook-secret");
    assert_eq!(body["type"], "approval.requested", "{body}");
    assert_eq!(body["run"]["status"], "waiting");
    assert_eq!(body["approvals"][0]["request_id"], pending[0]["request_id"]);
    assert_eq!(body["approvals"][0]["arguments"]["amount_cents"], 9900);
    assert_eq!(
        received[0].headers["x-agentrun-event"].to_str().unwrap(),
        "approval.requested"
    );

    let request_id = pending[0]["request_id"].as_str().unwrap();
    let (status, body) = app
        .answer_approval(&id, request_id, json!({"approve": true}))
        .await;
    assert_eq!(status, 200, "{body}");
    app.wait_finished(&id, Duration::from_secs(20)).await;
    let received = hook.wait_for(2, Duration::from_secs(10)).await;
    let ended = agentrun_e2e::verify_webhook(&received[1], "hook-secret");
    assert_eq!(ended["type"], "run.succeeded", "{ended}");
    let (_, listed) = app.get(&format!("/v1/runs/{id}/webhooks")).await;
    let events: Vec<&str> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["event"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["approval.requested", "run.succeeded"], "{listed}");
}
