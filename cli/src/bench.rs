//! `agentrun bench w1|w2|w3|w4`: the benchmark workloads (BENCH.md), each on
//! the embedded engine against a real PostgreSQL and the mock LLM over
//! loopback HTTP. `scripts/bench.sh` runs them beside their references.
//!
//! - W1: durable step throughput — many runs stepping as fast as they can.
//! - W2: many slow runs in flight — dispatch and memory under load.
//! - W3: SSE fan-out — many subscribers and reconnects, beside a plain
//!   broadcast SSE server measured the same way.
//! - W4: the API's front door — `POST /v1/runs` at fixed rates.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrun::adapters::llm_http::ProviderSettings;
use agentrun::api::StreamLimits;
use agentrun::domain::{AgentSpec, RunId, StepNext, TeamId};
use agentrun::embedded::{Embedded, EmbeddedSettings};
use agentrun::ledger::{AgentVersion, NewRun};
use agentrun::mock_llm::{Latency, MockLlm, MockScript, MockTurn};
use agentrun::ports::Orchestrator;
use agentrun::sse_client::SseParser;
use anyhow::Context;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::Mutex;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Workload: w1, w2, w3 or w4.
    #[arg(default_value = "w1")]
    workload: String,
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/agentrun_bench"
    )]
    database_url: String,
    /// W1: runs stepping at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Steps per run (W1 10, W2 5, W3 5 unless set).
    #[arg(long)]
    steps: Option<u32>,
    /// W1: how long to run; W4: how long at each rate.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Mock LLM latency per call (W1 0, W2 2000, W3 400 unless set).
    #[arg(long)]
    latency_ms: Option<u64>,
    /// PostgreSQL connections of the engine (ledger and hot store); default
    /// as `agentrun dev` (32).
    #[arg(long)]
    db_connections: Option<usize>,
    /// W2: runs started at once (10,000); W3: runs streamed (200).
    #[arg(long)]
    runs: Option<usize>,
    /// W3: subscribers per run.
    #[arg(long, default_value_t = 10)]
    subscribers: usize,
    /// W4: request rates to try, per second.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "100,200,300,400,500,600,700,800,1000"
    )]
    rates: Vec<u64>,
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    match args.workload.as_str() {
        "w1" => w1(&args).await,
        "w2" => w2(&args).await,
        "w3" => w3(&args).await,
        "w4" => w4(&args).await,
        other => anyhow::bail!("unknown workload {other:?}; known: w1, w2, w3, w4"),
    }
}

fn cpu_seconds() -> f64 {
    // utime and stime are fields 14 and 15 of /proc/self/stat, in clock ticks (100 Hz).
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (ticks(11) + ticks(12)) / 100.0
}

/// A field of /proc/self/status in MiB (`VmRSS`, `VmHWM`).
fn memory_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

fn cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// The engine on the benchmark database with the mock LLM, a team without
/// limits and an agent of `steps` steps (a built-in tool call each, then a
/// schema-checked answer).
struct Bench {
    platform: Embedded,
    team: TeamId,
    agent: AgentVersion,
    mock: MockLlm,
}

impl Bench {
    async fn start(args: &BenchArgs, steps: u32, latency_ms: u64) -> anyhow::Result<Self> {
        let mut turns: Vec<MockTurn> = (1..steps)
            .map(|_| MockTurn::tool("noop", json!({"x": 1})))
            .collect();
        turns.push(MockTurn::json(json!({"ok": true})));
        let script = MockScript {
            turns,
            latency_ms: Latency::Fixed(latency_ms),
            ..MockScript::default()
        };
        let mock = MockLlm::start(
            "127.0.0.1:0".parse()?,
            HashMap::from([("bench".to_owned(), script)]),
        )
        .await?;
        let mut settings = EmbeddedSettings::new(
            args.database_url.clone(),
            ProviderSettings::new(mock.base_url()),
        );
        if let Some(connections) = args.db_connections {
            settings.max_db_connections = connections;
        }
        settings.stream_limits = StreamLimits {
            per_team: 100_000,
            total: 100_000,
            ..StreamLimits::default()
        };
        let platform = Embedded::start(settings)
            .await
            .context("starting the engine")?;
        let engine = &platform.engine;
        let team = engine
            .ledger
            .ensure_team(&format!("bench-{}", uuid::Uuid::new_v4().simple()))
            .await?;
        // The benchmark measures the platform, not the team's limits.
        let unlimited = agentrun::ledger::TeamChange {
            limits: Some(agentrun::domain::TeamLimits {
                daily_token_budget: i64::MAX / 2,
                max_concurrent_runs: 1_000_000,
                runs_per_second: 1_000_000.0,
                run_burst: 1_000_000,
            }),
            ..Default::default()
        };
        engine.ledger.change_team(team, &unlimited).await?;
        let spec: AgentSpec = serde_json::from_value(json!({
            "model": "bench",
            "instructions": "Benchmark agent.",
            "tools": [{"name": "noop", "kind": "builtin", "builtin": "echo"}],
            "output_schema": {"type": "object", "required": ["ok"]},
            "limits": {"max_steps": steps + 5},
        }))?;
        let (agent, _) = engine.ledger.put_agent(team, "bench", &spec).await?;
        Ok(Self {
            platform,
            team,
            agent,
            mock,
        })
    }

    fn new_run(&self, input: Value) -> NewRun {
        NewRun {
            id: RunId::new(),
            team_id: self.team,
            agent: self.agent.name.clone(),
            version: self.agent.version,
            input,
            metadata: json!({}),
            limits: self.agent.spec.limits.clone(),
            run_fee_micros: 0,
            idempotency: None,
            webhook: None,
            continues: None,
        }
    }

    async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        let client = self.platform.engine.ledger.pool().get().await?;
        Ok(client.query_one(sql, &[&self.team.0]).await?.get(0))
    }
}

async fn xact_commits(ledger: &agentrun::ledger::Ledger) -> anyhow::Result<i64> {
    let client = ledger.pool().get().await?;
    let row = client
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

/// W1: runs that step as fast as they can, each step committed before the next.
async fn w1(args: &BenchArgs) -> anyhow::Result<()> {
    let steps = args.steps.unwrap_or(10);
    let latency_ms = args.latency_ms.unwrap_or(0);
    anyhow::ensure!(steps >= 1, "--steps must be at least 1");
    let bench = Arc::new(Bench::start(args, steps, latency_ms).await?);
    let engine = bench.platform.engine.clone();
    let commits_before = xact_commits(&engine.ledger).await?;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.seconds);
    let step_times = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (bench, engine, step_times) = (bench.clone(), engine.clone(), step_times.clone());
        workers.push(tokio::spawn(async move {
            let mut runs = 0u64;
            let mut local = Vec::new();
            while Instant::now() < stop_at {
                let new = bench.new_run(json!("benchmark"));
                let id = new.id;
                engine.ledger.create_run(&new).await?;
                let mut step_no = 1;
                // The engine's own driver memory, as the embedded orchestrator keeps it.
                let mut memory = agentrun::engine::RunMemory::for_driver();
                loop {
                    let t = Instant::now();
                    let deadline = tokio::time::Instant::now()
                        + agentrun::policy::StepPolicy::default().step_budget();
                    let outcome = engine
                        .execute_step_with(id, step_no, deadline, &mut memory)
                        .await?;
                    local.push(t.elapsed());
                    if outcome.next == StepNext::Finish {
                        anyhow::ensure!(
                            outcome.status == Some(agentrun::domain::RunStatus::Succeeded),
                            "run {id} ended {:?}",
                            outcome.stop_reason
                        );
                        break;
                    }
                    step_no = outcome.step_no;
                }
                runs += 1;
            }
            step_times.lock().await.extend(local);
            Ok::<u64, anyhow::Error>(runs)
        }));
    }
    let mut runs = 0;
    for worker in workers {
        runs += worker.await??;
    }
    let elapsed = started.elapsed();
    let cpu = cpu_seconds() - cpu_before;
    let commits = xact_commits(&engine.ledger).await? - commits_before;
    let mut times = step_times.lock().await.clone();
    times.sort();
    let steps_done = times.len() as f64;
    let latency = Duration::from_millis(latency_ms);
    let overhead = |p| percentile(&times, p).saturating_sub(latency);
    println!("W1 durable step throughput");
    println!(
        "  concurrency {} runs x {steps} steps, {:.1} s, mock latency {latency_ms} ms",
        args.concurrency,
        elapsed.as_secs_f64()
    );
    println!("  runs completed        {runs}");
    println!("  steps committed       {}", times.len());
    println!(
        "  steps/s               {:.0}",
        steps_done / elapsed.as_secs_f64()
    );
    println!("  step overhead p50     {:.2} ms", ms(overhead(0.5)));
    println!("  step overhead p99     {:.2} ms", ms(overhead(0.99)));
    println!(
        "  PG transactions/step  {:.2} (xact_commit delta, reads included)",
        commits as f64 / steps_done.max(1.0)
    );
    println!(
        "  CPU s per 1,000 steps {:.3} (this process: engine + mock LLM)",
        cpu / steps_done.max(1.0) * 1000.0
    );
    println!("  machine               {} cores", cores());
    Ok(())
}

/// W2: many slow runs started at once, driven by the embedded orchestrator.
async fn w2(args: &BenchArgs) -> anyhow::Result<()> {
    let runs = args.runs.unwrap_or(10_000);
    let steps = args.steps.unwrap_or(5);
    let latency_ms = args.latency_ms.unwrap_or(2_000);
    let bench = Bench::start(args, steps, latency_ms).await?;
    let engine = &bench.platform.engine;
    let rss_before = memory_mib("VmRSS");
    let mut ids = Vec::with_capacity(runs);
    for n in 0..runs {
        let new = bench.new_run(json!(format!("run {n}")));
        engine.ledger.create_run(&new).await?;
        ids.push(new.id);
    }
    let started = Instant::now();
    for id in &ids {
        bench.platform.orchestrator.start(*id).await?;
    }
    let dispatched = started.elapsed();
    loop {
        let open = bench
            .count(
                "SELECT count(*) FROM runs WHERE team_id = $1 AND status IN ('queued', 'running')",
            )
            .await?;
        if open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let completed = started.elapsed();
    let client = engine.ledger.pool().get().await?;
    let durations: Vec<Duration> = client
        .query(
            "SELECT extract(epoch FROM finished_at - started_at)::float8 FROM runs WHERE team_id = $1",
            &[&bench.team.0],
        )
        .await?
        .iter()
        .map(|row| Duration::from_secs_f64(row.get::<_, f64>(0).max(0.0)))
        .collect();
    let mut lags: Vec<Duration> = client
        .query(
            "SELECT extract(epoch FROM s.started_at - lag(s.finished_at)
                        OVER (PARTITION BY s.run_id ORDER BY s.step_no))::float8
             FROM run_steps s JOIN runs r ON r.id = s.run_id WHERE r.team_id = $1",
            &[&bench.team.0],
        )
        .await?
        .iter()
        .filter_map(|row| row.get::<_, Option<f64>>(0))
        .map(|seconds| Duration::from_secs_f64(seconds.max(0.0)))
        .collect();
    lags.sort();
    let mut durations = durations;
    durations.sort();
    let succeeded = bench
        .count("SELECT count(*) FROM runs WHERE team_id = $1 AND status = 'succeeded'")
        .await?;
    let committed = bench
        .count(
            "SELECT count(*) FROM run_steps s JOIN runs r ON r.id = s.run_id WHERE r.team_id = $1",
        )
        .await?;
    let requests = bench.mock.state.requests("bench") as i64;
    let expected = (runs as i64) * i64::from(steps);
    let ideal = Duration::from_millis(latency_ms * u64::from(steps));
    println!("W2 many slow runs in flight");
    println!(
        "  runs {runs} x {steps} steps, mock latency {latency_ms} ms (ideal {:.1} s a run)",
        ideal.as_secs_f64()
    );
    println!("  all started in        {:.2} s", dispatched.as_secs_f64());
    println!(
        "  all finished in       {:.1} s ({:.2} x ideal)",
        completed.as_secs_f64(),
        completed.as_secs_f64() / ideal.as_secs_f64()
    );
    println!(
        "  run duration p50/p99  {:.1} / {:.1} s",
        percentile(&durations, 0.5).as_secs_f64(),
        percentile(&durations, 0.99).as_secs_f64()
    );
    println!(
        "  dispatch lag p50/p99  {:.1} / {:.1} ms (a step's commit to the next step's start)",
        ms(percentile(&lags, 0.5)),
        ms(percentile(&lags, 0.99))
    );
    println!(
        "  peak RSS              {:.0} MiB ({:.0} MiB before the runs)",
        memory_mib("VmHWM"),
        rss_before
    );
    println!(
        "  lost / duplicated     {} / {} (runs succeeded {succeeded} of {runs}; steps committed {committed}, LLM calls {requests}, of {expected})",
        runs as i64 - succeeded,
        (committed - expected).max(0) + (requests - expected).max(0)
    );
    println!("  machine               {} cores", cores());
    Ok(())
}

/// One SSE subscriber: reads a stream to its end (or, for a reconnecting
/// one, for `cut_after` events, then again from Last-Event-ID). Returns the
/// seqs seen and each event's delay from its commit.
async fn subscribe(
    http: reqwest::Client,
    url: String,
    key: String,
    cut_after: Option<usize>,
) -> anyhow::Result<(Vec<i64>, Vec<Duration>)> {
    let (mut seqs, mut delays) = (Vec::new(), Vec::new());
    let mut last: Option<i64> = None;
    let mut cut = cut_after;
    loop {
        let mut request = http.get(&url).bearer_auth(&key);
        if let Some(seq) = last {
            request = request.header("last-event-id", seq.to_string());
        }
        let mut body = request.send().await?.error_for_status()?.bytes_stream();
        // An event committed before this stream was open counts from the
        // opening: until then there was nobody to deliver it to.
        let opened = chrono::Utc::now();
        let mut parser = SseParser::default();
        let mut ended = false;
        'stream: while let Some(chunk) = body.next().await {
            for event in parser.push(&chunk?) {
                let Some(seq) = event.id.as_deref().and_then(|id| id.parse().ok()) else {
                    continue;
                };
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                if let Some(at) = data["created_at"]
                    .as_str()
                    .and_then(|at| at.parse::<chrono::DateTime<chrono::Utc>>().ok())
                {
                    delays.push(
                        (chrono::Utc::now() - at.max(opened))
                            .to_std()
                            .unwrap_or_default(),
                    );
                }
                seqs.push(seq);
                last = Some(seq);
                if agentrun::domain::event::is_terminal_event(&event.event) {
                    ended = true;
                    break 'stream;
                }
                if cut.is_some_and(|n| seqs.len() >= n) {
                    cut = None;
                    break 'stream;
                }
            }
        }
        if ended {
            return Ok((seqs, delays));
        }
    }
}

/// W3: many subscribers of running runs, some reconnecting mid-run; then
/// the same number of subscribers of a plain broadcast SSE server.
async fn w3(args: &BenchArgs) -> anyhow::Result<()> {
    let runs = args.runs.unwrap_or(200);
    let steps = args.steps.unwrap_or(5);
    let latency_ms = args.latency_ms.unwrap_or(400);
    let per_run = args.subscribers;
    let bench = Bench::start(args, steps, latency_ms).await?;
    let engine = &bench.platform.engine;
    let key = engine.ledger.issue_api_key(bench.team, None).await?.secret;
    let listener = agentrun::listen::bind(([127, 0, 0, 1], 0).into())?;
    let base = format!("http://{}", listener.local_addr()?);
    let router = bench.platform.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;

    let rss_before = memory_mib("VmRSS");
    let mut ids = Vec::with_capacity(runs);
    for n in 0..runs {
        let new = bench.new_run(json!(format!("run {n}")));
        engine.ledger.create_run(&new).await?;
        ids.push(new.id);
    }
    let mut subscribers = Vec::new();
    for id in &ids {
        for n in 0..per_run {
            // The first subscriber of each run reconnects after 3 events.
            let cut = (n == 0).then_some(3);
            let url = format!("{base}/v1/runs/{id}/events");
            subscribers.push((
                *id,
                tokio::spawn(subscribe(http.clone(), url, key.clone(), cut)),
            ));
        }
    }
    // Every subscriber holds its stream before the runs start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let peak_probe = tokio::spawn(async {
        let mut peak: f64 = 0.0;
        for _ in 0..200 {
            peak = peak.max(memory_mib("VmRSS"));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak
    });
    for id in &ids {
        bench.platform.orchestrator.start(*id).await?;
    }
    let client = engine.ledger.pool().get().await?;
    let (mut missed, mut duplicated) = (0usize, 0usize);
    let mut delays = Vec::new();
    let mut expected_cache: HashMap<RunId, Vec<i64>> = HashMap::new();
    for (id, subscriber) in subscribers {
        let (seqs, mut seen_delays) = subscriber.await??;
        delays.append(&mut seen_delays);
        if let std::collections::hash_map::Entry::Vacant(entry) = expected_cache.entry(id) {
            let rows = client
                .query(
                    "SELECT seq FROM run_events WHERE run_id = $1 ORDER BY seq",
                    &[&id.0],
                )
                .await?;
            entry.insert(rows.iter().map(|row| row.get(0)).collect());
        }
        let expected = &expected_cache[&id];
        let mut unique = seqs.clone();
        unique.sort();
        unique.dedup();
        duplicated += seqs.len() - unique.len();
        missed += expected.iter().filter(|seq| !unique.contains(seq)).count();
    }
    let peak = peak_probe.await.unwrap_or(0.0);
    delays.sort();
    let connections = runs * per_run;
    println!("W3 SSE fan-out");
    println!(
        "  {runs} runs x {per_run} subscribers = {connections} streams, {runs} reconnects with Last-Event-ID; {steps} steps, mock latency {latency_ms} ms"
    );
    println!(
        "  commit to client p50/p99   {:.1} / {:.1} ms ({} events delivered; an event older than its stream counts from the stream's opening)",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        delays.len()
    );
    println!("  missed / duplicated        {missed} / {duplicated}");
    println!(
        "  RSS per stream             {:.1} KiB (server and clients in one process)",
        (peak - rss_before).max(0.0) * 1024.0 / connections as f64
    );
    server.abort();
    reference_sse(connections, 20).await?;
    println!("  machine                    {} cores", cores());
    Ok(())
}

/// The reference for W3: a plain axum broadcast SSE server, `subscribers`
/// streams, `events` events 100 ms apart, the same latency measure.
async fn reference_sse(subscribers: usize, events: usize) -> anyhow::Result<()> {
    use axum::response::sse::{Event, Sse};
    let (tx, _) = tokio::sync::broadcast::channel::<String>(1024);
    let sender = tx.clone();
    let app = axum::Router::new().route(
        "/stream",
        axum::routing::get(move || {
            let rx = sender.subscribe();
            async move {
                let stream = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(
                    |message| async move {
                        message.ok().map(|data| {
                            Ok::<_, std::convert::Infallible>(Event::default().data(data))
                        })
                    },
                );
                Sse::new(stream)
            }
        }),
    );
    let listener = agentrun::listen::bind(([127, 0, 0, 1], 0).into())?;
    let url = format!("http://{}/stream", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    let mut clients = Vec::new();
    for _ in 0..subscribers {
        let (http, url) = (http.clone(), url.clone());
        clients.push(tokio::spawn(async move {
            let mut delays = Vec::new();
            let mut body = http.get(&url).send().await?.bytes_stream();
            let mut parser = SseParser::default();
            while let Some(chunk) = body.next().await {
                for event in parser.push(&chunk?) {
                    let sent: i64 = event.data.parse().unwrap_or(0);
                    let now = chrono::Utc::now().timestamp_micros();
                    delays.push(Duration::from_micros((now - sent).max(0) as u64));
                    if delays.len() >= events {
                        return Ok::<_, anyhow::Error>(delays);
                    }
                }
            }
            Ok(delays)
        }));
    }
    while tx.receiver_count() < subscribers {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..events {
        let _ = tx.send(chrono::Utc::now().timestamp_micros().to_string());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut delays = Vec::new();
    for client in clients {
        delays.append(&mut client.await??);
    }
    delays.sort();
    println!(
        "  reference: broadcast SSE   p50/p99 {:.1} / {:.1} ms ({subscribers} streams, {} events delivered)",
        ms(percentile(&delays, 0.5)),
        ms(percentile(&delays, 0.99)),
        delays.len()
    );
    server.abort();
    Ok(())
}

/// W4: `POST /v1/runs` with Idempotency-Keys (one in ten repeated) at fixed
/// rates; the highest rate with p99 under 25 ms.
async fn w4(args: &BenchArgs) -> anyhow::Result<()> {
    let bench = Bench::start(args, args.steps.unwrap_or(1), args.latency_ms.unwrap_or(0)).await?;
    let engine = &bench.platform.engine;
    let key = engine.ledger.issue_api_key(bench.team, None).await?.secret;
    let listener = agentrun::listen::bind(([127, 0, 0, 1], 0).into())?;
    let url = format!("http://{}/v1/runs", listener.local_addr()?);
    let router = bench.platform.router();
    let server = tokio::spawn(async move { axum::serve(listener, router).await });
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    println!("W4 API front door: POST /v1/runs with Idempotency-Keys, 10 % repeated (each rate for {} s after 1 s not counted)", args.seconds);
    let mut best = None;
    let mut sent_keys = 0u64;
    for &rate in &args.rates {
        // The first second at each rate warms the pools (connections
        // opened, statements prepared) and is not counted.
        let warm_up = rate;
        let total = rate * args.seconds + warm_up;
        let interval = Duration::from_secs_f64(1.0 / rate as f64);
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let mut requests = Vec::with_capacity(total as usize);
        let started = Instant::now();
        for n in 0..total {
            ticker.tick().await;
            // Every tenth request repeats the key (and body) of an earlier one.
            let key_no = if n % 10 == 9 && sent_keys > 0 {
                sent_keys - 1
            } else {
                sent_keys += 1;
                sent_keys
            };
            let request = http
                .post(&url)
                .bearer_auth(&key)
                .header("idempotency-key", format!("w4-{key_no}"))
                .json(&json!({"agent": "bench", "input": format!("request {key_no}")}));
            requests.push(tokio::spawn(async move {
                let at = Instant::now();
                let status = request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0);
                (status, at.elapsed())
            }));
        }
        let mut latencies = Vec::with_capacity(requests.len());
        let mut refused = 0;
        for (n, request) in requests.into_iter().enumerate() {
            let (status, latency) = request.await?;
            if (n as u64) < warm_up {
                continue;
            }
            if status != 202 {
                refused += 1;
            }
            latencies.push(latency);
        }
        let achieved = total as f64 / started.elapsed().as_secs_f64();
        latencies.sort();
        let p99 = percentile(&latencies, 0.99);
        println!(
            "  {rate:>5} req/s offered, {achieved:>6.0} sent: p50 {:.1} ms, p99 {:.1} ms, {refused} not 202",
            ms(percentile(&latencies, 0.5)),
            ms(p99)
        );
        if p99 < Duration::from_millis(25) && refused == 0 {
            best = Some(rate);
        }
    }
    let runs = bench
        .count("SELECT count(*) FROM runs WHERE team_id = $1")
        .await?;
    println!(
        "  highest rate with p99 < 25 ms  {}",
        best.map_or("none".to_owned(), |r| format!("{r} req/s"))
    );
    println!(
        "  duplicate runs                 {} ({runs} runs for {sent_keys} distinct keys)",
        (runs - sent_keys as i64).max(0)
    );
    println!("  machine                        {} cores", cores());
    server.abort();
    Ok(())
}
