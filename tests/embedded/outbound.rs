//! The outbound guard on HTTP tools: internal destinations and redirects are
//! refused (the model sees `outbound_blocked`, the run goes on, nothing
//! reaches the target), the allowlist lets a loopback tool through, responses
//! are capped and made storable, and calls are signed with a timestamp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun::outbound::OutboundAllow;
use agentrun_e2e::{agent, serve, start_app_allowing, TestApp};
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

const SECRET: &str = "receiver-secret";

/// (timestamp, signature, body) of each signed call.
type SignedCalls = Arc<Mutex<Vec<(String, String, Vec<u8>)>>>;

/// A loopback HTTP endpoint with one route per behaviour; counts every request.
struct Target {
    port: u16,
    hits: Arc<AtomicU32>,
    /// Every call to `/tool`.
    signed: SignedCalls,
}

impl Target {
    async fn start() -> Self {
        let hits = Arc::new(AtomicU32::new(0));
        let signed: SignedCalls = Arc::default();
        let (h, s) = (hits.clone(), signed.clone());
        let count = move || {
            h.fetch_add(1, Ordering::SeqCst);
        };
        let (c1, c2, c3, c4) = (count.clone(), count.clone(), count.clone(), count);
        let app = axum::Router::new()
            .route(
                "/tool",
                axum::routing::post(move |headers: HeaderMap, body: Bytes| {
                    c1();
                    let signed = s.clone();
                    async move {
                        let header = |name: &str| {
                            headers
                                .get(name)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned()
                        };
                        signed.lock().unwrap().push((
                            header("x-agentrun-timestamp"),
                            header("x-agentrun-signature"),
                            body.to_vec(),
                        ));
                        axum::Json(json!({"ok": true}))
                    }
                }),
            )
            .route(
                "/redirect",
                axum::routing::post(move || async move {
                    c2();
                    (
                        StatusCode::FOUND,
                        [("location", "http://169.254.169.254/latest/meta-data/")],
                    )
                        .into_response()
                }),
            )
            .route(
                "/big",
                axum::routing::post(move || async move {
                    c3();
                    vec![b'x'; 5 * 1024 * 1024]
                }),
            )
            .route(
                "/nul",
                axum::routing::post(move || async move {
                    c4();
                    b"before\0after \xff end".to_vec()
                }),
            );
        let port = serve(app).await.0.port();
        Self { port, hits, signed }
    }

    fn hits(&self) -> u32 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The platform with only `allow` let through the outbound guard.
async fn app_allowing(allow: &str) -> TestApp {
    let allow = OutboundAllow::parse(allow).unwrap();
    start_app_allowing(HashMap::new(), None, |_, _| {}, allow).await
}

fn http_tool(name: &str, url: String) -> Value {
    json!({"name": name, "kind": "http", "url": url, "secret": SECRET, "timeout_ms": 3000})
}

/// Runs one turn calling every tool at once, then a final answer; returns
/// the tool-call records of step 1.
async fn run_tools(app: &TestApp, tools: Vec<Value>) -> Vec<Value> {
    let names: Vec<String> = tools
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    let calls: Vec<(&str, Value)> = names.iter().map(|n| (n.as_str(), json!({}))).collect();
    app.script(
        "caller",
        MockScript::turns(vec![MockTurn::tools(&calls), MockTurn::text("carried on")]),
    );
    app.put_agent("caller", agent("caller", json!({"tools": tools})))
        .await;
    let id = app.start_run("caller", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(30)).await;
    assert_eq!(run["status"], "succeeded", "the run goes on: {run}");
    assert_eq!(run["output"], "carried on");
    let steps = app.steps(&id).await;
    steps[0]["tool_calls"].as_array().unwrap().clone()
}

fn assert_blocked(call: &Value) {
    assert_eq!(call["is_error"], true, "{call}");
    let result: Value = serde_json::from_str(call["result"].as_str().unwrap()).unwrap();
    assert_eq!(result["code"], "outbound_blocked", "{call}");
    assert_eq!(call["attempts"], 1, "a refusal is not retried: {call}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_destinations_in_every_spelling_are_refused_and_nothing_reaches_them() {
    let target = Target::start().await;
    let app = app_allowing("").await;
    let port = target.port;
    let urls = [
        format!("http://127.0.0.1:{port}/tool"),
        format!("http://localhost:{port}/tool"),
        format!("http://2130706433:{port}/tool"),
        format!("http://0x7f.0.0.1:{port}/tool"),
        format!("http://127.1:{port}/tool"),
        format!("http://[::1]:{port}/tool"),
        format!("http://[::ffff:127.0.0.1]:{port}/tool"),
        format!("http://0.0.0.0:{port}/tool"),
        format!("http://user:pw@127.0.0.1:{port}/tool?token=abc"),
    ];
    let tools = urls
        .iter()
        .enumerate()
        .map(|(i, url)| http_tool(&format!("t{i}"), url.clone()))
        .collect();
    let calls = run_tools(&app, tools).await;
    assert_eq!(calls.len(), urls.len());
    for call in &calls {
        assert_blocked(call);
        let text = call["result"].as_str().unwrap();
        assert!(!text.contains("pw") && !text.contains("abc"), "{text}");
    }
    let localhost: Value = serde_json::from_str(calls[1]["result"].as_str().unwrap()).unwrap();
    assert!(
        localhost["error"]
            .as_str()
            .unwrap()
            .contains("resolves to a loopback address"),
        "{localhost}"
    );
    assert_eq!(target.hits(), 0, "nothing reached the target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_the_metadata_address_is_not_followed() {
    let target = Target::start().await;
    // The receiver itself is allowed; where it redirects to is not followed.
    let app = app_allowing("127.0.0.1").await;
    let calls = run_tools(
        &app,
        vec![http_tool(
            "redirected",
            format!("http://127.0.0.1:{}/redirect", target.port),
        )],
    )
    .await;
    assert_blocked(&calls[0]);
    assert!(calls[0]["result"].as_str().unwrap().contains("302"));
    assert_eq!(
        target.hits(),
        1,
        "the redirect was answered once, not retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_allowlist_lets_a_loopback_tool_through_with_a_timestamped_signature() {
    let target = Target::start().await;
    let app = app_allowing("127.0.0.0/8").await;
    let calls = run_tools(
        &app,
        vec![http_tool(
            "allowed",
            format!("http://127.0.0.1:{}/tool", target.port),
        )],
    )
    .await;
    assert_eq!(calls[0]["is_error"], false, "{}", calls[0]);
    assert_eq!(calls[0]["result"], r#"{"ok":true}"#);
    let signed = target.signed.lock().unwrap().clone();
    assert_eq!(signed.len(), 1);
    let (timestamp, signature, body) = &signed[0];
    let sent_at: i64 = timestamp.parse().expect("a Unix timestamp");
    assert!((chrono::Utc::now().timestamp() - sent_at).abs() < 60);
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, &expected, "signed as timestamp.body");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_is_stored_at_the_cap_and_a_nul_does_not_fail_the_run() {
    let target = Target::start().await;
    let app = app_allowing("127.0.0.1").await;
    let calls = run_tools(
        &app,
        vec![
            http_tool("big", format!("http://127.0.0.1:{}/big", target.port)),
            http_tool("nul", format!("http://127.0.0.1:{}/nul", target.port)),
        ],
    )
    .await;
    assert_eq!(calls[0]["is_error"], false);
    assert_eq!(calls[0]["truncated"], true);
    assert_eq!(calls[0]["result_bytes"], 1024 * 1024, "stored at the cap");
    assert_eq!(calls[0]["result_cut"], true, "and listed cut to 32 KiB");
    assert_eq!(calls[0]["result"].as_str().unwrap().len(), 32 * 1024);
    assert_eq!(calls[1]["is_error"], false);
    assert_eq!(calls[1]["truncated"], false);
    assert_eq!(
        calls[1]["result"], "before\u{FFFD}after \u{FFFD} end",
        "NUL and invalid UTF-8 replaced"
    );
}
