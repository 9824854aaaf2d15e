use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Latency, MockScript, MockTurn};
use agentrun::ports::Usage;
use agentrun_e2e::{spawn_app, spawn_app_with, types};
use futures_util::future::join_all;
use serde_json::json;

use agentrun_e2e::{agent, echo_tool};

fn looping(latency_ms: u64) -> MockScript {
    MockScript {
        turns: vec![MockTurn::tool("noop", json!({}))],
        latency_ms: Latency::Fixed(latency_ms),
        ..MockScript::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_team_sees_nothing_of_another() {
    let app = spawn_app_with(HashMap::from([(
        "m".to_owned(),
        MockScript::turns(vec![MockTurn::text("hi")]),
    )]))
    .await;
    let (_, other_key) = app.create_team("team-b", json!({})).await;
    let (status, _) = app
        .call_as(
            &other_key,
            "PUT",
            "/v1/agents/secret-agent",
            Some(agent("m", json!({}))),
        )
        .await;
    assert_eq!(status, 201);
    let (status, run) = app
        .call_as(
            &other_key,
            "POST",
            "/v1/runs",
            Some(json!({"agent": "secret-agent", "input": "x"})),
        )
        .await;
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_str().unwrap();

    for path in [
        format!("/v1/runs/{id}"),
        format!("/v1/runs/{id}/steps"),
        format!("/v1/runs/{id}/events"),
        "/v1/agents/secret-agent/versions/1".to_owned(),
    ] {
        let (status, body) = app.get(&path).await;
        assert_eq!(status, 404, "{path}: {body}");
    }
    let (status, _) = app
        .call_as(&app.key, "POST", &format!("/v1/runs/{id}/cancel"), None)
        .await;
    assert_eq!(status, 404);
    let (_, agents) = app.get("/v1/agents").await;
    assert!(agents["data"].as_array().unwrap().is_empty());
    let (_, runs) = app.get("/v1/runs").await;
    assert!(runs["data"].as_array().unwrap().is_empty());
    let (status, _, body) = app
        .post_run(&json!({"agent": "secret-agent", "input": "x"}), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("unknown_agent"))
    );
    let (_, usage) = app.get("/v1/usage").await;
    assert_eq!(usage["totals"]["runs"], 0);
    let (_, theirs) = app.call_as(&other_key, "GET", "/v1/usage", None).await;
    assert_eq!(theirs["totals"]["runs"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_key_is_refused_at_once_and_team_keys_cannot_administer() {
    let app = spawn_app().await;
    let (team, key) = app.create_team("revocable", json!({})).await;
    assert_eq!(app.call_as(&key, "GET", "/v1/runs", None).await.0, 200);
    let (_, keys) = app
        .admin("GET", &format!("/v1/admin/teams/{team}/keys"), None)
        .await;
    let key_id = keys["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(
        keys["data"][0].get("key").is_none(),
        "listing never shows a key"
    );
    assert_eq!(
        app.admin("DELETE", &format!("/v1/admin/keys/{key_id}"), None)
            .await
            .0,
        204
    );
    let (status, body) = app.call_as(&key, "GET", "/v1/runs", None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (401, Some("unauthorized"))
    );
    assert_eq!(
        app.admin(
            "DELETE",
            &format!("/v1/admin/keys/{}", uuid::Uuid::new_v4()),
            None
        )
        .await
        .0,
        404
    );

    // Team keys and no keys are not admin keys.
    assert_eq!(
        app.call_as(&app.key, "GET", "/v1/admin/teams", None)
            .await
            .0,
        401
    );
    assert_eq!(app.call_as("", "GET", "/v1/admin/teams", None).await.0, 401);
    // Names are unique; limits are checked.
    let (status, body) = app
        .admin(
            "POST",
            "/v1/admin/teams",
            Some(json!({"name": "revocable"})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("team_exists"))
    );
    let (status, body) = app
        .admin(
            "POST",
            "/v1/admin/teams",
            Some(json!({"name": "bad", "limits": {"max_concurrent_runs": 0}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_limits"))
    );
}

/// 1,000 concurrent POSTs against a limit of 10: never more than 10 runs in
/// progress (from the ledger's times), the rest 429, and no slot left after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_concurrent_run_limit_holds_under_a_burst_and_every_slot_comes_back() {
    let script = MockScript {
        turns: vec![MockTurn::tool("noop", json!({})), MockTurn::text("done")],
        latency_ms: Latency::Fixed(50),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("busy".to_owned(), script)])).await;
    app.put_agent("busy", agent("busy", json!({"tools": [echo_tool("noop")]})))
        .await;
    app.patch_team(json!({"limits": {"max_concurrent_runs": 10, "runs_per_second": 100000.0, "run_burst": 100000}}))
        .await;

    let body = json!({"agent": "busy", "input": "go"});
    let responses = join_all((0..1000).map(|_| app.post_run(&body, None))).await;
    let mut accepted = Vec::new();
    for (status, headers, body) in &responses {
        match status {
            202 => accepted.push(body["id"].as_str().unwrap().to_owned()),
            429 => {
                assert_eq!(body["error"]["code"], "concurrent_run_limit", "{body}");
                assert!(headers.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert!(accepted.len() >= 10, "accepted {}", accepted.len());
    assert!(accepted.len() < 1000);
    for id in &accepted {
        let run = app.wait_finished(id, Duration::from_secs(60)).await;
        assert_eq!(run["status"], "succeeded");
    }

    // Sweep over [created_at, finished_at] of every accepted run.
    let rows = app
        .db()
        .await
        .query(
            "SELECT created_at, finished_at FROM runs WHERE team_id = $1",
            &[&app.team.0],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), accepted.len());
    let mut edges: Vec<(chrono::DateTime<chrono::Utc>, i32)> = Vec::new();
    for row in &rows {
        edges.push((row.get(0), 1));
        edges.push((
            row.get::<_, Option<chrono::DateTime<chrono::Utc>>>(1)
                .unwrap(),
            -1,
        ));
    }
    edges.sort_by_key(|(at, delta)| (*at, *delta));
    let (mut now, mut peak) = (0, 0);
    for (_, delta) in edges {
        now += delta;
        peak = peak.max(now);
    }
    assert!(peak <= 10, "{peak} runs were in progress at once");
    println!(
        "burst of 1000: {} accepted, {} refused, peak {peak} in progress",
        accepted.len(),
        1000 - accepted.len()
    );
    let (_, team) = app
        .admin("GET", &format!("/v1/admin/teams/{}", app.team), None)
        .await;
    assert_eq!(team["running_runs"], 0, "{team}");
    let counted: i32 = app
        .db()
        .await
        .query_one(
            "SELECT in_use FROM hot_slot_counts WHERE team_id = $1",
            &[&app.team.0],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(counted, 0, "the team's slot counter agrees with its slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daily_token_budget_ends_a_run_before_a_call_that_could_cross_it() {
    let script = MockScript {
        usage: Some(Usage {
            prompt_tokens: 300,
            completion_tokens: 100,
        }),
        ..looping(0)
    };
    let app = spawn_app_with(HashMap::from([("hungry".to_owned(), script)])).await;
    app.put_agent(
        "hungry",
        agent(
            "hungry",
            json!({"tools": [echo_tool("noop")], "max_output_tokens": 200}),
        ),
    )
    .await;
    app.patch_team(json!({"limits": {"daily_token_budget": 1000}}))
        .await;
    let id = app.start_run("hungry", json!("go")).await;
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "failed");
    assert_eq!(run["stop_reason"], "team_token_budget");
    assert!(
        run["stop_detail"]
            .as_str()
            .unwrap()
            .contains("daily budget of 1000"),
        "{run}"
    );
    // Two calls of 400 tokens; a third could have crossed 1,000, so it was not made.
    assert_eq!(app.mock.state.requests("hungry"), 2);
    let (_, usage) = app.get("/v1/usage").await;
    assert_eq!(usage["tokens_today"]["used"], 800, "{usage}");
    assert_eq!(
        usage["tokens_today"]["reserved"], 0,
        "the reservation was released"
    );
    assert_eq!(
        types(&app.all_events(&id).await).last().unwrap(),
        "run.failed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_over_the_rate_limit_gets_429_with_retry_after() {
    let app = spawn_app_with(HashMap::from([(
        "m".to_owned(),
        MockScript::turns(vec![MockTurn::text("ok")]),
    )]))
    .await;
    app.put_agent("quick", agent("m", json!({}))).await;
    app.patch_team(json!({"limits": {"runs_per_second": 0.5, "run_burst": 3}}))
        .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers, body) = app
            .post_run(&json!({"agent": "quick", "input": "x"}), None)
            .await;
        if status == 429 {
            assert_eq!(body["error"]["code"], "rate_limited");
            let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&wait), "Retry-After {wait}");
        }
        statuses.push(status);
    }
    assert_eq!(statuses, vec![202, 202, 202, 429, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_kill_switch_refuses_new_runs_and_stops_running_ones() {
    let app = spawn_app_with(HashMap::from([("loop".to_owned(), looping(150))])).await;
    app.put_agent(
        "looper",
        agent("loop", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("looper", json!("go")).await;
    app.wait_for_step(&id, 2).await;
    let team = app
        .patch_team(json!({"agents": {"looper": {"disabled": true, "reason": "incident 42"}}}))
        .await;
    assert_eq!(team["disabled_agents"]["looper"], "incident 42");
    let run = app.wait_finished(&id, Duration::from_secs(10)).await;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(run["stop_reason"], "cancelled");
    assert!(
        run["stop_detail"].as_str().unwrap().contains("incident 42"),
        "{run}"
    );
    assert!(
        run["steps"].as_i64().unwrap() <= 3,
        "stopped at its next step: {run}"
    );

    let (status, _, body) = app
        .post_run(&json!({"agent": "looper", "input": "again"}), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("agent_disabled"))
    );
    app.patch_team(json!({"agents": {"looper": {"disabled": false}}}))
        .await;
    let (status, _, body) = app
        .post_run(&json!({"agent": "looper", "input": "again"}), None)
        .await;
    assert_eq!(status, 202, "{body}");

    // The whole team off: refused with its own code.
    app.patch_team(json!({"disabled": true, "reason": "unpaid invoice"}))
        .await;
    let (status, _, body) = app
        .post_run(&json!({"agent": "looper", "input": "again"}), None)
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (403, Some("team_disabled"))
    );
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("unpaid invoice"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconciliation_frees_slots_of_runs_that_ended_without_releasing_them() {
    let app = spawn_app_with(HashMap::from([(
        "m".to_owned(),
        MockScript::turns(vec![MockTurn::text("ok")]),
    )]))
    .await;
    app.put_agent("quick", agent("m", json!({}))).await;
    let id = app.start_run("quick", json!("x")).await;
    app.wait_finished(&id, Duration::from_secs(10)).await;
    // As if the process died between settling the run and releasing its slot.
    let db = app.db().await;
    let run_id: uuid::Uuid = id.parse().unwrap();
    db.execute(
        "INSERT INTO hot_run_slots (run_id, team_id) VALUES ($1, $2)",
        &[&run_id, &app.team.0],
    )
    .await
    .unwrap();
    let (_, team) = app
        .admin("GET", &format!("/v1/admin/teams/{}", app.team), None)
        .await;
    assert_eq!(team["running_runs"], 1);
    let (status, body) = app.admin("POST", "/v1/admin/reconcile", None).await;
    assert_eq!((status, body["released_slots"].as_i64()), (200, Some(1)));
    let (_, team) = app
        .admin("GET", &format!("/v1/admin/teams/{}", app.team), None)
        .await;
    assert_eq!(team["running_runs"], 0);
}
