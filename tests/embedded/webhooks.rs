//! Webhooks: a run's end POSTed to its receiver, signed, retried with
//! backoff from the outbox in the ledger, across a restart of `agentrun dev`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentrun::mock_llm::{MockLlm, MockScript, MockTurn};
use agentrun_e2e::{
    agent, api_key, free_port, fresh_database, spawn_app_tuned, verify_webhook as verify,
    wait_healthy, DevServer, WebhookReceiver,
};
use serde_json::{json, Value};

const SECRET: &str = "whsec-test-secret";

async fn deliveries(http: &reqwest::Client, base: &str, key: &str, id: &str) -> Value {
    let response = http
        .get(format!("{base}/v1/runs/{id}/webhooks"))
        .bearer_auth(key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// A receiver that fails twice gets the third delivery; `agentrun dev` is
/// SIGKILLed and started again between the first and second attempts, and
/// nothing is lost or sent again after it was delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_fails_twice_gets_the_third_delivery_across_a_restart() {
    let receiver = WebhookReceiver::start(2).await;
    let mock = MockLlm::start(
        "127.0.0.1:0".parse().unwrap(),
        HashMap::from([(
            "hooked".to_owned(),
            MockScript::turns(vec![MockTurn::text("done")]),
        )]),
    )
    .await
    .unwrap();
    let dir = std::env::temp_dir().join(format!("agentrun-hook-{}", uuid::Uuid::new_v4().simple()));
    let (agents, state) = (dir.join("agents"), dir.join("state"));
    std::fs::create_dir_all(&agents).unwrap();
    let spec = agent(
        "hooked",
        json!({"webhook": {"url": receiver.url, "secret": SECRET}}),
    );
    std::fs::write(agents.join("hooked.json"), spec.to_string()).unwrap();
    let database_url = fresh_database().await;
    let port = free_port();
    let http = reqwest::Client::new();
    let retry = [("AGENTRUN_WEBHOOK_FIRST_RETRY_MS", "2000")];

    let start = || {
        DevServer::start(
            &database_url,
            &mock.base_url(),
            &agents,
            &state,
            port,
            &retry,
        )
    };
    let mut server = start();
    wait_healthy(&http, &server.url).await;
    let key = api_key(&state);
    let created = server
        .post_run(&http, &key, json!({"agent": "hooked", "input": "hi"}))
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(
        created["webhook"]["url"],
        receiver.url.as_str(),
        "{created}"
    );
    assert!(
        created.to_string().find(SECRET).is_none(),
        "the secret is shown"
    );

    // The first attempt fails and is recorded; then the server dies.
    receiver.wait_for(1, Duration::from_secs(20)).await;
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let listed = deliveries(&http, &server.url, &key, &id).await;
        if listed["data"][0]["attempts"][0]["status_code"] == 500 {
            break;
        }
        assert!(Instant::now() < until, "attempt 1 not recorded: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill();

    let mut server = start();
    wait_healthy(&http, &server.url).await;
    let received = receiver.wait_for(3, Duration::from_secs(30)).await;
    let until = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let listed = deliveries(&http, &server.url, &key, &id).await;
        if listed["data"][0]["status"] == "delivered" {
            break listed;
        }
        assert!(Instant::now() < until, "not delivered: {listed}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Delivered means done: nothing more arrives.
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.kill();
    assert_eq!(receiver.received().len(), 3);

    let delivery_id = listed["data"][0]["id"].as_str().unwrap().to_owned();
    for (n, request) in received.iter().enumerate() {
        let body = verify(request, SECRET);
        assert_eq!(body["id"], delivery_id.as_str());
        assert_eq!(body["type"], "run.succeeded");
        assert_eq!(body["run"]["id"], id.as_str());
        assert_eq!(body["run"]["status"], "succeeded");
        assert_eq!(body["run"]["output"], "done");
        assert!(request.body.find(SECRET).is_none(), "the secret is sent");
        let header = |name: &str| request.headers[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-agentrun-delivery"), delivery_id);
        assert_eq!(header("x-agentrun-event"), "run.succeeded");
        assert_eq!(header("x-agentrun-attempt"), (n + 1).to_string());
    }
    let attempts = listed["data"][0]["attempts"].as_array().unwrap();
    let codes: Vec<i64> = attempts
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap())
        .collect();
    assert_eq!(codes, vec![500, 500, 204], "{listed}");
    assert!(attempts.iter().all(|a| a["finished_at"].is_string()));
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    assert!(attempts[2]["error"].is_null());
    // Each retry waited its backoff (2 s, then 4 s) after the attempt before.
    let at = |a: &Value, field: &str| {
        a[field]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<chrono::Utc>>()
            .unwrap()
    };
    let gap = |i: usize| {
        (at(&attempts[i], "started_at") - at(&attempts[i - 1], "finished_at")).num_milliseconds()
    };
    assert!(
        gap(1) >= 1_900,
        "second attempt {} ms after the first",
        gap(1)
    );
    assert!(
        gap(2) >= 3_900,
        "third attempt {} ms after the second",
        gap(2)
    );
    assert_eq!(listed["data"][0]["event"], "run.succeeded");
    assert!(listed["data"][0]["next_attempt_at"].is_null());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A run may name its own webhook (which wins over its agent's); the
/// secret is never shown; bad webhooks are refused up front; an agent's
/// webhook shows only that it has a secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_names_its_own_webhook_and_bad_ones_are_refused() {
    let own = WebhookReceiver::start(0).await;
    let agents = WebhookReceiver::start(0).await;
    let app = spawn_app_tuned(
        fresh_database().await,
        agentrun_e2e::fast_policy(),
        HashMap::new(),
        |settings| settings.webhooks.first_retry = Duration::from_millis(200),
    )
    .await;
    app.platform.resume().await.unwrap();
    app.script("hook", MockScript::turns(vec![MockTurn::text("fine")]));
    let put = app
        .put_agent(
            "hooked",
            agent(
                "hook",
                json!({"webhook": {"url": agents.url, "secret": "agent-secret"}}),
            ),
        )
        .await;
    assert_eq!(put["spec"]["webhook"]["url"], agents.url.as_str(), "{put}");
    assert_eq!(put["spec"]["webhook"]["secret_set"], true, "{put}");
    assert!(put["spec"]["webhook"].get("secret").is_none(), "{put}");

    let (status, _, run) = app
        .post_run(
            &json!({"agent": "hooked", "input": "x",
                   "webhook": {"url": own.url, "secret": "run-secret"}}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{run}");
    assert_eq!(run["webhook"], json!({"url": own.url}));
    let id = run["id"].as_str().unwrap();
    app.wait_finished(id, Duration::from_secs(20)).await;
    let received = own.wait_for(1, Duration::from_secs(10)).await;
    let body = verify(&received[0], "run-secret");
    assert_eq!(body["run"]["output"], "fine");
    assert!(
        agents.received().is_empty(),
        "the agent's webhook was called too"
    );
    let (status, shown) = app.get(&format!("/v1/runs/{id}")).await;
    assert_eq!(status, 200);
    assert!(!shown.to_string().contains("run-secret"), "{shown}");

    // The agent's webhook serves runs that name none.
    let (_, _, run) = app
        .post_run(&json!({"agent": "hooked", "input": "y"}), None)
        .await;
    let id = run["id"].as_str().unwrap();
    app.wait_finished(id, Duration::from_secs(20)).await;
    let received = agents.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(verify(&received[0], "agent-secret")["run"]["id"], id);

    for (webhook, wanted) in [
        (
            json!({"url": "ftp://example.com/x", "secret": "s"}),
            "http(s) URL",
        ),
        (json!({"url": "https://example.com/x"}), "secret"),
        (
            json!({"url": "https://example.com/x", "secret": " "}),
            "must not be empty",
        ),
        (
            json!({"url": "http://169.254.169.254/latest", "secret": "s"}),
            "link-local",
        ),
    ] {
        let (status, _, body) = app
            .post_run(
                &json!({"agent": "hooked", "input": "z", "webhook": webhook}),
                None,
            )
            .await;
        assert_eq!(status, 400, "{webhook}: {body}");
        assert_eq!(body["error"]["code"], "invalid_webhook", "{body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(wanted),
            "{webhook}: {body}"
        );
    }
    let (status, body) = app
        .call_as(
            &app.key,
            "PUT",
            "/v1/agents/hooked",
            Some(agent("hook", json!({"webhook": {"url": agents.url}}))),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_agent_spec");
}

/// A receiver at an address the guard refuses is never called: each
/// attempt is recorded as blocked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_to_a_refused_address_is_blocked_and_recorded() {
    let receiver = WebhookReceiver::start(0).await;
    // Only 127.0.0.2 is allowed: the receiver on 127.0.0.1 is not.
    let app = spawn_app_tuned(
        fresh_database().await,
        agentrun_e2e::fast_policy(),
        HashMap::new(),
        |settings| {
            settings.webhooks.first_retry = Duration::from_millis(100);
            settings.outbound_allow =
                agentrun::outbound::OutboundAllow::parse("127.0.0.2").unwrap();
        },
    )
    .await;
    app.platform.resume().await.unwrap();
    app.script("hook", MockScript::turns(vec![MockTurn::text("fine")]));
    let hostname_url = receiver.url.replace("127.0.0.1", "localhost");
    app.put_agent(
        "hooked",
        agent(
            "hook",
            json!({"webhook": {"url": hostname_url, "secret": "s"}}),
        ),
    )
    .await;
    let id = app.start_run("hooked", json!("x")).await;
    app.wait_finished(&id, Duration::from_secs(20)).await;
    let until = Instant::now() + Duration::from_secs(10);
    let listed = loop {
        let (_, listed) = app.get(&format!("/v1/runs/{id}/webhooks")).await;
        let attempts = listed["data"][0]["attempts"].as_array().map_or(0, Vec::len);
        if attempts >= 2 {
            break listed;
        }
        assert!(Instant::now() < until, "{listed}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let first = &listed["data"][0]["attempts"][0];
    assert!(first["status_code"].is_null(), "{listed}");
    assert!(
        first["error"]
            .as_str()
            .unwrap()
            .contains("outbound_blocked"),
        "{listed}"
    );
    assert_eq!(listed["data"][0]["status"], "pending");
    assert!(receiver.received().is_empty());
}
