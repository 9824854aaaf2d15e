//! `agentrun dev`: the embedded platform with a demo team, the example
//! agents and (unless a real provider is configured) the mock LLM.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use agentrun::adapters::llm_http::ProviderSettings;
use agentrun::embedded::{load_agent_dir, Embedded, EmbeddedSettings};
use agentrun::mock_llm::{parse_scripts, MockLlm, MockScript};
use agentrun::outbound::OutboundAllow;
use anyhow::Context;

#[derive(clap::Args)]
pub struct DevArgs {
    #[arg(long, env = "AGENTRUN_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/agentrun_dev"
    )]
    database_url: String,
    /// Agent configs to load for the demo team (`<name>.json`).
    #[arg(long, default_value = "examples/agents")]
    agents: PathBuf,
    /// Scripts for the mock LLM.
    #[arg(long, default_value = "examples/mock-llm.json")]
    mock_scripts: PathBuf,
    /// A real OpenAI-compatible provider instead of the mock.
    #[arg(long, env = "OPENAI_BASE_URL")]
    openai_base_url: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    openai_api_key: Option<String>,
    /// Agents with `provider: "anthropic"` call the Anthropic API with this
    /// key; without it they call the mock.
    #[arg(long, env = "ANTHROPIC_API_KEY", hide_env_values = true)]
    anthropic_api_key: Option<String>,
    #[arg(long, env = "ANTHROPIC_BASE_URL", default_value = agentrun::adapters::anthropic::DEFAULT_BASE_URL)]
    anthropic_base_url: String,
    /// Where `dev.env` (URL and API key) is written.
    #[arg(long, default_value = ".agentrun")]
    state_dir: PathBuf,
    /// The operator's key for `/v1/admin`; generated (and kept in
    /// `dev.env`) when unset.
    #[arg(long, env = "AGENTRUN_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Step retry base interval in milliseconds.
    #[arg(long, env = "AGENTRUN_RETRY_BASE_MS", default_value_t = 2000)]
    retry_base_ms: u64,
    /// Internal destinations HTTP tools may reach (comma-separated CIDRs,
    /// addresses and host names, e.g. `127.0.0.1,tools.internal`); none by default.
    #[arg(long, env = "AGENTRUN_OUTBOUND_ALLOW", default_value = "")]
    outbound_allow: String,
    /// The wait before a failed webhook delivery is tried again, in
    /// milliseconds; it doubles after each failure, up to an hour.
    #[arg(
        long,
        env = "AGENTRUN_WEBHOOK_FIRST_RETRY_MS",
        default_value_t = 10_000
    )]
    webhook_first_retry_ms: u64,
    /// An event stream ends after this many seconds; its client resumes
    /// where it was (Last-Event-ID).
    #[arg(long, env = "AGENTRUN_STREAM_MAX_SECONDS", default_value_t = 600)]
    stream_max_seconds: u64,
}

/// What `agentrun dev` charges for the mock's models when they have no
/// price: micros per million tokens (input, output).
const DEMO_INPUT_PRICE: i64 = 150_000;
const DEMO_OUTPUT_PRICE: i64 = 600_000;

/// Writes a file only its owner can read (it holds the admin key).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An older file keeps its mode on open; tighten it too.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    file.write_all(text.as_bytes())
}

pub fn read_scripts(path: &Path) -> anyhow::Result<HashMap<String, MockScript>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_scripts(&text).with_context(|| format!("parsing {}", path.display()))
}

pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    // The mock answers for each provider not given; it lives as long as
    // the server.
    let use_mock = args.openai_base_url.is_none() || args.anthropic_api_key.is_none();
    let scripts = if use_mock && args.mock_scripts.exists() {
        read_scripts(&args.mock_scripts)?
    } else {
        HashMap::new()
    };
    let mock_models: Vec<String> = scripts.keys().cloned().collect();
    let mock = if use_mock {
        let mock = MockLlm::start("127.0.0.1:0".parse()?, scripts).await?;
        tracing::info!(url = %mock.base_url(), "mock LLM started");
        Some(mock)
    } else {
        None
    };
    let mock_url = |url: fn(&MockLlm) -> String| mock.as_ref().map(url).unwrap_or_default();
    let llm = match &args.openai_base_url {
        Some(url) => ProviderSettings {
            api_key: args.openai_api_key.clone().map(Into::into),
            ..ProviderSettings::new(url.clone())
        },
        None => ProviderSettings::new(mock_url(MockLlm::base_url)),
    };
    let anthropic = match &args.anthropic_api_key {
        Some(key) => ProviderSettings {
            api_key: Some(key.as_str().into()),
            ..ProviderSettings::new(args.anthropic_base_url.clone())
        },
        None => ProviderSettings::new(mock_url(MockLlm::anthropic_base_url)),
    };
    let env_file = args.state_dir.join("dev.env");
    let saved = read_env_file(&env_file);
    let admin_key = args
        .admin_key
        .clone()
        .or_else(|| saved.get("AGENTRUN_ADMIN_KEY").cloned())
        .unwrap_or_else(|| format!("adm_{}", uuid::Uuid::new_v4().simple()));
    let mut settings = EmbeddedSettings::new(args.database_url.clone(), llm);
    settings.anthropic = anthropic;
    settings.policy.retry_base = Duration::from_millis(args.retry_base_ms);
    settings.admin_key = Some(admin_key.as_str().into());
    settings.webhooks.first_retry = Duration::from_millis(args.webhook_first_retry_ms);
    settings.stream_limits.max_lifetime = Duration::from_secs(args.stream_max_seconds.max(1));
    settings.outbound_allow = OutboundAllow::parse(&args.outbound_allow)
        .map_err(|e| anyhow::anyhow!("AGENTRUN_OUTBOUND_ALLOW: {e}"))?;
    let platform = Embedded::start(settings)
        .await
        .with_context(|| format!("starting on {}", redact(&args.database_url)))?;
    let ledger = &platform.engine.ledger;
    let team = ledger.ensure_team("demo").await?;
    if args.agents.is_dir() {
        for (name, version, created) in load_agent_dir(ledger, team, &args.agents).await? {
            tracing::info!(agent = %name, version, new = created, "agent loaded");
        }
    }

    // The mock's models get a price, so usage shows money; one set by the
    // operator stays.
    if mock.is_some() {
        let priced: Vec<String> = ledger
            .list_prices()
            .await?
            .into_iter()
            .map(|p| p.model)
            .collect();
        for model in mock_models.iter().filter(|m| !priced.contains(m)) {
            ledger
                .set_price(model, DEMO_INPUT_PRICE, DEMO_OUTPUT_PRICE)
                .await?;
        }
    }
    let key = match saved.get("AGENTRUN_API_KEY") {
        Some(key) if ledger.authenticate(key).await? == Some(team) => key.clone(),
        _ => ledger.issue_api_key(team, None).await?.secret,
    };
    let listener =
        agentrun::listen::bind(args.listen).with_context(|| format!("binding {}", args.listen))?;
    let url = format!("http://{}", listener.local_addr()?);
    std::fs::create_dir_all(&args.state_dir)?;
    write_private(
        &env_file,
        &format!("AGENTRUN_URL={url}\nAGENTRUN_API_KEY={key}\nAGENTRUN_ADMIN_KEY={admin_key}\n"),
    )
    .with_context(|| format!("writing {}", env_file.display()))?;

    println!("agentrun dev is serving {url}");
    println!(
        "  team: demo   API key: {key}   (also in {})",
        env_file.display()
    );
    println!("  admin key: {admin_key}");
    println!("  console: {url}/console (sign in with the API key)");
    println!("  try:  cargo run -q --bin agentrun -- run --agent support-triage --input 'I was charged twice'");

    let router = platform.router();
    let resumed = platform.resume().await?;
    if resumed > 0 {
        println!("  resumed {resumed} unfinished run(s)");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// The server URL and a key: from flags or the environment first, else from
/// `dev.env` (`AGENTRUN_URL` and `key_var`).
pub fn server_and_key(
    url: Option<String>,
    key: Option<String>,
    env_file: &Path,
    key_var: &str,
) -> anyhow::Result<(String, String)> {
    let file = read_env_file(env_file);
    let url = url
        .or_else(|| file.get("AGENTRUN_URL").cloned())
        .context("no server URL: start `agentrun dev`, or set AGENTRUN_URL")?;
    let key = key
        .or_else(|| file.get(key_var).cloned())
        .with_context(|| format!("no key: set {key_var}"))?;
    Ok((url, key))
}

/// `KEY=value` lines; a missing file is empty.
pub fn read_env_file(path: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://…@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}
