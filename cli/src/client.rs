//! `agentrun run`: submit a run over the HTTP API and follow it live.

use std::path::PathBuf;

use agentrun::domain::event::LLM_DELTA;
use agentrun::sse_client::SseParser;
use anyhow::{bail, Context};
use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::dev::server_and_key;

#[derive(clap::Args)]
pub struct RunArgs {
    #[arg(long)]
    agent: String,
    /// The input: JSON, or plain text.
    #[arg(long)]
    input: String,
    #[arg(long)]
    version: Option<i32>,
    #[arg(long)]
    idempotency_key: Option<String>,
    /// Continue this conversation (its newest run, which has ended).
    #[arg(long, conflicts_with = "previous_run")]
    thread: Option<String>,
    /// Continue this ended run (the newest of its thread).
    #[arg(long)]
    previous_run: Option<String>,
    /// Defaults to AGENTRUN_URL, then `.agentrun/dev.env`.
    #[arg(long, env = "AGENTRUN_URL")]
    url: Option<String>,
    /// Where event streams are served when not at `--url` (in AWS, the
    /// relay's function URL: the `stream_url` Terraform output).
    #[arg(long, env = "AGENTRUN_STREAM_URL")]
    stream_url: Option<String>,
    #[arg(long, env = "AGENTRUN_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    #[arg(long, default_value = ".agentrun/dev.env")]
    env_file: PathBuf,
    /// Print the run id and return without following.
    #[arg(long)]
    no_follow: bool,
}

/// Returns the process exit code: 0 when the run succeeded.
pub async fn run(args: RunArgs) -> anyhow::Result<i32> {
    let (url, key) = server_and_key(args.url, args.api_key, &args.env_file, "AGENTRUN_API_KEY")?;
    let input: Value =
        serde_json::from_str(&args.input).unwrap_or(Value::String(args.input.clone()));
    let mut body = json!({"agent": args.agent, "input": input});
    if let Some(version) = args.version {
        body["version"] = json!(version);
    }
    if let Some(thread) = &args.thread {
        body["thread_id"] = json!(thread);
    }
    if let Some(previous) = &args.previous_run {
        body["previous_run_id"] = json!(previous);
    }
    let http = reqwest::Client::new();
    let mut request = http
        .post(format!("{url}/v1/runs"))
        .bearer_auth(&key)
        .json(&body);
    if let Some(idempotency_key) = &args.idempotency_key {
        request = request.header("idempotency-key", idempotency_key);
    }
    let response = request
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = response.status();
    let created: Value = response.json().await?;
    if !status.is_success() {
        bail!(
            "{status}: {}",
            created["error"]["message"]
                .as_str()
                .unwrap_or("request failed")
        );
    }
    let run_id = created["id"]
        .as_str()
        .context("response has no run id")?
        .to_owned();
    println!(
        "run {run_id} ({} v{}, thread {})",
        created["agent"].as_str().unwrap_or("?"),
        created["version"],
        created["thread_id"].as_str().unwrap_or("?")
    );
    if args.no_follow {
        return Ok(0);
    }

    let stream_base = args
        .stream_url
        .as_deref()
        .map(|u| u.trim_end_matches('/'))
        .unwrap_or(&url);
    follow(
        &format!("{stream_base}/v1/runs/{run_id}/events"),
        &format!("{url}/v1/runs/{run_id}"),
        &key,
    )
    .await?;

    let run: Value = http
        .get(format!("{url}/v1/runs/{run_id}"))
        .bearer_auth(&key)
        .send()
        .await?
        .json()
        .await?;
    if run["output_inline"] == false {
        let text = read_parts(&http, &format!("{url}/v1/runs/{run_id}/output"), &key).await?;
        let output: Value = serde_json::from_str(&text)?;
        println!("output:\n{}", serde_json::to_string_pretty(&output)?);
    } else if let Some(output) = run.get("output").filter(|o| !o.is_null()) {
        println!("output:\n{}", serde_json::to_string_pretty(output)?);
    }
    Ok(if run["status"] == "succeeded" { 0 } else { 1 })
}

/// Prints the run's events until its terminal one: follows the API's 307
/// to where streams are served (with the key: it names the deployment's
/// own relay), and resumes with Last-Event-ID when a stream ends early.
/// An approval request is put to the person at the terminal (`run_url`
/// takes the answer).
async fn follow(events_url: &str, run_url: &str, key: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let mut events_url = events_url.to_owned();
    let mut last: Option<String> = None;
    let mut progress = Progress::new();
    for _ in 0..10_000 {
        let mut request = http.get(&events_url).bearer_auth(key);
        if let Some(seq) = &last {
            request = request.header("last-event-id", seq);
        }
        let response = request.send().await?;
        if response.status() == reqwest::StatusCode::TEMPORARY_REDIRECT {
            let body: Value = response.json().await?;
            events_url = body["stream_url"]
                .as_str()
                .context("a redirect without stream_url")?
                .to_owned();
            continue;
        }
        let mut stream = response.error_for_status()?.bytes_stream();
        let mut parser = SseParser::default();
        let mut ticks = tokio::time::interval(std::time::Duration::from_secs(1));
        let mut writing = false;
        loop {
            let chunk = tokio::select! {
                chunk = stream.next() => chunk,
                _ = ticks.tick() => {
                    if !writing {
                        progress.show();
                    }
                    continue;
                }
            };
            let Some(chunk) = chunk else { break };
            for event in parser.push(&chunk?) {
                let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
                progress.clear();
                if event.event == LLM_DELTA {
                    // The model's text as it writes, on one line per turn;
                    // a call tried again (offset 0) starts a new line.
                    let restarted = data["offset"] == 0;
                    if writing && restarted {
                        println!();
                    }
                    if !writing || restarted {
                        let step = data["step_no"].as_i64().unwrap_or(0);
                        print!("   step {step:>2}  {LLM_DELTA:<15} ");
                        writing = true;
                    }
                    print!("{}", data["text"].as_str().unwrap_or_default());
                    let _ = std::io::Write::flush(&mut std::io::stdout());
                    continue;
                }
                if std::mem::take(&mut writing) {
                    println!();
                }
                println!("{}", describe(&event.event, &data));
                progress.saw(&event.event, &data);
                // Kept before asking: a reconnect meanwhile does not ask again.
                if event.id.is_some() {
                    last = event.id.clone();
                }
                if event.event == "approval.requested" {
                    ask_for_approval(run_url, key, &data["data"]).await?;
                }
                if TERMINAL_EVENTS.contains(&event.event.as_str()) {
                    return Ok(());
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
    bail!("the event stream kept ending before the run did")
}

/// Asks `y/n` on standard input for an `approval.requested` event's call
/// and sends the answer (`n <why>` refuses with a comment). Without an
/// answer (end of input) the run waits on; how to answer is printed.
async fn ask_for_approval(run_url: &str, key: &str, request: &Value) -> anyhow::Result<()> {
    use std::io::Write;
    let request_id = request["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let answer_url = format!("{run_url}/approvals/{request_id}");
    println!(
        "  approval needed: {} {} {}",
        request["kind"].as_str().unwrap_or("tool"),
        request["name"].as_str().unwrap_or("?"),
        request["arguments"]
    );
    print!("  approve? [y/n] ");
    std::io::stdout().flush()?;
    let line = tokio::task::spawn_blocking(|| {
        let mut line = String::new();
        std::io::stdin()
            .read_line(&mut line)
            .map(|read| (read, line))
    })
    .await??;
    let (read, line) = line;
    let line = line.trim();
    let (verdict, comment) = line.split_once(' ').unwrap_or((line, ""));
    let approve = match verdict.to_ascii_lowercase().as_str() {
        "y" | "yes" => true,
        "n" | "no" => false,
        _ => {
            if read == 0 {
                println!();
            }
            println!(
                "  no answer given; the run waits. Answer with: curl -X POST {answer_url} -H \"Authorization: Bearer $AGENTRUN_API_KEY\" -H 'Content-Type: application/json' -d '{{\"approve\": true}}'"
            );
            return Ok(());
        }
    };
    let mut body = serde_json::json!({"approve": approve});
    if !comment.trim().is_empty() {
        body["comment"] = Value::String(comment.trim().to_owned());
    }
    let response = reqwest::Client::new()
        .post(&answer_url)
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    if !response.status().is_success() {
        let status = response.status();
        let error: Value = response.json().await.unwrap_or(Value::Null);
        println!(
            "  the answer was not taken ({status}): {}",
            error["error"]["message"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// A live line on a terminal's stderr while a step waits on the model
/// (`step 3: waiting on the model, 4 s`), cleared before the next event.
struct Progress {
    on_terminal: bool,
    waiting: Option<(i64, std::time::Instant)>,
    shown: bool,
}

impl Progress {
    fn new() -> Self {
        use std::io::IsTerminal;
        Self {
            on_terminal: std::io::stderr().is_terminal(),
            waiting: None,
            shown: false,
        }
    }

    /// A step that started waits on the model until its LLM call is done.
    fn saw(&mut self, kind: &str, event: &Value) {
        self.waiting = match kind {
            "step.started" => event["step_no"]
                .as_i64()
                .map(|step| (step, std::time::Instant::now())),
            _ => None,
        };
    }

    fn show(&mut self) {
        use std::io::Write;
        if let (true, Some((step, since))) = (self.on_terminal, self.waiting) {
            let mut err = std::io::stderr();
            let _ = write!(
                err,
                "\r\x1b[K  step {step}: waiting on the model, {} s",
                since.elapsed().as_secs()
            );
            let _ = err.flush();
            self.shown = true;
        }
    }

    fn clear(&mut self) {
        use std::io::Write;
        if self.shown {
            let mut err = std::io::stderr();
            let _ = write!(err, "\r\x1b[K");
            let _ = err.flush();
            self.shown = false;
        }
    }
}

const TERMINAL_EVENTS: [&str; 4] = [
    "run.succeeded",
    "run.failed",
    "run.cancelled",
    "run.timed_out",
];

/// A text the API serves in parts (`{text, next_offset}`), whole.
async fn read_parts(http: &reqwest::Client, url: &str, key: &str) -> anyhow::Result<String> {
    let mut whole = String::new();
    let mut offset = 0;
    loop {
        let part: Value = http
            .get(format!("{url}?offset={offset}"))
            .bearer_auth(key)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        whole.push_str(part["text"].as_str().unwrap_or_default());
        match part["next_offset"].as_u64() {
            Some(next) => offset = next,
            None => return Ok(whole),
        }
    }
}

/// One line per event: seq, step, type and what matters for it.
fn describe(kind: &str, event: &Value) -> String {
    let data = &event["data"];
    let step = event["step_no"]
        .as_i64()
        .map(|s| format!("step {s:>2}"))
        .unwrap_or_else(|| "       ".to_owned());
    let detail = match kind {
        "step.started" => format!(
            "agent={} attempt={}",
            data["agent"].as_str().unwrap_or("?"),
            data["attempt"]
        ),
        "llm.completed" => format!(
            "agent={} tokens={}+{} tools={}",
            data["agent"].as_str().unwrap_or("?"),
            data["input_tokens"],
            data["output_tokens"],
            data["tool_calls"]
        ),
        "tool.started" => format!(
            "tool={} attempt={}",
            data["tool"].as_str().unwrap_or("?"),
            data["attempt"]
        ),
        "tool.completed" => format!(
            "tool={} error={} {} ms",
            data["tool"].as_str().unwrap_or("?"),
            data["is_error"],
            data["duration_ms"]
        ),
        "handoff" => format!(
            "{} -> {}",
            data["from"].as_str().unwrap_or("?"),
            data["to"].as_str().unwrap_or("?")
        ),
        "output.invalid" => format!("errors={}", data["errors"]),
        "approval.requested" => format!(
            "{}={} request={}",
            data["kind"].as_str().unwrap_or("tool"),
            data["name"].as_str().unwrap_or("?"),
            data["request_id"].as_str().unwrap_or("?")
        ),
        "approval.answered" => format!(
            "{} approved={}",
            data["name"].as_str().unwrap_or("?"),
            data["approved"]
        ),
        "run.succeeded" | "run.failed" | "run.cancelled" | "run.timed_out" => format!(
            "stop_reason={} tokens={} {}",
            data["stop_reason"].as_str().unwrap_or("?"),
            data["usage"]["total_tokens"],
            data["detail"].as_str().unwrap_or("")
        ),
        _ => String::new(),
    };
    format!("#{:<3} {step}  {kind:<15} {detail}", event["seq"])
}
