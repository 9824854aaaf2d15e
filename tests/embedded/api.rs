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
        "/v1/runs/{id}/webhooks",
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
        llm: app.platform.engine.llm.clone(),
        feed: Arc::new(BroadcastFeed::new()),
        tools: ToolRunner::new(agentrun::outbound::OutboundAllow::none()),
        schemas: Default::default(),
        circuits: Default::default(),
        metrics: Default::default(),
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

/// Every response carries `X-Request-Id`: the caller's own when it is
/// acceptable, a new one otherwise, and an error body names the same id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_errors_echo_it() {
    let app = spawn_app().await;
    app.put_agent("known", agent("m", json!({}))).await;
    let id = app.start_run("known", json!("x")).await;
    let http = reqwest::Client::new();
    let request_id = |response: &reqwest::Response| {
        response
            .headers()
            .get("x-request-id")
            .unwrap_or_else(|| panic!("{} has no X-Request-Id", response.url()))
            .to_str()
            .unwrap()
            .to_owned()
    };
    let mut seen = std::collections::HashSet::new();
    for (method, path, key) in [
        ("GET", "/healthz".to_owned(), None),
        ("GET", "/openapi.json".to_owned(), None),
        ("GET", format!("/v1/runs/{id}"), Some(app.key.as_str())),
        (
            "GET",
            format!("/v1/runs/{id}/steps"),
            Some(app.key.as_str()),
        ),
        (
            "GET",
            format!("/v1/runs/{id}/events"),
            Some(app.key.as_str()),
        ),
        ("GET", "/v1/runs".to_owned(), None),
        ("GET", "/v1/nothing-here".to_owned(), Some(app.key.as_str())),
        ("DELETE", "/v1/runs".to_owned(), Some(app.key.as_str())),
        ("GET", "/v1/runs?limit=0".to_owned(), Some(app.key.as_str())),
    ] {
        let mut request = http.request(method.parse().unwrap(), format!("{}{path}", app.url));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let header = request_id(&response);
        assert!(
            header.len() == 32 && header.bytes().all(|b| b.is_ascii_hexdigit()),
            "{method} {path}: {header}"
        );
        assert!(seen.insert(header.clone()), "{header} given twice");
        if status.is_client_error() {
            let body: Value = response.json().await.unwrap();
            assert_eq!(
                body["error"]["request_id"],
                header.as_str(),
                "{method} {path}: {body}"
            );
        }
    }
    // A caller's id is kept; one that is not acceptable is replaced.
    let response = http
        .get(format!("{}/v1/runs/{id}", app.url))
        .bearer_auth(&app.key)
        .header("x-request-id", "trace-abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&response), "trace-abc-123");
    let response = http
        .get(format!("{}/v1/runs/not-a-run", app.url))
        .bearer_auth(&app.key)
        .header("x-request-id", "x".repeat(129))
        .send()
        .await
        .unwrap();
    let header = request_id(&response);
    assert_eq!(header.len(), 32);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "run_not_found");
    assert_eq!(body["error"]["request_id"], header.as_str());
}

/// `GET /v1/runs/{id}?wait=N` answers when the run ends, or with the run as
/// it is once N seconds are over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_holds_the_answer_until_the_run_ends_or_the_wait_is_over() {
    let app = spawn_app().await;
    app.put_napper("napper", "napping", 1500, "rested").await;
    let id = app.start_run("napper", json!("x")).await;
    let asked = std::time::Instant::now();
    let (status, run) = app.get(&format!("/v1/runs/{id}?wait=20")).await;
    let waited = asked.elapsed();
    assert_eq!(status, 200, "{run}");
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], "rested");
    assert!(
        waited >= std::time::Duration::from_millis(1200),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(15), "{waited:?}");
    // An ended run answers at once.
    let asked = std::time::Instant::now();
    let (_, run) = app.get(&format!("/v1/runs/{id}?wait=20")).await;
    assert_eq!(run["status"], "succeeded");
    assert!(asked.elapsed() < std::time::Duration::from_secs(1));

    app.put_napper("napper", "napping", 4000, "rested").await;
    let id = app.start_run("napper", json!("y")).await;
    let asked = std::time::Instant::now();
    let (status, run) = app.get(&format!("/v1/runs/{id}?wait=1")).await;
    let waited = asked.elapsed();
    assert_eq!(status, 200);
    assert_eq!(run["status"], "running", "{run}");
    assert!(
        waited >= std::time::Duration::from_millis(900),
        "{waited:?}"
    );
    assert!(waited < std::time::Duration::from_secs(3), "{waited:?}");

    let (status, body) = app.get(&format!("/v1/runs/{id}?wait=61")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "invalid_query", "{body}");
    // Not a number of seconds at all: the query is refused as malformed.
    for bad in ["-1", "soon"] {
        let (status, body) = app.get(&format!("/v1/runs/{id}?wait={bad}")).await;
        assert_eq!(status, 400, "wait={bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
    }
}

/// The runs list filters by agent, status, creation time and a metadata
/// key's value; the filters combine, and a bad one is a 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runs_list_filters_by_agent_status_time_and_metadata() {
    let app = spawn_app().await;
    app.put_agent("alpha", agent("m", json!({}))).await;
    app.put_agent("beta", agent("m", json!({}))).await;
    let start = |agent: &'static str, customer: &'static str| {
        let app = &app;
        async move {
            let (status, _, body) = app
                .post_run(
                    &json!({"agent": agent, "input": "x", "metadata": {"customer": customer}}),
                    None,
                )
                .await;
            assert_eq!(status, 202, "{body}");
            body
        }
    };
    let a1 = start("alpha", "c1").await;
    let a2 = start("alpha", "c2").await;
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let between = chrono::Utc::now();
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let b1 = start("beta", "c1").await;
    for run in [&a1, &a2, &b1] {
        app.wait_finished(
            run["id"].as_str().unwrap(),
            std::time::Duration::from_secs(20),
        )
        .await;
    }
    let ids = |body: &Value| -> Vec<String> {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| run["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let id = |run: &Value| run["id"].as_str().unwrap().to_owned();
    let between = urlencode(&between.to_rfc3339());
    for (query, expected) in [
        ("agent=alpha".to_owned(), vec![id(&a2), id(&a1)]),
        ("agent=beta".to_owned(), vec![id(&b1)]),
        (
            "metadata_key=customer&metadata_value=c1".to_owned(),
            vec![id(&b1), id(&a1)],
        ),
        (
            "agent=alpha&metadata_key=customer&metadata_value=c1".to_owned(),
            vec![id(&a1)],
        ),
        (format!("created_after={between}"), vec![id(&b1)]),
        (format!("created_before={between}"), vec![id(&a2), id(&a1)]),
        (format!("created_before={between}&agent=beta"), vec![]),
        (
            "metadata_key=customer&metadata_value=nobody".to_owned(),
            vec![],
        ),
        ("agent=alpha&limit=1".to_owned(), vec![id(&a2)]),
    ] {
        let (status, body) = app.get(&format!("/v1/runs?{query}")).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(ids(&body), expected, "{query}");
    }
    let (_, page) = app.get("/v1/runs?agent=alpha&limit=1").await;
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, next) = app
        .get(&format!(
            "/v1/runs?agent=alpha&limit=1&cursor={}",
            urlencode(cursor)
        ))
        .await;
    assert_eq!(ids(&next), vec![id(&a1)], "the filter holds across pages");
    for bad in [
        "metadata_key=customer",
        "metadata_value=c1",
        "created_after=yesterday",
        "created_before=0001-01-01T00:00:00Z",
        "agent=Not%20A%20Name",
        "status=resting",
    ] {
        let (status, body) = app.get(&format!("/v1/runs?{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error"]["code"], "invalid_query", "{bad}: {body}");
    }
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The contract check the helpers run on every body refuses what the
/// document does not describe (a check that could not fail would prove
/// nothing).
#[test]
fn the_contract_check_refuses_bodies_the_document_does_not_describe() {
    use agentrun_e2e::contract::check_response;
    let run = "/v1/runs/0190c0de-0000-7000-8000-000000000000";
    let error = json!({"error": {"code": "run_not_found", "message": "no run", "details": null,
                                 "request_id": "0123456789abcdef0123456789abcdef"}});
    check_response("GET", run, 404, &error);
    check_response("GET", "/v1/no-such-route", 404, &error);
    for (method, path, status, body) in [
        ("GET", run, 200, json!({"id": 5})),
        (
            "GET",
            run,
            404,
            json!({"error": {"code": "run_not_found", "message": "no run"}}),
        ),
        ("GET", run, 418, error.clone()),
        ("GET", "/v1/no-such-route", 200, json!({})),
        ("POST", "/v1/runs", 202, json!({"status": "resting"})),
    ] {
        let checked = std::panic::catch_unwind(|| check_response(method, path, status, &body));
        assert!(checked.is_err(), "{method} {path} {status} {body} passed");
    }
}
