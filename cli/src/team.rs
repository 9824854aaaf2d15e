//! `agentrun runs …`, `agentrun agents …`, `agentrun usage`: a team's view
//! over the HTTP API, with the team key from `AGENTRUN_API_KEY` or
//! `.agentrun/dev.env`. A table by default; `--json` prints the API's body.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::dev::server_and_key;

/// Where the API is and the team key, for every team command.
#[derive(Args)]
pub struct Connection {
    /// Defaults to AGENTRUN_URL, then `.agentrun/dev.env`.
    #[arg(long, env = "AGENTRUN_URL", global = true)]
    url: Option<String>,
    #[arg(long, env = "AGENTRUN_API_KEY", hide_env_values = true, global = true)]
    api_key: Option<String>,
    #[arg(long, default_value = ".agentrun/dev.env", global = true)]
    env_file: PathBuf,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Args)]
pub struct RunsArgs {
    #[command(subcommand)]
    command: RunsCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The team's runs, newest first.
    List {
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        agent: Option<String>,
        /// Runs created at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// KEY=VALUE: runs whose metadata has KEY with this string value.
        #[arg(long, value_name = "KEY=VALUE")]
        metadata: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One run: status, stop reason, usage, cost and output.
    Show {
        run_id: String,
        /// Wait up to this many seconds for the run to end.
        #[arg(long, default_value_t = 0)]
        wait: u32,
    },
    /// Stop a run.
    Cancel {
        run_id: String,
        #[arg(long)]
        reason: Option<String>,
    },
}

#[derive(Args)]
pub struct AgentsArgs {
    #[command(subcommand)]
    command: AgentsCommand,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Subcommand)]
enum AgentsCommand {
    /// Store a new version of an agent from a JSON file (an unchanged spec
    /// makes no new version).
    Put {
        name: String,
        /// The agent spec (see examples/agents/).
        #[arg(long)]
        file: PathBuf,
    },
    /// The latest version of each agent.
    List,
}

#[derive(Args)]
pub struct UsageArgs {
    /// First day, YYYY-MM-DD (default: 30 days before --to).
    #[arg(long)]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (default: today, UTC).
    #[arg(long)]
    to: Option<String>,
    #[command(flatten)]
    connection: Connection,
}

struct Api {
    http: reqwest::Client,
    url: String,
    key: String,
}

impl Api {
    fn new(connection: &Connection) -> anyhow::Result<Self> {
        let (url, key) = server_and_key(
            connection.url.clone(),
            connection.api_key.clone(),
            &connection.env_file,
            "AGENTRUN_API_KEY",
        )?;
        Ok(Self {
            http: reqwest::Client::new(),
            url,
            key,
        })
    }

    /// The body of a 2xx answer; an error answer fails with its code and message.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.key);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach {}", self.url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{status} {}: {}",
                body["error"]["code"].as_str().unwrap_or("error"),
                body["error"]["message"]
                    .as_str()
                    .unwrap_or("request failed")
            );
        }
        Ok(body)
    }
}

fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("a constant URL");
    {
        let mut query = url.query_pairs_mut();
        for (name, value) in pairs {
            if let Some(value) = value {
                query.append_pair(name, value);
            }
        }
    }
    url.query()
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default()
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_owned()
    };
    let mut out = vec![line(header.iter().map(|h| (*h).to_owned()).collect())];
    out.extend(rows.iter().cloned().map(line));
    out.join("\n")
}

fn print_json(value: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

pub async fn runs(args: RunsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    match args.command {
        RunsCommand::List {
            status,
            agent,
            since,
            metadata,
            limit,
        } => {
            let (metadata_key, metadata_value) = match metadata {
                None => (None, None),
                Some(pair) => match pair.split_once('=') {
                    Some((key, value)) => (Some(key.to_owned()), Some(value.to_owned())),
                    None => bail!("--metadata takes KEY=VALUE, got {pair:?}"),
                },
            };
            let path = format!(
                "/v1/runs{}",
                query(&[
                    ("status", status),
                    ("agent", agent),
                    ("created_after", since),
                    ("metadata_key", metadata_key),
                    ("metadata_value", metadata_value),
                    ("limit", Some(limit.to_string())),
                ])
            );
            let page = api.call(reqwest::Method::GET, &path, None).await?;
            if args.connection.json {
                return print_json(&page);
            }
            let rows: Vec<Vec<String>> = page["data"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|run| {
                    vec![
                        text(&run["id"]),
                        text(&run["agent"]),
                        text(&run["status"]),
                        text(&run["stop_reason"]),
                        text(&run["steps"]),
                        text(&run["usage"]["total_tokens"]),
                        text(&run["created_at"]),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(
                    &[
                        "ID",
                        "AGENT",
                        "STATUS",
                        "STOP REASON",
                        "STEPS",
                        "TOKENS",
                        "CREATED"
                    ],
                    &rows
                )
            );
            if let Some(cursor) = page["next_cursor"].as_str() {
                println!("(more: the API's cursor is {cursor})");
            }
            Ok(())
        }
        RunsCommand::Show { run_id, wait } => {
            let wait = (wait > 0).then(|| wait.to_string());
            let path = format!("/v1/runs/{run_id}{}", query(&[("wait", wait)]));
            let run = api.call(reqwest::Method::GET, &path, None).await?;
            if args.connection.json {
                return print_json(&run);
            }
            let rows = [
                ("run", text(&run["id"])),
                (
                    "agent",
                    format!("{} v{}", text(&run["agent"]), text(&run["version"])),
                ),
                ("status", text(&run["status"])),
                ("stop reason", text(&run["stop_reason"])),
                ("detail", text(&run["stop_detail"])),
                ("steps", text(&run["steps"])),
                (
                    "tokens",
                    format!(
                        "{} ({} in, {} out)",
                        text(&run["usage"]["total_tokens"]),
                        text(&run["usage"]["input_tokens"]),
                        text(&run["usage"]["output_tokens"])
                    ),
                ),
                (
                    "cost",
                    format!("{} micros", text(&run["cost"]["total_micros"])),
                ),
                ("created", text(&run["created_at"])),
                ("finished", text(&run["finished_at"])),
            ];
            for (name, value) in rows {
                println!("{name:<12} {value}");
            }
            if run["output_inline"] == false {
                println!(
                    "output       (too large to show; GET {}/v1/runs/{run_id}/output)",
                    api.url
                );
            } else if !run["output"].is_null() {
                println!("output\n{}", serde_json::to_string_pretty(&run["output"])?);
            }
            Ok(())
        }
        RunsCommand::Cancel { run_id, reason } => {
            let body = reason.map(|reason| json!({"reason": reason}));
            let run = api
                .call(
                    reqwest::Method::POST,
                    &format!("/v1/runs/{run_id}/cancel"),
                    Some(body.unwrap_or_else(|| json!({}))),
                )
                .await?;
            if args.connection.json {
                return print_json(&run);
            }
            println!("run {} is {}", text(&run["id"]), text(&run["status"]));
            Ok(())
        }
    }
}

pub async fn agents(args: AgentsArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    match args.command {
        AgentsCommand::Put { name, file } => {
            let spec_text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let spec: Value = serde_json::from_str(&spec_text)
                .with_context(|| format!("{} is not JSON", file.display()))?;
            let version = api
                .call(
                    reqwest::Method::PUT,
                    &format!("/v1/agents/{name}"),
                    Some(spec),
                )
                .await?;
            if args.connection.json {
                return print_json(&version);
            }
            println!(
                "agent {} version {} ({})",
                text(&version["name"]),
                text(&version["version"]),
                text(&version["created_at"])
            );
            Ok(())
        }
        AgentsCommand::List => {
            let mut agents = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let path = format!(
                    "/v1/agents{}",
                    query(&[
                        ("limit", Some("200".to_owned())),
                        ("cursor", cursor.clone())
                    ])
                );
                let page = api.call(reqwest::Method::GET, &path, None).await?;
                agents.extend(page["data"].as_array().cloned().unwrap_or_default());
                match page["next_cursor"].as_str() {
                    Some(next) => cursor = Some(next.to_owned()),
                    None => break,
                }
            }
            if args.connection.json {
                return print_json(&json!({"data": agents}));
            }
            let rows: Vec<Vec<String>> = agents
                .iter()
                .map(|agent| {
                    vec![
                        text(&agent["name"]),
                        text(&agent["version"]),
                        text(&agent["spec"]["model"]),
                        agent["spec"]["tools"]
                            .as_array()
                            .map_or(0, Vec::len)
                            .to_string(),
                        text(&agent["created_at"]),
                    ]
                })
                .collect();
            println!(
                "{}",
                table(&["NAME", "VERSION", "MODEL", "TOOLS", "CREATED"], &rows)
            );
            Ok(())
        }
    }
}

pub async fn usage(args: UsageArgs) -> anyhow::Result<()> {
    let api = Api::new(&args.connection)?;
    let path = format!(
        "/v1/usage{}",
        query(&[("from", args.from), ("to", args.to)])
    );
    let usage = api.call(reqwest::Method::GET, &path, None).await?;
    if args.connection.json {
        return print_json(&usage);
    }
    let row = |day: String, usage: &Value| {
        vec![
            day,
            text(&usage["runs"]),
            text(&usage["total_tokens"]),
            text(&usage["llm_calls"]),
            text(&usage["cost_micros"]),
        ]
    };
    let mut rows: Vec<Vec<String>> = usage["data"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|day| {
            day["runs"].as_i64().unwrap_or(0) > 0 || day["total_tokens"].as_i64().unwrap_or(0) > 0
        })
        .map(|day| row(text(&day["day"]), day))
        .collect();
    rows.push(row("total".to_owned(), &usage["totals"]));
    println!(
        "{}",
        table(
            &["DAY", "RUNS", "TOKENS", "LLM CALLS", "COST (MICROS)"],
            &rows
        )
    );
    let today = &usage["tokens_today"];
    println!(
        "today: {} tokens used, {} reserved, of a daily budget of {}",
        text(&today["used"]),
        text(&today["reserved"]),
        text(&today["daily_budget"])
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_pad_columns_to_their_widest_cell() {
        let rows = vec![
            vec!["a".to_owned(), "long value".to_owned()],
            vec!["bbb".to_owned(), "x".to_owned()],
        ];
        assert_eq!(table(&["K", "V"], &rows), "K    V\na    long value\nbbb  x");
    }

    #[test]
    fn queries_leave_out_what_is_not_given_and_encode_the_rest() {
        assert_eq!(query(&[("a", None)]), "");
        assert_eq!(
            query(&[
                ("agent", Some("x y".to_owned())),
                ("b", None),
                ("t", Some("2026-01-01T00:00:00+01:00".to_owned()))
            ]),
            "?agent=x+y&t=2026-01-01T00%3A00%3A00%2B01%3A00"
        );
    }
}
