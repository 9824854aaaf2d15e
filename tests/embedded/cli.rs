//! The CLI follows the API: `agentrun runs`, `agents` and `usage` against a
//! running platform, as tables and with `--json`.

use std::process::Command;
use std::time::Duration;

use agentrun_e2e::{agent, agentrun_bin, spawn_app, TestApp};
use serde_json::{json, Value};

/// Runs `agentrun <args>` against `app` as its team; returns stdout, or
/// panics with stderr when the command fails (unless `fails` is set).
fn cli(app: &TestApp, args: &[&str]) -> String {
    let output = Command::new(agentrun_bin())
        .args(args)
        .args([
            "--url",
            &app.url,
            "--api-key",
            &app.key,
            "--env-file",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "agentrun {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

fn cli_json(app: &TestApp, args: &[&str]) -> Value {
    let mut args = args.to_vec();
    args.push("--json");
    serde_json::from_str(&cli(app, &args)).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_agents_and_usage_from_the_cli() {
    let app = spawn_app().await;
    let dir = std::env::temp_dir().join(format!("agentrun-cli-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = dir.join("greeter.json");
    std::fs::write(&spec, agent("m", json!({})).to_string()).unwrap();

    let put = cli_json(
        &app,
        &["agents", "put", "greeter", "--file", spec.to_str().unwrap()],
    );
    assert_eq!(put["version"], 1, "{put}");
    let again = cli(
        &app,
        &["agents", "put", "greeter", "--file", spec.to_str().unwrap()],
    );
    assert!(again.starts_with("agent greeter version 1 "), "{again}");
    let listed = cli(&app, &["agents", "list"]);
    assert!(listed.starts_with("NAME"), "{listed}");
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("greeter") && l.contains(" m ")),
        "{listed}"
    );

    let (_, _, first) = app
        .post_run(
            &json!({"agent": "greeter", "input": "hi", "metadata": {"order": "42"}}),
            None,
        )
        .await;
    let first = first["id"].as_str().unwrap().to_owned();
    app.wait_finished(&first, Duration::from_secs(20)).await;

    let shown = cli_json(&app, &["runs", "show", &first, "--wait", "5"]);
    assert_eq!(shown["status"], "succeeded", "{shown}");
    let shown = cli(&app, &["runs", "show", &first]);
    assert!(shown.contains(&format!("run          {first}")), "{shown}");
    assert!(shown.contains("status       succeeded"), "{shown}");

    let table = cli(&app, &["runs", "list", "--agent", "greeter"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("ID"), "{table}");
    assert!(
        lines.any(|l| l.starts_with(&first) && l.contains("succeeded")),
        "{table}"
    );
    let filtered = cli_json(&app, &["runs", "list", "--metadata", "order=42"]);
    assert_eq!(filtered["data"].as_array().unwrap().len(), 1, "{filtered}");
    let none = cli_json(&app, &["runs", "list", "--metadata", "order=7"]);
    assert_eq!(none["data"], json!([]));

    // A run that waits on a slow tool is cancelled from the CLI.
    app.put_napper("sleeper", "sleepy", 20_000, "late").await;
    let slow = app.start_run("sleeper", json!("x")).await;
    let cancelled = cli(&app, &["runs", "cancel", &slow, "--reason", "from the cli"]);
    assert_eq!(cancelled.trim(), format!("run {slow} is cancelled"));
    let run = app.wait_finished(&slow, Duration::from_secs(20)).await;
    assert_eq!(run["stop_reason"], "cancelled");

    let usage = cli(&app, &["usage"]);
    assert!(usage.starts_with("DAY"), "{usage}");
    assert!(usage.lines().any(|l| l.starts_with("total ")), "{usage}");
    assert!(usage.contains("today: "), "{usage}");
    let usage = cli_json(&app, &["usage"]);
    assert!(usage["totals"]["runs"].as_i64().unwrap() >= 2, "{usage}");

    // An error answer is a failing command naming the API's code.
    let output = Command::new(agentrun_bin())
        .args([
            "runs",
            "show",
            "not-a-run",
            "--url",
            &app.url,
            "--api-key",
            &app.key,
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("run_not_found"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
