use agentrun_e2e::spawn_app;
use serde_json::{json, Value};

use agentrun_e2e::agent;

async fn post(app: &agentrun_e2e::TestApp, body: Value) -> (u16, Value) {
    let (status, _, body) = app.post_run(&body, None).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_agent_or_version_is_a_400_and_creates_no_run() {
    let app = spawn_app().await;
    app.put_agent("known", agent("m", json!({}))).await;

    let (status, body) = post(&app, json!({"agent": "unknown", "input": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unknown_agent");
    let (status, body) = post(&app, json!({"agent": "known", "version": 7, "input": "x"})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "unknown_agent_version");
    let (status, body) = post(&app, json!({"agent": "known", "input": null})).await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = post(&app, json!({"agent": "known", "input": "x", "extra": 1})).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "invalid_body");
    assert_eq!(app.run_rows().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_versions_are_immutable_and_unchanged_puts_make_no_version() {
    let app = spawn_app().await;
    let first = app.put_agent("writer", agent("m", json!({}))).await;
    assert_eq!(first["version"], 1);
    let same = app.put_agent("writer", agent("m", json!({}))).await;
    assert_eq!(same["version"], 1);
    let second = app.put_agent("writer", agent("m2", json!({}))).await;
    assert_eq!(second["version"], 2);
    let (status, v1) = app.get("/v1/agents/writer/versions/1").await;
    assert_eq!(status, 200);
    assert_eq!(v1["spec"]["model"], "m");
    let (status, _) = app.get("/v1/agents/writer/versions/3").await;
    assert_eq!(status, 404);
    let (_, list) = app.get("/v1/agents").await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert_eq!(list["data"][0]["version"], 2);

    // A bad spec is refused with every problem listed.
    let response = app
        .http
        .put(format!("{}/v1/agents/broken", app.url))
        .bearer_auth(&app.key)
        .json(&json!({"model": "", "instructions": "x", "output_schema": {"type": 5}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_agent_spec");
    assert_eq!(
        body["error"]["details"]["problems"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_without_a_valid_key_are_401_and_other_teams_runs_are_404() {
    let app = spawn_app().await;
    app.put_agent("mine", agent("m", json!({}))).await;
    let id = app.start_run("mine", json!("x")).await;

    let anonymous = app
        .http
        .get(format!("{}/v1/runs/{id}", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unauthorized");
    let forged = app
        .http
        .get(format!("{}/v1/runs/{id}", app.url))
        .bearer_auth("ar_abcdefgh_notarealkey")
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);

    let ledger = &app.platform.engine.ledger;
    let other = ledger.ensure_team("other-team").await.unwrap();
    let other_key = ledger.issue_api_key(other, None).await.unwrap().secret;
    for path in [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/steps"),
        format!("/v1/runs/{id}/events"),
    ] {
        let response = app
            .http
            .get(format!("{}{path}", app.url))
            .bearer_auth(&other_key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
    }
    let (status, body) = app.get("/v1/runs/not-a-uuid").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "run_not_found");

    let (status, list) = app.get("/v1/runs?limit=10").await;
    assert_eq!(status, 200);
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["next_cursor"].is_null());
    let (status, health) = app.get("/healthz").await;
    assert_eq!((status, health["status"].as_str()), (200, Some("ok")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_describes_the_routes() {
    let app = spawn_app().await;
    let response = app
        .http
        .get(format!("{}/openapi.json", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    for path in [
        "/v1/runs",
        "/v1/runs/{id}",
        "/v1/runs/{id}/steps",
        "/v1/runs/{id}/events",
        "/v1/runs/{id}/cancel",
        "/v1/agents",
        "/v1/agents/{name}",
        "/v1/agents/{name}/versions/{version}",
        "/healthz",
        "/v1/usage",
        "/v1/usage/runs",
        "/v1/admin/teams",
        "/v1/admin/teams/{id}",
        "/v1/admin/teams/{id}/keys",
        "/v1/admin/keys/{key_id}",
        "/v1/admin/prices/{model}",
        "/v1/admin/plans/{name}",
        "/v1/admin/reconcile",
    ] {
        assert!(
            doc["paths"][path].is_object(),
            "{path} missing from openapi.json"
        );
    }
    let (status, body) = app.get("/v1/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "route_not_found");
}

/// With the hot store unreachable, new runs are refused with a 503 the
/// client can retry, and nothing is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_hot_store_refuses_new_runs_with_503_and_creates_nothing() {
    use std::sync::Arc;

    use agentrun::adapters::in_process::BroadcastFeed;
    use agentrun::adapters::openai::OpenAiClient;
    use agentrun::adapters::postgres::PgHotStore;
    use agentrun::engine::{Engine, ToolRunner};

    let app = spawn_app().await;
    app.put_agent("known", agent("m", json!({}))).await;
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/nothing",
        agentrun_e2e::free_port()
    );
    let engine = Engine {
        ledger: app.platform.engine.ledger.clone(),
        hot: Arc::new(PgHotStore::connect(&dead, 2).unwrap()),
        llm: Arc::new(OpenAiClient::new(agentrun_e2e::fast_llm(app.mock.base_url())).unwrap()),
        feed: Arc::new(BroadcastFeed::new()),
        tools: ToolRunner::new(agentrun::outbound::OutboundAllow::none()),
        schemas: Default::default(),
        circuits: Default::default(),
    };
    let url = agentrun_e2e::serve_engine(engine).await;

    for key in [Some("k-1"), None] {
        let mut request = app
            .http
            .post(format!("{url}/v1/runs"))
            .bearer_auth(&app.key)
            .json(&json!({"agent": "known", "input": "x"}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 503);
        assert!(response.headers().contains_key("retry-after"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "hot_store_unavailable", "{body}");
    }
    assert_eq!(app.run_rows().await, 0);
    // The same requests through the healthy server are accepted.
    let (status, _, _) = app
        .post_run(&json!({"agent": "known", "input": "x"}), Some("k-1"))
        .await;
    assert_eq!(status, 202);
}
