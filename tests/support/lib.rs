//! Shared helpers for the end-to-end tests: a fresh database per app, the
//! platform on a real port, the mock LLM, and a counting HTTP tool receiver.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use agentrun::adapters::llm_http::ProviderSettings;
use agentrun::domain::TeamId;
use agentrun::embedded::{Embedded, EmbeddedSettings};
use agentrun::mock_llm::{MockLlm, MockScript};
use agentrun::policy::StepPolicy;
use agentrun::sse_client::{ParsedEvent, SseParser};
use axum::http::HeaderMap;
use futures_util::StreamExt;
use serde_json::{json, Value};

pub mod cloud;
pub mod contract;
pub mod faults;
pub mod postgres;
pub mod tcp_proxy;

/// A minimal agent spec on `model`, with `extra` fields merged in.
pub fn agent(model: &str, extra: Value) -> Value {
    let mut spec = json!({"model": model, "instructions": "You are a test agent."});
    if let (Some(spec), Some(extra)) = (spec.as_object_mut(), extra.as_object()) {
        for (k, v) in extra {
            spec.insert(k.clone(), v.clone());
        }
    }
    spec
}

/// A no-op builtin tool.
pub fn echo_tool(name: &str) -> Value {
    json!({"name": name, "kind": "builtin", "builtin": "echo"})
}

/// Server holding the per-test databases; `postgres` is only used to create them.
pub fn admin_database_url() -> String {
    std::env::var("AGENTRUN_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Creates an empty, randomly named database and returns its URL.
pub async fn fresh_database() -> String {
    let admin = admin_database_url();
    let name = format!("agentrun_test_{}", uuid::Uuid::new_v4().simple());
    let (client, connection) = tokio_postgres::connect(&admin, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL (set AGENTRUN_TEST_DATABASE_URL)");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create test database");
    driver.abort();
    let base = admin
        .rsplit_once('/')
        .map(|(base, _)| base)
        .unwrap_or(&admin);
    format!("{base}/{name}")
}

/// Retry numbers small enough for tests, same shape as production.
pub fn fast_policy() -> StepPolicy {
    StepPolicy {
        step_timeout: Duration::from_secs(30),
        answer_margin: Duration::from_secs(3),
        heartbeat: Duration::from_secs(5),
        max_retries: 3,
        retry_base: Duration::from_millis(50),
        retry_max_delay: Duration::from_millis(200),
        rate_limit_retries: 3,
        rate_limit_base: Duration::from_millis(100),
        rate_limit_max_delay: Duration::from_millis(400),
        store_retries: 3,
        circuit_failures: 5,
        circuit_cool_down: Duration::from_millis(1_500),
        circuit_waits: 10,
        steps_per_task: 1,
        slot_retry: Duration::from_millis(500),
        workflow_timeout: Duration::from_secs(600),
    }
}

pub fn fast_llm(base_url: String) -> ProviderSettings {
    let mut settings = ProviderSettings::new(base_url);
    settings.request_timeout = Duration::from_secs(5);
    settings.max_retries = 2;
    settings.retry_base = Duration::from_millis(20);
    settings.retry_max_delay = Duration::from_millis(100);
    settings
}

pub struct TestApp {
    pub url: String,
    pub key: String,
    pub admin_key: String,
    pub team: TeamId,
    pub mock: MockLlm,
    pub platform: Embedded,
    pub database_url: String,
    pub http: reqwest::Client,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.server.abort();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(HashMap::new()).await
}

/// The embedded platform on a free port with the given mock scripts.
pub async fn spawn_app_with(scripts: HashMap<String, MockScript>) -> TestApp {
    start_app(scripts, None, |_, _| {}).await
}

/// Builds the platform; `orchestrator` replaces the in-process one and
/// `adapt` may swap the engine's adapters (cloud mode) before serving (it
/// gets the database's URL too). HTTP tools may reach loopback (where the
/// tests' receivers listen).
pub async fn start_app(
    scripts: HashMap<String, MockScript>,
    orchestrator: Option<Arc<dyn agentrun::ports::Orchestrator>>,
    adapt: impl FnOnce(&mut agentrun::engine::Engine, &str),
) -> TestApp {
    let loopback = agentrun::outbound::OutboundAllow::parse("127.0.0.0/8,::1").unwrap();
    start_app_allowing(scripts, orchestrator, adapt, loopback).await
}

/// The same with the outbound allowlist given.
pub async fn start_app_allowing(
    scripts: HashMap<String, MockScript>,
    orchestrator: Option<Arc<dyn agentrun::ports::Orchestrator>>,
    adapt: impl FnOnce(&mut agentrun::engine::Engine, &str),
    outbound_allow: agentrun::outbound::OutboundAllow,
) -> TestApp {
    let database_url = fresh_database().await;
    start_app_at(
        database_url,
        fast_policy(),
        scripts,
        orchestrator,
        adapt,
        outbound_allow,
        |_| {},
    )
    .await
}

/// The embedded platform on `database_url` (created when missing), stepping
/// by `policy`.
pub async fn spawn_app_on(
    database_url: String,
    policy: StepPolicy,
    scripts: HashMap<String, MockScript>,
) -> TestApp {
    spawn_app_tuned(database_url, policy, scripts, |_| {}).await
}

/// The same, with the embedded settings changed by `tune` before it starts.
pub async fn spawn_app_tuned(
    database_url: String,
    policy: StepPolicy,
    scripts: HashMap<String, MockScript>,
    tune: impl FnOnce(&mut EmbeddedSettings),
) -> TestApp {
    let loopback = agentrun::outbound::OutboundAllow::parse("127.0.0.0/8,::1").unwrap();
    start_app_at(
        database_url,
        policy,
        scripts,
        None,
        |_, _| {},
        loopback,
        tune,
    )
    .await
}

async fn start_app_at(
    database_url: String,
    policy: StepPolicy,
    scripts: HashMap<String, MockScript>,
    orchestrator: Option<Arc<dyn agentrun::ports::Orchestrator>>,
    adapt: impl FnOnce(&mut agentrun::engine::Engine, &str),
    outbound_allow: agentrun::outbound::OutboundAllow,
    tune: impl FnOnce(&mut EmbeddedSettings),
) -> TestApp {
    let mock = MockLlm::start("127.0.0.1:0".parse().unwrap(), scripts)
        .await
        .unwrap();
    let mut settings = EmbeddedSettings::new(database_url.clone(), fast_llm(mock.base_url()));
    settings.anthropic = fast_llm(mock.anthropic_base_url());
    settings.policy = policy;
    settings.max_db_connections = 16;
    settings.outbound_allow = outbound_allow;
    let admin_key = format!("adm_{}", uuid::Uuid::new_v4().simple());
    settings.admin_key = Some(admin_key.as_str().into());
    tune(&mut settings);
    let mut platform = Embedded::start(settings)
        .await
        .expect("start embedded platform");
    adapt(&mut platform.engine, &database_url);
    let team = platform
        .engine
        .ledger
        .ensure_team("test-team")
        .await
        .unwrap();
    let key = platform
        .engine
        .ledger
        .issue_api_key(team, None)
        .await
        .unwrap()
        .secret;
    let router = match orchestrator {
        None => platform.router(),
        Some(orchestrator) => agentrun::api::router(agentrun::api::AppState::new(
            platform.engine.clone(),
            orchestrator,
            Some(Arc::from(admin_key.as_str())),
        )),
    };
    let (address, server) = serve(router).await;
    TestApp {
        url: format!("http://{address}"),
        key,
        admin_key,
        team,
        mock,
        platform,
        database_url,
        http: reqwest::Client::new(),
        server,
    }
}

/// Serves `router` on a free loopback port.
pub async fn serve(router: axum::Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    (address, server)
}

/// Serves the API over `engine` (e.g. with one adapter swapped for a dead
/// one), driven in-process; returns its base URL.
pub async fn serve_engine(engine: agentrun::engine::Engine) -> String {
    let orchestrator =
        agentrun::adapters::in_process::EmbeddedOrchestrator::new(engine.clone(), fast_policy(), 8);
    let router = agentrun::api::router(agentrun::api::AppState::new(engine, orchestrator, None));
    format!("http://{}", serve(router).await.0)
}

impl TestApp {
    pub fn script(&self, model: &str, script: MockScript) {
        self.mock.state.set_script(model, script);
    }

    /// An agent `name` on `model` whose first step sleeps `ms` in a
    /// built-in tool and whose second answers `answer`.
    pub async fn put_napper(&self, name: &str, model: &str, ms: u64, answer: &str) {
        let nap = json!({"name": "nap", "kind": "builtin", "builtin": "sleep"});
        self.put_agent(name, agent(model, json!({"tools": [nap]})))
            .await;
        self.script(
            model,
            MockScript::turns(vec![
                agentrun::mock_llm::MockTurn::tool("nap", json!({"ms": ms})),
                agentrun::mock_llm::MockTurn::text(answer),
            ]),
        );
    }

    pub async fn put_agent(&self, name: &str, spec: Value) -> Value {
        let response = self
            .http
            .put(format!("{}/v1/agents/{name}", self.url))
            .bearer_auth(&self.key)
            .json(&spec)
            .send()
            .await
            .unwrap();
        let status = response.status();
        let body: Value = response.json().await.unwrap();
        contract::check_response("PUT", &format!("/v1/agents/{name}"), status.as_u16(), &body);
        assert!(status.is_success(), "PUT agent {name}: {status} {body}");
        body
    }

    pub async fn post_run(
        &self,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> (u16, HeaderMap, Value) {
        let mut request = self
            .http
            .post(format!("{}/v1/runs", self.url))
            .bearer_auth(&self.key)
            .json(body);
        if let Some(key) = idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.unwrap();
        contract::check_response("POST", "/v1/runs", status, &body);
        (status, headers, body)
    }

    /// Starts a run and returns its id.
    pub async fn start_run(&self, agent: &str, input: Value) -> String {
        let (status, _, body) = self
            .post_run(&json!({"agent": agent, "input": input}), None)
            .await;
        assert_eq!(status, 202, "{body}");
        body["id"].as_str().unwrap().to_owned()
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.json().await.unwrap();
        contract::check_response("GET", path, status, &body);
        (status, body)
    }

    pub async fn run(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until the run is terminal.
    pub async fn wait_finished(&self, id: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let run = self.run(id).await;
            let status = run["status"].as_str().unwrap_or_default().to_owned();
            if !["queued", "running", "waiting"].contains(&status.as_str()) {
                return run;
            }
            assert!(
                Instant::now() < until,
                "run {id} still {status} after {within:?}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Polls until the run waits for approval; its pending requests.
    pub async fn wait_for_approval(&self, id: &str, within: Duration) -> Vec<Value> {
        let until = Instant::now() + within;
        loop {
            let run = self.run(id).await;
            if run["status"] == "waiting" {
                assert_eq!(run["waiting_for"], "approval", "{run}");
                let (status, body) = self.get(&format!("/v1/runs/{id}/approvals")).await;
                assert_eq!(status, 200, "{body}");
                return body["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .filter(|a| a["status"] == "pending")
                    .cloned()
                    .collect();
            }
            assert!(
                Instant::now() < until
                    && ["queued", "running"].contains(&run["status"].as_str().unwrap_or_default()),
                "run {id} did not come to wait for approval within {within:?}: {run}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Answers an approval request with the team's key: (status, body).
    pub async fn answer_approval(&self, id: &str, request_id: &str, answer: Value) -> (u16, Value) {
        self.call_as(
            &self.key,
            "POST",
            &format!("/v1/runs/{id}/approvals/{request_id}"),
            Some(answer),
        )
        .await
    }

    pub async fn steps(&self, id: &str) -> Vec<Value> {
        let (status, body) = self.get(&format!("/v1/runs/{id}/steps")).await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().unwrap().clone()
    }

    /// Opens the event stream (optionally after a seq via Last-Event-ID).
    pub async fn open_events(&self, id: &str, last_event_id: Option<i64>) -> EventStream {
        let mut request = self
            .http
            .get(format!("{}/v1/runs/{id}/events", self.url))
            .bearer_auth(&self.key);
        if let Some(seq) = last_event_id {
            request = request.header("last-event-id", seq.to_string());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        EventStream {
            body: Box::pin(response.bytes_stream()),
            parser: SseParser::default(),
            ready: Vec::new(),
        }
    }

    /// Waits (over SSE) until the run has started step `step_no`.
    pub async fn wait_for_step(&self, id: &str, step_no: i64) {
        let mut stream = self.open_events(id, None).await;
        loop {
            let event = stream
                .next(Duration::from_secs(10))
                .await
                .expect("the run ended before the step started");
            let data: Value = serde_json::from_str(&event.data).unwrap();
            if event.event == "step.started" && data["step_no"] == step_no {
                return;
            }
        }
    }

    /// Every event of a run, read over SSE until the stream ends.
    pub async fn all_events(&self, id: &str) -> Vec<ParsedEvent> {
        let mut stream = self.open_events(id, None).await;
        let mut events = Vec::new();
        while let Some(event) = stream.next(Duration::from_secs(20)).await {
            events.push(event);
        }
        events
    }

    pub async fn db(&self) -> tokio_postgres::Client {
        connect(&self.database_url).await
    }

    /// Committed steps of a run.
    pub async fn step_rows(&self, run_id: &str) -> i64 {
        self.count("SELECT count(*) FROM run_steps WHERE run_id = $1", run_id)
            .await
    }

    /// Runs in the database, of every team.
    pub async fn run_rows(&self) -> i64 {
        self.db()
            .await
            .query_one("SELECT count(*) FROM runs", &[])
            .await
            .unwrap()
            .get(0)
    }

    /// Checks that a stopped run commits no further step for a while.
    pub async fn assert_no_more_steps(&self, run_id: &str) {
        let committed = self.step_rows(run_id).await;
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(self.step_rows(run_id).await, committed);
    }

    pub async fn count(&self, sql: &str, run_id: &str) -> i64 {
        count_for_run(&self.db().await, sql, run_id).await
    }
}

pub struct EventStream {
    body: std::pin::Pin<Box<dyn futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>,
    parser: SseParser,
    ready: Vec<ParsedEvent>,
}

impl EventStream {
    /// The next event, or `None` when the stream ended. Panics after `within`.
    pub async fn next(&mut self, within: Duration) -> Option<ParsedEvent> {
        let until = tokio::time::Instant::now() + within;
        loop {
            if !self.ready.is_empty() {
                return Some(self.ready.remove(0));
            }
            let chunk = tokio::time::timeout_at(until, self.body.next())
                .await
                .expect("no SSE event within the time limit")?;
            self.ready = self.parser.push(&chunk.unwrap());
        }
    }
}

/// Seq numbers of parsed events.
/// A plain connection to `database_url`.
pub async fn connect(database_url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(database_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

/// `sql`'s count, with the run's id as `$1`.
pub async fn count_for_run(db: &tokio_postgres::Client, sql: &str, run_id: &str) -> i64 {
    let id: uuid::Uuid = run_id.parse().unwrap();
    db.query_one(sql, &[&id]).await.unwrap().get(0)
}

/// Waits until `sql`'s count for the run is `wanted`; panics with `what`
/// after `within`.
pub async fn wait_for_count(
    db: &tokio_postgres::Client,
    sql: &str,
    run_id: &str,
    wanted: i64,
    within: Duration,
    what: &str,
) {
    let until = Instant::now() + within;
    while count_for_run(db, sql, run_id).await != wanted {
        assert!(Instant::now() < until, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn seqs(events: &[ParsedEvent]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e.id.as_deref().unwrap().parse().unwrap())
        .collect()
}

pub fn types(events: &[ParsedEvent]) -> Vec<String> {
    events.iter().map(|e| e.event.clone()).collect()
}

/// An HTTP tool endpoint that counts calls per idempotency key and records
/// when each call started and finished.
#[derive(Clone)]
pub struct ToolReceiver {
    pub url: String,
    pub calls: Arc<Mutex<HashMap<String, u32>>>,
    pub signatures: Arc<Mutex<Vec<Option<String>>>>,
}

impl ToolReceiver {
    /// Answers every call after `delay` with `{"ok": true, "tool": ...}`.
    pub async fn start(delay: Duration) -> Self {
        let calls: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let signatures: Arc<Mutex<Vec<Option<String>>>> = Arc::default();
        let (c, s) = (calls.clone(), signatures.clone());
        let app = axum::Router::new().route(
            "/tool",
            axum::routing::post(move |headers: HeaderMap, body: axum::Json<Value>| {
                let (calls, signatures) = (c.clone(), s.clone());
                async move {
                    let key = headers
                        .get("idempotency-key")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_owned();
                    *calls.lock().unwrap().entry(key.clone()).or_insert(0) += 1;
                    signatures.lock().unwrap().push(
                        headers
                            .get("x-agentrun-signature")
                            .map(|v| v.to_str().unwrap().to_owned()),
                    );
                    tokio::time::sleep(delay).await;
                    axum::Json(json!({"ok": true, "tool": body["tool"], "key": key}))
                }
            }),
        );
        let (addr, _) = serve(app).await;
        Self {
            url: format!("http://{addr}/tool"),
            calls,
            signatures,
        }
    }

    pub fn counts(&self) -> HashMap<String, u32> {
        self.calls.lock().unwrap().clone()
    }
}

/// The `agentrun` binary, built before the tests (`make test` does).
pub fn agentrun_bin() -> std::path::PathBuf {
    if let Ok(path) = std::env::var("AGENTRUN_BIN") {
        return path.into();
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let path = target.join("debug/agentrun");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --bin agentrun` first (make test does)",
        path.display()
    );
    path
}

/// `agentrun dev` as a child process (to be killed and started again).
pub struct DevServer {
    pub child: std::process::Child,
    pub url: String,
}

impl DevServer {
    /// Starts `agentrun dev` on `port` with the mock LLM at `mock_url`, the
    /// agents in `agents` and its state in `state`; `env` adds settings.
    /// HTTP tools and webhooks may reach loopback.
    pub fn start(
        database_url: &str,
        mock_url: &str,
        agents: &std::path::Path,
        state: &std::path::Path,
        port: u16,
        env: &[(&str, &str)],
    ) -> Self {
        let child = std::process::Command::new(agentrun_bin())
            .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--agents")
            .arg(agents)
            .arg("--state-dir")
            .arg(state)
            .env("DATABASE_URL", database_url)
            .env("OPENAI_BASE_URL", mock_url)
            .env("AGENTRUN_RETRY_BASE_MS", "50")
            .env("AGENTRUN_OUTBOUND_ALLOW", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start agentrun dev");
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }

    /// POSTs a run with `key`; returns the created run.
    pub async fn post_run(&self, http: &reqwest::Client, key: &str, body: Value) -> Value {
        http.post(format!("{}/v1/runs", self.url))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// Long-polls (`?wait=`) until the run is terminal.
    pub async fn wait_finished(
        &self,
        http: &reqwest::Client,
        key: &str,
        id: &str,
        within: Duration,
    ) -> Value {
        let until = Instant::now() + within;
        loop {
            let run: Value = http
                .get(format!("{}/v1/runs/{id}?wait=5", self.url))
                .bearer_auth(key)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let status = run["status"].as_str().unwrap_or_default().to_owned();
            if !["queued", "running", "waiting"].contains(&status.as_str()) {
                return run;
            }
            assert!(
                Instant::now() < until,
                "run {id} still {status} after {within:?}: {run}"
            );
            // A waiting run is answered at once by the long poll.
            if status == "waiting" {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    /// SIGKILL, and wait for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

/// A test that fails leaves no server behind (holding its output open).
impl Drop for DevServer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits until `/healthz` at `url` answers 2xx (at most 30 s).
pub async fn wait_healthy(http: &reqwest::Client, url: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        if let Ok(response) = http.get(format!("{url}/healthz")).send().await {
            if response.status().is_success() {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("agentrun dev did not become healthy at {url}");
}

/// The demo team's API key that `agentrun dev` wrote to `state/dev.env`.
pub fn api_key(state: &std::path::Path) -> String {
    let text = std::fs::read_to_string(state.join("dev.env")).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("AGENTRUN_API_KEY="))
        .unwrap()
        .to_owned()
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl TestApp {
    /// A request to the admin API with the admin key.
    pub async fn admin(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        self.call_as(&self.admin_key, method, path, body).await
    }

    /// Creates a team through the admin API; returns (team id, API key).
    pub async fn create_team(&self, name: &str, limits: Value) -> (String, String) {
        let (status, team) = self
            .admin(
                "POST",
                "/v1/admin/teams",
                Some(json!({"name": name, "limits": limits})),
            )
            .await;
        assert_eq!(status, 201, "{team}");
        let id = team["id"].as_str().unwrap().to_owned();
        let (status, key) = self
            .admin("POST", &format!("/v1/admin/teams/{id}/keys"), None)
            .await;
        assert_eq!(status, 201, "{key}");
        (id, key["key"].as_str().unwrap().to_owned())
    }

    /// A run as a request leaves it when it dies after the ledger insert and
    /// before the start: `queued`, holding a slot, nothing driving it.
    pub async fn insert_queued_run(&self, agent: &str) -> String {
        let engine = &self.platform.engine;
        let version = engine
            .ledger
            .get_agent(self.team, agent, None)
            .await
            .unwrap()
            .expect("the agent exists");
        let id = agentrun::domain::RunId::new();
        assert!(engine
            .hot
            .acquire_run_slot(self.team, id, 1000)
            .await
            .unwrap());
        let created = engine
            .ledger
            .create_run(&agentrun::ledger::NewRun {
                id,
                team_id: self.team,
                agent: version.name,
                version: version.version,
                input: json!("left behind"),
                metadata: json!({}),
                limits: version.spec.limits,
                run_fee_micros: 0,
                idempotency: None,
                webhook: None,
                continues: None,
            })
            .await
            .unwrap();
        assert!(matches!(created, agentrun::ledger::Creation::Created(_)));
        id.to_string()
    }

    /// Slots the test team holds now.
    pub async fn slots_held(&self) -> u32 {
        self.platform
            .engine
            .hot
            .running_runs(self.team)
            .await
            .unwrap()
    }

    /// Waits for the team's slots to be given back (a run's slot is released
    /// just after its terminal state is recorded); panics after 5 s.
    pub async fn assert_slots_released(&self) {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let held = self.slots_held().await;
            if held == 0 {
                return;
            }
            if Instant::now() >= until {
                let holders = self.platform.engine.hot.slot_holders().await.unwrap();
                let mut held_by = Vec::new();
                for holder in holders {
                    let run = self
                        .platform
                        .engine
                        .ledger
                        .get_run(holder.run)
                        .await
                        .unwrap();
                    held_by.push((
                        holder.run,
                        holder.since,
                        run.map(|r| (r.status, r.finished_at)),
                    ));
                }
                panic!("{held} slots still held: {held_by:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Changes the test team through the admin API.
    pub async fn patch_team(&self, change: Value) -> Value {
        let (status, team) = self
            .admin(
                "PATCH",
                &format!("/v1/admin/teams/{}", self.team),
                Some(change),
            )
            .await;
        assert_eq!(status, 200, "{team}");
        team
    }

    /// A request with another key; returns (status, body).
    pub async fn call_as(
        &self,
        key: &str,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.url))
            .bearer_auth(key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let json = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        if json {
            contract::check_response(method.as_str(), path, status, &body);
        }
        (status, body)
    }
}

/// Named statements each open connection of `ledger`'s pool holds now
/// (`pg_prepared_statements` is per session, so every connection is asked).
pub async fn prepared_statements(ledger: &agentrun::ledger::Ledger) -> Vec<i64> {
    let pool = ledger.pool();
    let open = pool.status().size;
    let mut held = Vec::new();
    for _ in 0..open {
        held.push(pool.get().await.unwrap());
    }
    let mut counts = Vec::new();
    for connection in &held {
        let rows = connection
            .simple_query("SELECT count(*) FROM pg_prepared_statements")
            .await
            .unwrap();
        for row in rows {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = row {
                counts.push(row.get(0).unwrap().parse().unwrap());
            }
        }
    }
    counts
}

/// One request a [`WebhookReceiver`] got.
#[derive(Clone, Debug)]
pub struct ReceivedWebhook {
    pub headers: HeaderMap,
    pub body: String,
}

/// A webhook receiver on loopback that answers 500 to its first `failures`
/// requests and 204 after.
pub struct WebhookReceiver {
    pub url: String,
    received: Arc<Mutex<Vec<ReceivedWebhook>>>,
}

impl WebhookReceiver {
    pub async fn start(failures: usize) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let received: Arc<Mutex<Vec<ReceivedWebhook>>> = Arc::default();
        let failures_left = Arc::new(AtomicUsize::new(failures));
        let log = received.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (log, failures_left) = (log.clone(), failures_left.clone());
                async move {
                    log.lock().unwrap().push(ReceivedWebhook { headers, body });
                    let fail = failures_left
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if fail {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let (address, _server) = serve(app).await;
        Self {
            url: format!("http://{address}/hook"),
            received,
        }
    }

    pub fn received(&self) -> Vec<ReceivedWebhook> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until `count` requests came (at most `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<ReceivedWebhook> {
        let until = Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < until,
                "the receiver got {} of {count} deliveries",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What a receiver does (README, Webhooks): the signature is the hex
/// HMAC-SHA256 of `timestamp.body` under the secret, and the timestamp is
/// recent. Returns the body.
pub fn verify_webhook(received: &ReceivedWebhook, secret: &str) -> Value {
    use hmac::{Hmac, Mac};
    let header = |name: &str| {
        received
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_owned()
    };
    let timestamp = header("x-agentrun-timestamp");
    let signature = header("x-agentrun-signature");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.{}", received.body).as_bytes());
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(signature, expected, "the signature does not verify");
    let sent_at: i64 = timestamp.parse().unwrap();
    let age = chrono::Utc::now().timestamp() - sent_at;
    assert!((-5..300).contains(&age), "timestamp {age} s old");
    serde_json::from_str(&received.body).unwrap()
}
