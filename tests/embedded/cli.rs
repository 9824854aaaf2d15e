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

/// `agentrun run` puts the example's refund to the person at the terminal:
/// `y` on standard input approves it and the run succeeds; `n <why>`
/// refuses it, and the model reads why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentrun_run_asks_y_or_n_for_an_approval() {
    use std::io::Write;
    let examples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut scripts = agentrun::mock_llm::parse_scripts(
        &std::fs::read_to_string(examples.join("mock-llm.json")).unwrap(),
    )
    .unwrap();
    for script in scripts.values_mut() {
        script.latency_ms = agentrun::mock_llm::Latency::Fixed(0);
    }
    let app = agentrun_e2e::spawn_app_with(scripts).await;
    agentrun::embedded::load_agent_dir(
        &app.platform.engine.ledger,
        app.team,
        &examples.join("agents"),
    )
    .await
    .unwrap();
    for (answer, refused) in [("y\n", false), ("n not this month\n", true)] {
        let mut child = Command::new(agentrun_bin())
            .args([
                "run",
                "--agent",
                "support-triage",
                "--input",
                "I was charged twice",
            ])
            .args([
                "--url",
                &app.url,
                "--api-key",
                &app.key,
                "--env-file",
                "/nonexistent",
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(answer.as_bytes())
            .unwrap();
        let output = tokio::task::spawn_blocking(move || child.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("approval needed: tool issue_refund"),
            "{stdout}"
        );
        assert!(stdout.contains("approve? [y/n]"), "{stdout}");
        assert!(
            stdout.contains(&format!("approved={}", !refused)),
            "{stdout}"
        );
        assert!(stdout.contains("run.succeeded"), "{stdout}");
        let run_id = stdout.split_whitespace().nth(1).unwrap().to_owned();
        let steps = app.steps(&run_id).await;
        let refund = &steps[3]["tool_calls"][0];
        assert_eq!(refund["is_error"], refused, "{refund}");
        if refused {
            assert!(
                refund["result"]
                    .as_str()
                    .unwrap()
                    .contains("not this month"),
                "{refund}"
            );
        }
    }
}
