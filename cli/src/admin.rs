//! `agentrun admin …`: the operator's tasks over the admin API, with the
//! admin key from `AGENTRUN_ADMIN_KEY` or `.agentrun/dev.env`.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Map, Value};

use crate::dev::server_and_key;

#[derive(Args)]
pub struct AdminArgs {
    #[command(subcommand)]
    command: AdminCommand,
    #[arg(long, env = "AGENTRUN_URL", global = true)]
    url: Option<String>,
    #[arg(
        long,
        env = "AGENTRUN_ADMIN_KEY",
        hide_env_values = true,
        global = true
    )]
    admin_key: Option<String>,
    #[arg(long, default_value = ".agentrun/dev.env", global = true)]
    env_file: PathBuf,
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Teams: create, list, show, change limits and kill switches.
    #[command(subcommand)]
    Teams(TeamCommand),
    /// API keys: issue (shown once), list, revoke.
    #[command(subcommand)]
    Keys(KeyCommand),
    /// Model prices (micro-units per million tokens).
    #[command(subcommand)]
    Prices(PriceCommand),
    /// Plans and their fee per run (micro-units).
    #[command(subcommand)]
    Plans(PlanCommand),
    /// Free hot state left by runs that ended in a crash.
    Reconcile,
}

#[derive(Args, Default)]
struct LimitArgs {
    #[arg(long)]
    max_concurrent_runs: Option<i32>,
    #[arg(long)]
    daily_token_budget: Option<i64>,
    #[arg(long)]
    runs_per_second: Option<f64>,
    #[arg(long)]
    run_burst: Option<i32>,
}

impl LimitArgs {
    fn json(&self) -> Option<Value> {
        let mut limits = Map::new();
        let mut put = |name: &str, value: Option<Value>| {
            if let Some(value) = value {
                limits.insert(name.to_owned(), value);
            }
        };
        put(
            "max_concurrent_runs",
            self.max_concurrent_runs.map(Value::from),
        );
        put(
            "daily_token_budget",
            self.daily_token_budget.map(Value::from),
        );
        put("runs_per_second", self.runs_per_second.map(Value::from));
        put("run_burst", self.run_burst.map(Value::from));
        (!limits.is_empty()).then_some(Value::Object(limits))
    }
}

#[derive(Subcommand)]
enum TeamCommand {
    Create {
        name: String,
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    List,
    Show {
        team_id: String,
    },
    /// Change limits, plan, or switch the team or its agents off and on.
    Set {
        team_id: String,
        #[arg(long)]
        plan: Option<String>,
        #[command(flatten)]
        limits: LimitArgs,
        /// Switch the team off, with this reason.
        #[arg(long, conflicts_with = "on")]
        off: Option<String>,
        /// Switch the team back on.
        #[arg(long)]
        on: bool,
        /// Switch an agent off: NAME=REASON (repeatable).
        #[arg(long, value_name = "NAME=REASON")]
        agent_off: Vec<String>,
        /// Switch an agent back on (repeatable).
        #[arg(long, value_name = "NAME")]
        agent_on: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    Create {
        team_id: String,
        /// When the key stops working (RFC 3339, e.g. 2027-01-01T00:00:00Z).
        #[arg(long)]
        expires_at: Option<String>,
    },
    List {
        team_id: String,
    },
    Revoke {
        key_id: String,
    },
}

#[derive(Subcommand)]
enum PriceCommand {
    Set {
        model: String,
        #[arg(long)]
        input: i64,
        #[arg(long)]
        output: i64,
    },
    List,
}

#[derive(Subcommand)]
enum PlanCommand {
    Set {
        name: String,
        #[arg(long)]
        run_fee: i64,
    },
    List,
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let (url, key) = server_and_key(
        args.url,
        args.admin_key,
        &args.env_file,
        "AGENTRUN_ADMIN_KEY",
    )?;
    let (method, path, body) = match args.command {
        AdminCommand::Teams(TeamCommand::Create { name, plan, limits }) => {
            let mut body = json!({"name": name});
            if let Some(plan) = plan {
                body["plan"] = json!(plan);
            }
            if let Some(limits) = limits.json() {
                body["limits"] = limits;
            }
            ("POST", "/v1/admin/teams".to_owned(), Some(body))
        }
        AdminCommand::Teams(TeamCommand::List) => ("GET", "/v1/admin/teams".to_owned(), None),
        AdminCommand::Teams(TeamCommand::Show { team_id }) => {
            ("GET", format!("/v1/admin/teams/{team_id}"), None)
        }
        AdminCommand::Teams(TeamCommand::Set {
            team_id,
            plan,
            limits,
            off,
            on,
            agent_off,
            agent_on,
        }) => {
            let mut body = json!({});
            if let Some(plan) = plan {
                body["plan"] = json!(plan);
            }
            if let Some(limits) = limits.json() {
                body["limits"] = limits;
            }
            if let Some(reason) = off {
                body["disabled"] = json!(true);
                body["reason"] = json!(reason);
            } else if on {
                body["disabled"] = json!(false);
            }
            let mut agents = Map::new();
            for spec in agent_off {
                let Some((name, reason)) = spec.split_once('=') else {
                    bail!("--agent-off takes NAME=REASON, got {spec:?}");
                };
                agents.insert(name.to_owned(), json!({"disabled": true, "reason": reason}));
            }
            for name in agent_on {
                agents.insert(name, json!({"disabled": false}));
            }
            if !agents.is_empty() {
                body["agents"] = Value::Object(agents);
            }
            ("PATCH", format!("/v1/admin/teams/{team_id}"), Some(body))
        }
        AdminCommand::Keys(KeyCommand::Create {
            team_id,
            expires_at,
        }) => {
            let body = expires_at.map(|at| serde_json::json!({"expires_at": at}));
            ("POST", format!("/v1/admin/teams/{team_id}/keys"), body)
        }
        AdminCommand::Keys(KeyCommand::List { team_id }) => {
            ("GET", format!("/v1/admin/teams/{team_id}/keys"), None)
        }
        AdminCommand::Keys(KeyCommand::Revoke { key_id }) => {
            ("DELETE", format!("/v1/admin/keys/{key_id}"), None)
        }
        AdminCommand::Prices(PriceCommand::Set {
            model,
            input,
            output,
        }) => (
            "PUT",
            format!("/v1/admin/prices/{model}"),
            Some(json!({"input_micros_per_mtok": input, "output_micros_per_mtok": output})),
        ),
        AdminCommand::Prices(PriceCommand::List) => ("GET", "/v1/admin/prices".to_owned(), None),
        AdminCommand::Plans(PlanCommand::Set { name, run_fee }) => (
            "PUT",
            format!("/v1/admin/plans/{name}"),
            Some(json!({"run_fee_micros": run_fee})),
        ),
        AdminCommand::Plans(PlanCommand::List) => ("GET", "/v1/admin/plans".to_owned(), None),
        AdminCommand::Reconcile => ("POST", "/v1/admin/reconcile".to_owned(), None),
    };
    let method = reqwest::Method::from_bytes(method.as_bytes())?;
    let mut request = reqwest::Client::new()
        .request(method, format!("{url}{path}"))
        .bearer_auth(&key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let text = response.text().await?;
    if !text.is_empty() {
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        println!("{}", serde_json::to_string_pretty(&value)?);
    }
    if !status.is_success() {
        bail!("the server answered {status}");
    }
    Ok(())
}
