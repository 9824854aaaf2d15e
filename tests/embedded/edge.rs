//! Hostile input at the edge: no 5xx and no database text from input,
//! write-only tool secrets, bounded event streams.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrun::api::{AppState, StreamGate, StreamLimits};
use agentrun_e2e::{agent, serve, spawn_app, TestApp};
use serde_json::{json, Value};

/// (status, parsed body, content type) of a request with the team key.
async fn call(app: &TestApp, method: &str, path: &str, body: Option<&str>) -> (u16, Value, String) {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let mut request = app
        .http
        .request(method, format!("{}{path}", app.url))
        .bearer_auth(&app.key);
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::Null),
        content_type,
    )
}

fn assert_envelope(status: u16, body: &Value, content_type: &str, expected: u16, case: &str) {
    assert_eq!(status, expected, "{case}: {body}");
    assert!(
        content_type.starts_with("application/json"),
        "{case}: {content_type}"
    );
    assert!(body["error"]["code"].is_string(), "{case}: {body}");
    let text = body.to_string().to_lowercase();
    for leak in [
        "postgres",
        "sqlstate",
        "invalid byte sequence",
        "driver",
        "db error",
    ] {
        assert!(!text.contains(leak), "{case} leaks {leak:?}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_and_out_of_range_dates_are_400s_in_the_json_envelope() {
    let app = spawn_app().await;
    app.put_agent("plain", agent("m", json!({}))).await;
    let id = app.start_run("plain", json!("hi")).await;
    let cases: &[(&str, &str, Option<&str>)] = &[
        (
            "POST",
            "/v1/runs",
            Some(r#"{"agent":"plain","input":"a\u0000b"}"#),
        ),
        (
            "POST",
            "/v1/runs",
            Some(r#"{"agent":"plain","input":{"deep":["x\u0000"]}}"#),
        ),
        (
            "POST",
            "/v1/runs",
            Some(r#"{"agent":"plain","input":"x","metadata":{"k\u0000":"v"}}"#),
        ),
        (
            "PUT",
            "/v1/agents/nul",
            Some(r#"{"model":"m","instructions":"be \u0000 nice"}"#),
        ),
        ("GET", "/v1/usage?from=0000-01-01", None),
        ("GET", "/v1/usage?to=99999-01-01", None),
        ("GET", "/v1/usage?from=2026-02-30", None),
        ("GET", "/v1/usage/runs?month=0000-01", None),
        ("GET", "/v1/usage/runs?month=2026-13", None),
        ("GET", "/v1/usage/runs?month=10000-01", None),
    ];
    for (method, path, body) in cases {
        let (status, response, content_type) = call(&app, method, path, *body).await;
        assert_envelope(
            status,
            &response,
            &content_type,
            400,
            &format!("{method} {path} {body:?}"),
        );
    }
    let cancel = format!("/v1/runs/{id}/cancel");
    let (status, response, content_type) =
        call(&app, "POST", &cancel, Some(r#"{"reason":"stop\u0000"}"#)).await;
    assert_envelope(
        status,
        &response,
        &content_type,
        400,
        "cancel reason with NUL",
    );
    assert_eq!(app.run_rows().await, 1, "nothing was created");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_says_degraded_without_driver_text() {
    use agentrun::adapters::in_process::BroadcastFeed;
    use agentrun::adapters::openai::OpenAiClient;
    use agentrun::engine::{Engine, ToolRunner};
    use agentrun::ledger::Ledger;

    let app = spawn_app().await;
    let dead = format!(
        "postgres://postgres@127.0.0.1:{}/nothing",
        agentrun_e2e::free_port()
    );
    let engine = Engine {
        ledger: Ledger::connect(&dead, 2).unwrap(),
        hot: app.platform.engine.hot.clone(),
        llm: Arc::new(OpenAiClient::new(agentrun_e2e::fast_llm(app.mock.base_url())).unwrap()),
        feed: Arc::new(BroadcastFeed::new()),
        tools: ToolRunner::new(agentrun::outbound::OutboundAllow::none()),
    };
    let url = agentrun_e2e::serve_engine(engine).await;

    let response = app.http.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"status": "degraded"})
    );
    let (status, body) = app.get("/healthz").await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_secrets_are_write_only_and_can_be_kept_across_versions() {
    let app = spawn_app().await;
    let tool = |secret: Value| {
        let mut tool = json!({"name": "hook", "kind": "http", "url": "https://example.com/hook"});
        if let Value::Object(extra) = secret {
            tool.as_object_mut().unwrap().extend(extra);
        }
        tool
    };
    let first = app
        .put_agent(
            "signed",
            agent(
                "m",
                json!({"tools": [tool(json!({"secret": "very-secret-value"}))]}),
            ),
        )
        .await;
    let second = app
        .put_agent(
            "signed",
            agent(
                "m",
                json!({"instructions": "v2", "tools": [tool(json!({"keep_secret": true}))]}),
            ),
        )
        .await;
    assert_eq!(second["version"], 2);
    let (_, list) = app.get("/v1/agents").await;
    let (_, shown) = app.get("/v1/agents/signed/versions/2").await;
    for body in [&first, &second, &list, &shown] {
        assert!(!body.to_string().contains("very-secret-value"), "{body}");
    }
    assert_eq!(shown["spec"]["tools"][0]["secret_set"], true, "{shown}");
    let stored = app
        .platform
        .engine
        .ledger
        .get_agent(app.team, "signed", Some(2))
        .await
        .unwrap()
        .unwrap();
    let stored = serde_json::to_value(&stored.spec).unwrap();
    assert_eq!(stored["tools"][0]["secret"], "very-secret-value");

    for (spec, case) in [
        (tool(json!({"secret": ""})), "empty secret"),
        (tool(json!({"secret": "x", "keep_secret": true})), "both"),
    ] {
        let (status, body, _) = call(
            &app,
            "PUT",
            "/v1/agents/signed",
            Some(&agent("m", json!({"tools": [spec]})).to_string()),
        )
        .await;
        assert_eq!(status, 400, "{case}: {body}");
    }
    let (status, body, _) = call(
        &app,
        "PUT",
        "/v1/agents/fresh",
        Some(&agent("m", json!({"tools": [tool(json!({"keep_secret": true}))]})).to_string()),
    )
    .await;
    assert_eq!(status, 400, "nothing to keep: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_runs_stream_read_from_its_end_closes_at_once() {
    let app = spawn_app().await;
    app.put_agent("plain", agent("m", json!({}))).await;
    let id = app.start_run("plain", json!("hi")).await;
    app.wait_finished(&id, Duration::from_secs(20)).await;
    let last: i64 = app
        .all_events(&id)
        .await
        .last()
        .unwrap()
        .id
        .as_deref()
        .unwrap()
        .parse()
        .unwrap();
    for (header, query) in [(Some(last), ""), (None, "?after=999")] {
        let started = Instant::now();
        let mut request = app
            .http
            .get(format!("{}/v1/runs/{id}/events{query}", app.url))
            .bearer_auth(&app.key);
        if let Some(seq) = header {
            request = request.header("last-event-id", seq.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let body = tokio::time::timeout(Duration::from_secs(1), response.text())
            .await
            .expect("the stream closes within 1 s")
            .unwrap();
        assert!(!body.contains("event:"), "{body}");
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped_per_team_and_a_closed_one_frees_its_place() {
    let app = spawn_app().await;
    app.put_agent("slow", agent("slow", json!({}))).await;
    app.script(
        "slow",
        agentrun::mock_llm::MockScript {
            latency_ms: agentrun::mock_llm::Latency::Fixed(5_000),
            ..agentrun::mock_llm::MockScript::turns(vec![agentrun::mock_llm::MockTurn::text(
                "late",
            )])
        },
    );
    let id = app.start_run("slow", json!("hi")).await;
    let mut state = AppState::new(
        app.platform.engine.clone(),
        app.platform.orchestrator.clone(),
        None,
    );
    state.streams = StreamGate::new(StreamLimits {
        per_team: 2,
        total: 10,
        max_lifetime: Duration::from_millis(1500),
    });
    let url = format!("http://{}", serve(agentrun::api::router(state)).await.0);
    let open = || {
        app.http
            .get(format!("{url}/v1/runs/{id}/events"))
            .bearer_auth(&app.key)
            .send()
    };
    let first = open().await.unwrap();
    let second = open().await.unwrap();
    assert_eq!(
        (first.status().as_u16(), second.status().as_u16()),
        (200, 200)
    );
    let refused = open().await.unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().get("retry-after").is_some());
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "too_many_streams");
    drop(first);
    // The server notices the closed connection at its next write (keep-alive
    // or event); the stream's maximum life ends it in any case.
    let started = Instant::now();
    let text = tokio::time::timeout(Duration::from_secs(5), second.text())
        .await
        .expect("the stream ends at its maximum life")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(3), "{text}");
    let mut reopened = false;
    for _ in 0..40 {
        if open().await.unwrap().status() == 200 {
            reopened = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reopened, "places were given back");
}
