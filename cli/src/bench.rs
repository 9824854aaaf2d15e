//! `agentrun bench w1`: durable step throughput (BENCH.md W1). Drives the
//! engine's step directly, many runs at once, against the mock LLM over
//! loopback HTTP and a real PostgreSQL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentrun::adapters::openai::OpenAiSettings;
use agentrun::domain::{AgentSpec, RunId, StepNext};
use agentrun::embedded::{Embedded, EmbeddedSettings};
use agentrun::ledger::NewRun;
use agentrun::mock_llm::{Latency, MockLlm, MockScript, MockTurn};
use anyhow::Context;
use serde_json::json;
use tokio::sync::Mutex;

#[derive(clap::Args)]
pub struct BenchArgs {
    /// Workload (only `w1` so far).
    #[arg(default_value = "w1")]
    workload: String,
    #[arg(
        long,
        env = "BENCH_DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/agentrun_bench"
    )]
    database_url: String,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    steps: u32,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Mock LLM latency per call.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// PostgreSQL connections of the engine (ledger and hot store); default
    /// as `agentrun dev` (32).
    #[arg(long)]
    db_connections: Option<usize>,
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

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

pub async fn run(args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.workload == "w1",
        "unknown workload {:?}; known: w1",
        args.workload
    );
    anyhow::ensure!(args.steps >= 1, "--steps must be at least 1");
    let mut turns: Vec<MockTurn> = (1..args.steps)
        .map(|_| MockTurn::tool("noop", json!({"x": 1})))
        .collect();
    turns.push(MockTurn::json(json!({"ok": true})));
    let script = MockScript {
        turns,
        latency_ms: Latency::Fixed(args.latency_ms),
        ..MockScript::default()
    };
    let mock = MockLlm::start(
        "127.0.0.1:0".parse()?,
        HashMap::from([("bench".to_owned(), script)]),
    )
    .await?;

    let mut settings = EmbeddedSettings::new(
        args.database_url.clone(),
        OpenAiSettings::new(mock.base_url()),
    );
    if let Some(connections) = args.db_connections {
        settings.max_db_connections = connections;
    }
    let platform = Embedded::start(settings)
        .await
        .context("starting the engine")?;
    let engine = platform.engine.clone();
    let team = engine.ledger.ensure_team("bench").await?;
    // The benchmark measures steps, not budgets: lift the team's daily cap.
    let unlimited = agentrun::ledger::TeamChange {
        limits: Some(agentrun::domain::TeamLimits {
            daily_token_budget: i64::MAX / 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    engine.ledger.change_team(team, &unlimited).await?;
    let spec: AgentSpec = serde_json::from_value(json!({
        "model": "bench",
        "instructions": "Benchmark agent.",
        "tools": [{"name": "noop", "kind": "builtin", "builtin": "echo"}],
        "output_schema": {"type": "object", "required": ["ok"]},
        "limits": {"max_steps": args.steps + 5},
    }))?;
    let (agent, _) = engine.ledger.put_agent(team, "bench", &spec).await?;

    let commits_before = xact_commits(&engine.ledger).await?;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let stop_at = started + Duration::from_secs(args.seconds);
    let step_times = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let engine = engine.clone();
        let agent = agent.clone();
        let step_times = step_times.clone();
        workers.push(tokio::spawn(async move {
            let mut runs = 0u64;
            let mut local = Vec::new();
            while Instant::now() < stop_at {
                let id = RunId::new();
                engine
                    .ledger
                    .create_run(&NewRun {
                        id,
                        team_id: team,
                        agent: agent.name.clone(),
                        version: agent.version,
                        input: json!("benchmark"),
                        metadata: json!({}),
                        limits: agent.spec.limits.clone(),
                        run_fee_micros: 0,
                        idempotency: None,
                    })
                    .await?;
                let mut step_no = 1;
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
    let steps = times.len() as f64;
    let latency = Duration::from_millis(args.latency_ms);
    let overhead = |p| percentile(&times, p).saturating_sub(latency);
    println!("W1 durable step throughput");
    println!(
        "  concurrency {} runs x {} steps, {:.1} s, mock latency {} ms",
        args.concurrency,
        args.steps,
        elapsed.as_secs_f64(),
        args.latency_ms
    );
    println!("  runs completed        {runs}");
    println!("  steps committed       {}", times.len());
    println!(
        "  steps/s               {:.0}",
        steps / elapsed.as_secs_f64()
    );
    println!(
        "  step overhead p50     {:.2} ms",
        overhead(0.5).as_secs_f64() * 1000.0
    );
    println!(
        "  step overhead p99     {:.2} ms",
        overhead(0.99).as_secs_f64() * 1000.0
    );
    println!(
        "  PG transactions/step  {:.2} (xact_commit delta, reads included)",
        commits as f64 / steps.max(1.0)
    );
    println!(
        "  CPU s per 1,000 steps {:.3} (this process: engine + mock LLM)",
        cpu / steps.max(1.0) * 1000.0
    );
    println!(
        "  machine               {} cores",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    Ok(())
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
