//! `/metrics`: Prometheus text whose counters move with a run.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun_e2e::{agent, echo_tool, spawn_app, TestApp};
use serde_json::json;

/// The samples of a Prometheus text page: `name{labels}` → value.
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let response = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(&app.admin_key)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let text = response.text().await.unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap();
            (series.to_owned(), value.parse().unwrap())
        })
        .collect()
}

fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    samples.get(series).copied().unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_a_run() {
    let app = spawn_app().await;
    app.script(
        "metered",
        MockScript::turns(vec![
            MockTurn::tool("echo", json!({"x": 1})),
            MockTurn::text("done"),
        ]),
    );
    let (status, _) = app
        .admin(
            "PUT",
            "/v1/admin/prices/metered",
            Some(json!({"input_micros_per_mtok": 1_000_000_000, "output_micros_per_mtok": 1_000_000_000})),
        )
        .await;
    assert_eq!(status, 200);
    app.put_agent(
        "metered",
        agent("metered", json!({"tools": [echo_tool("echo")]})),
    )
    .await;
    let unauthorised = app
        .http
        .get(format!("{}/metrics", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        unauthorised.status(),
        401,
        "a team key reads all teams' metrics"
    );

    let before = scrape(&app).await;
    let id = app.start_run("metered", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let tokens = run["usage"]["total_tokens"].as_f64().unwrap();
    // The cost is counted once the run's usage has been read back.
    let until = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = scrape(&app).await;
        if value(&after, "agentrun_cost_micros_total")
            > value(&before, "agentrun_cost_micros_total")
        {
            break after;
        }
        assert!(Instant::now() < until, "the cost never moved: {after:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(moved("agentrun_runs_started_total"), 1.0);
    assert_eq!(
        moved("agentrun_runs_ended_total{status=\"succeeded\",stop_reason=\"completed\"}"),
        1.0
    );
    assert_eq!(moved("agentrun_steps_committed_total"), 2.0);
    let token_total = moved("agentrun_llm_tokens_total{model=\"metered\",kind=\"input\"}")
        + moved("agentrun_llm_tokens_total{model=\"metered\",kind=\"output\"}");
    assert_eq!(token_total, tokens);
    assert!(tokens > 0.0);
    // 1,000 micro-units per token at this price.
    assert!(
        moved("agentrun_cost_micros_total") >= tokens * 1_000.0,
        "{}",
        moved("agentrun_cost_micros_total")
    );
    assert_eq!(
        moved("agentrun_step_duration_seconds_count{outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        moved("agentrun_llm_call_duration_seconds_count{model=\"metered\",outcome=\"ok\"}"),
        2.0
    );
    assert_eq!(
        moved("agentrun_tool_call_duration_seconds_count{kind=\"builtin\",outcome=\"ok\"}"),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "agentrun_step_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"}"
        ),
        value(
            &after,
            "agentrun_step_duration_seconds_count{outcome=\"ok\"}"
        )
    );
    // The gauges are read when shown.
    for gauge in [
        "agentrun_runs_active{status=\"running\"}",
        "agentrun_runs_active{status=\"queued\"}",
        "agentrun_run_slots_in_use",
        "agentrun_sse_connections",
        "agentrun_hot_store_degraded",
        "agentrun_llm_circuits_open",
        "agentrun_oldest_queued_step_age_seconds",
    ] {
        assert!(after.contains_key(gauge), "{gauge} missing: {after:?}");
    }
    assert_eq!(
        value(&after, "agentrun_runs_active{status=\"running\"}"),
        0.0
    );
    assert_eq!(value(&after, "agentrun_hot_store_degraded"), 0.0);

    // A run ended by a cancel is counted once, under its own reason.
    app.put_napper("napper", "napping", 20_000, "late").await;
    let id = app.start_run("napper", json!("x")).await;
    let (status, body) = app
        .call_as(&app.key, "POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 202, "{body}");
    app.wait_finished(&id, Duration::from_secs(20)).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = scrape(&app).await;
    let ended = |samples: &HashMap<String, f64>| -> f64 {
        samples
            .iter()
            .filter(|(series, _)| series.starts_with("agentrun_runs_ended_total"))
            .map(|(_, v)| v)
            .sum()
    };
    let cancelled = "agentrun_runs_ended_total{status=\"cancelled\",stop_reason=\"cancelled\"}";
    assert_eq!(value(&later, cancelled) - value(&after, cancelled), 1.0);
    assert_eq!(
        ended(&later) - ended(&after),
        1.0,
        "one run ended, counted once"
    );
}
