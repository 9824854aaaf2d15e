//! The `agentrun` command.

mod admin;
mod bench;
mod client;
mod dev;
mod team;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "agentrun",
    version,
    about = "Run LLM agents as durable, observable, budgeted jobs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole platform in this process on PostgreSQL (embedded mode).
    Dev(dev::DevArgs),
    /// Submit a run and follow its events live.
    Run(client::RunArgs),
    /// The team's runs: list (filtered), show, cancel.
    Runs(team::RunsArgs),
    /// The team's agents: put a new version, list.
    Agents(team::AgentsArgs),
    /// The team's usage and cost per day, and today's token budget.
    Usage(team::UsageArgs),
    /// Apply database migrations.
    Migrate {
        #[arg(long, env = "DATABASE_URL")]
        database_url: String,
    },
    /// Serve the scripted OpenAI-compatible mock LLM.
    MockLlm {
        #[arg(long, default_value = "127.0.0.1:8090")]
        listen: std::net::SocketAddr,
        /// JSON file: {"<model>": <script>, ...}
        #[arg(long, default_value = "examples/mock-llm.json")]
        scripts: std::path::PathBuf,
    },
    /// Print the Step Functions state machine (or write it to infra/).
    Asl {
        /// Write infra/statemachine/run.asl.json (and the policy.json beside
        /// it, which Terraform reads) instead of printing.
        #[arg(long)]
        write: bool,
    },
    /// Print the HTTP API's OpenAPI document (or write it to shared/).
    Openapi {
        /// Write shared/src/api/openapi.json (which /openapi.json serves)
        /// instead of printing.
        #[arg(long)]
        write: bool,
    },
    /// Measure the engine (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// Operator tasks: teams, limits, kill switches, keys, prices, plans.
    Admin(admin::AdminArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Dev(args) => {
            init_logs();
            dev::run(args).await
        }
        Command::Run(args) => {
            let code = client::run(args).await?;
            std::process::exit(code);
        }
        Command::Migrate { database_url } => {
            init_logs();
            agentrun::ledger::ensure_database(&database_url).await?;
            let applied = agentrun::ledger::Ledger::connect(&database_url, 2)?
                .migrate()
                .await?;
            println!("applied {applied} migration(s)");
            Ok(())
        }
        Command::MockLlm { listen, scripts } => {
            init_logs();
            let scripts = dev::read_scripts(&scripts)?;
            let mock = agentrun::mock_llm::MockLlm::start(listen, scripts).await?;
            println!("mock LLM listening on {}", mock.base_url());
            tokio::signal::ctrl_c().await?;
            Ok(())
        }
        Command::Admin(args) => admin::run(args).await,
        Command::Runs(args) => team::runs(args).await,
        Command::Agents(args) => team::agents(args).await,
        Command::Usage(args) => team::usage(args).await,
        Command::Asl { write } => {
            let policy = agentrun::policy::StepPolicy::default();
            let text = agentrun::asl::render(&policy);
            if write {
                std::fs::write(agentrun::asl::ASL_PATH, text)?;
                println!("wrote {}", agentrun::asl::ASL_PATH);
                let path = agentrun::asl::POLICY_PATH;
                std::fs::write(path, agentrun::asl::render_policy(&policy))?;
                println!("wrote {path}");
            } else {
                print!("{text}");
            }
            Ok(())
        }
        Command::Openapi { write } => {
            let text = agentrun::api::openapi::render();
            if write {
                std::fs::write(agentrun::api::openapi::OPENAPI_PATH, text)?;
                println!("wrote {}", agentrun::api::openapi::OPENAPI_PATH);
            } else {
                print!("{text}");
            }
            Ok(())
        }
        Command::Bench(args) => {
            init_logs_at("warn");
            bench::run(args).await
        }
    }
}

fn init_logs() {
    init_logs_at("info");
}

/// Logs to stderr; `RUST_LOG` overrides the default level.
fn init_logs_at(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .init();
}
