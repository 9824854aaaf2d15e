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
        llm: app.platform.engine.llm.clone(),
        feed: Arc::new(BroadcastFeed::new()),
        tools: ToolRunner::new(agentrun::outbound::OutboundAllow::none()),
        schemas: Default::default(),
        circuits: Default::default(),
        metrics: Default::default(),
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
        max_idle: None,
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
    assert!(
        text.contains("\nretry: 1000\n") || text.starts_with("retry: 1000\n"),
        "a stream cut before its run's end says when to come back: {text}"
    );
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

/// A spec with `change` merged into a valid base.
fn spec_with(change: Value) -> String {
    agent("m", change).to_string()
}

fn nested_schema(depth: usize) -> Value {
    let mut schema = json!({"type": "string"});
    for _ in 0..depth {
        schema = json!({"type": "object", "properties": {"x": schema}});
    }
    schema
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_field_limit_answers_its_own_code_in_the_envelope() {
    let app = spawn_app().await;
    app.put_agent("bounded", agent("m", json!({}))).await;
    let run = |input: Value, metadata: Value| {
        json!({"agent": "bounded", "input": input, "metadata": metadata}).to_string()
    };
    let many_keys: serde_json::Map<String, Value> =
        (0..65).map(|i| (format!("k{i}"), json!(i))).collect();
    let tools: Vec<Value> = (0..65)
        .map(|i| json!({"name": format!("t{i}"), "kind": "builtin", "builtin": "echo"}))
        .collect();
    let handoffs: Vec<String> = (0..33).map(|i| format!("agent-{i}")).collect();
    let wide_schema = json!({"allOf": vec![json!({"type": "object"}); 5_000]});
    let cases: Vec<(&str, &str, String, u16, &str, &str)> = vec![
        (
            "POST",
            "/v1/runs",
            format!("{{\"pad\": \"{}\"}}", "x".repeat(1_100_000)),
            413,
            "body_too_large",
            "",
        ),
        (
            "POST",
            "/v1/runs",
            run(json!("x".repeat(300_000)), json!({})),
            413,
            "input_too_large",
            "input",
        ),
        (
            "POST",
            "/v1/runs",
            run(json!("x"), json!({"k": "v".repeat(20_000)})),
            413,
            "metadata_too_large",
            "metadata",
        ),
        (
            "POST",
            "/v1/runs",
            run(json!("x"), Value::Object(many_keys)),
            400,
            "too_many_metadata_keys",
            "metadata",
        ),
        (
            "POST",
            "/v1/runs",
            run(json!("x"), json!({"k".repeat(129): 1})),
            400,
            "metadata_key_too_long",
            "",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"instructions": "i".repeat(100_001)})),
            400,
            "instructions_too_long",
            "instructions",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"model": "m".repeat(201)})),
            400,
            "value_too_long",
            "model",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"tools": tools})),
            400,
            "too_many_tools",
            "tools",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"handoffs": handoffs})),
            400,
            "too_many_handoffs",
            "handoffs",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"output_schema": wide_schema})),
            400,
            "schema_too_large",
            "output_schema",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"output_schema": nested_schema(20)})),
            400,
            "schema_too_deep",
            "output_schema",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(
                json!({"tools": [{"name": "e", "kind": "builtin", "builtin": "echo", "parameters": nested_schema(20)}]}),
            ),
            400,
            "schema_too_deep",
            "tools[0].parameters",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"max_repairs": 6})),
            400,
            "value_out_of_range",
            "max_repairs",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"max_output_tokens": u32::MAX})),
            400,
            "value_out_of_range",
            "max_output_tokens",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"temperature": 3.5})),
            400,
            "value_out_of_range",
            "temperature",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(json!({"limits": {"max_steps": 5000}})),
            400,
            "value_out_of_range",
            "limits.max_steps",
        ),
        (
            "PUT",
            "/v1/agents/bounded",
            spec_with(
                json!({"tools": [{"name": "e", "kind": "builtin", "builtin": "echo", "timeout_ms": 0}]}),
            ),
            400,
            "value_out_of_range",
            "tools[0].timeout_ms",
        ),
    ];
    for (method, path, body, status, code, field) in &cases {
        let (got, response, content_type) = call(&app, method, path, Some(body)).await;
        let case = format!("{code} ({field})");
        assert_envelope(got, &response, &content_type, *status, &case);
        assert_eq!(response["error"]["code"], *code, "{case}: {response}");
        if !field.is_empty() {
            assert_eq!(response["error"]["details"]["field"], *field, "{case}");
        }
    }
    assert_eq!(app.run_rows().await, 0, "no run was created");
    let (_, versions) = app.get("/v1/agents/bounded/versions/2").await;
    assert_eq!(versions["error"]["code"], "agent_version_not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_per_team_and_versions_per_agent_are_bounded() {
    let app = spawn_app().await;
    let db = app.db().await;
    db.execute(
        "INSERT INTO agent_configs (team_id, name, version, spec, spec_hash)
         SELECT $1, 'filler-' || n, 1, '{\"model\": \"m\", \"instructions\": \"i\"}', 'h'
         FROM generate_series(1, 500) n",
        &[&app.team.0],
    )
    .await
    .unwrap();
    let (status, body, _) = call(
        &app,
        "PUT",
        "/v1/agents/one-more",
        Some(&spec_with(json!({}))),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_agents")),
        "{body}"
    );

    db.execute(
        "INSERT INTO agent_configs (team_id, name, version, spec, spec_hash)
         SELECT $1, 'filler-1', n, '{\"model\": \"m\", \"instructions\": \"i\"}', 'h' || n
         FROM generate_series(2, 1000) n",
        &[&app.team.0],
    )
    .await
    .unwrap();
    let (status, body, _) = call(
        &app,
        "PUT",
        "/v1/agents/filler-1",
        Some(&spec_with(json!({"instructions": "new"}))),
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("too_many_versions")),
        "{body}"
    );
    // Another agent of the team may still get new versions.
    let (status, body, _) = call(
        &app,
        "PUT",
        "/v1/agents/filler-2",
        Some(&spec_with(json!({"instructions": "new"}))),
    )
    .await;
    assert_eq!((status, body["version"].as_i64()), (201, Some(2)), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_steps_are_paged() {
    use agentrun::mock_llm::{MockScript, MockTurn};
    let app = spawn_app().await;
    for name in ["alpha", "beta", "gamma"] {
        app.put_agent(name, agent("m", json!({}))).await;
    }
    let (status, first) = app.get("/v1/agents?limit=2").await;
    assert_eq!(status, 200, "{first}");
    let names: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["alpha", "beta"]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let (_, second) = app
        .get(&format!("/v1/agents?limit=2&cursor={cursor}"))
        .await;
    assert_eq!(second["data"][0]["name"], "gamma");
    assert!(second["next_cursor"].is_null(), "{second}");

    app.script(
        "pager",
        MockScript {
            turns: vec![
                MockTurn::tool("noop", json!({"n": 1})),
                MockTurn::tool("noop", json!({"n": 2})),
                MockTurn::text("done"),
            ],
            ..MockScript::default()
        },
    );
    app.put_agent(
        "pager",
        agent("pager", json!({"tools": [agentrun_e2e::echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("pager", json!("go")).await;
    app.wait_finished(&id, Duration::from_secs(20)).await;
    let mut steps = Vec::new();
    let mut path = format!("/v1/runs/{id}/steps?limit=2");
    loop {
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        assert!(page["data"].as_array().unwrap().len() <= 2);
        steps.extend(
            page["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["step_no"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/v1/runs/{id}/steps?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(steps, [1, 2, 3]);
    let (status, body) = app.get("/v1/agents?limit=0").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_rejections_answer_the_json_envelope() {
    let app = spawn_app().await;
    for (method, path, body, status) in [
        ("GET", "/v1/runs?limit=many", None, 400),
        ("GET", "/v1/runs?bogus=1", None, 400),
        ("GET", "/v1/usage?from=yesterday", None, 400),
        ("GET", "/v1/agents?cursor=NOT%20A%20NAME", None, 400),
        ("DELETE", "/v1/runs", None, 405),
        ("PATCH", "/v1/agents/x", Some("{}"), 405),
        ("GET", "/v1/nothing-here", None, 404),
    ] {
        let (got, response, content_type) = call(&app, method, path, body).await;
        assert_envelope(
            got,
            &response,
            &content_type,
            status,
            &format!("{method} {path}"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_key_stops_working_when_it_expires() {
    let app = spawn_app().await;
    let (team, _) = app.create_team("expiring", json!({})).await;
    let keys = format!("/v1/admin/teams/{team}/keys");
    let (status, refused) = app
        .admin(
            "POST",
            &keys,
            Some(json!({"expires_at": "2001-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].as_str()),
        (400, Some("invalid_body"))
    );
    let soon = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, issued) = app
        .admin("POST", &keys, Some(json!({"expires_at": soon})))
        .await;
    assert_eq!(status, 201, "{issued}");
    let key = issued["key"].as_str().unwrap();
    let (status, _) = app.call_as(key, "GET", "/v1/runs", None).await;
    assert_eq!(status, 200);
    let (_, listed) = app.admin("GET", &keys, None).await;
    assert!(listed["data"][1]["expires_at"].is_string(), "{listed}");

    app.db()
        .await
        .execute(
            "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1",
            &[&issued["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap()],
        )
        .await
        .unwrap();
    let (status, body) = app.call_as(key, "GET", "/v1/runs", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized")),
        "{body}"
    );
}
