use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun::ports::Usage;
use agentrun_e2e::spawn_app_with;
use serde_json::json;

use agentrun_e2e::{agent, echo_tool};

/// 333 input and 50 output tokens per call at 2.5 and 10 (currency units)
/// per million tokens: 832.5 + 500 = 1,332.5 micros a call, rounded once per
/// run; plus the plan's 1,500 micros per run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn known_token_counts_give_exact_costs_per_run_per_day_and_in_the_statement() {
    let usage = Some(Usage {
        prompt_tokens: 333,
        completion_tokens: 50,
    });
    let two_calls = MockScript {
        usage,
        ..MockScript::turns(vec![MockTurn::tool("noop", json!({})), MockTurn::text("a")])
    };
    let one_call = MockScript {
        usage,
        ..MockScript::turns(vec![MockTurn::text("b")])
    };
    let app = spawn_app_with(HashMap::from([
        ("metered-a".to_owned(), two_calls),
        ("metered-b".to_owned(), one_call),
    ]))
    .await;
    for model in ["metered-a", "metered-b"] {
        let (status, price) = app
            .admin(
                "PUT",
                &format!("/v1/admin/prices/{model}"),
                Some(json!({"input_micros_per_mtok": 2_500_000, "output_micros_per_mtok": 10_000_000})),
            )
            .await;
        assert_eq!(status, 200, "{price}");
    }
    assert_eq!(
        app.admin(
            "PUT",
            "/v1/admin/plans/pro",
            Some(json!({"run_fee_micros": 1500}))
        )
        .await
        .0,
        200
    );
    app.patch_team(json!({"plan": "pro"})).await;
    app.put_agent(
        "two",
        agent("metered-a", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    app.put_agent("one", agent("metered-b", json!({}))).await;

    let mut expected = HashMap::new();
    for (agent_name, cost) in [
        ("two", 1500 + 2665),
        ("two", 1500 + 2665),
        ("one", 1500 + 1333),
    ] {
        let id = app.start_run(agent_name, json!("bill me")).await;
        let run = app.wait_finished(&id, Duration::from_secs(20)).await;
        assert_eq!(run["status"], "succeeded");
        let (_, shown) = app.get(&format!("/v1/runs/{id}")).await;
        assert_eq!(shown["cost"]["total_micros"], cost, "{shown}");
        assert_eq!(shown["cost"]["fee_micros"], 1500);
        expected.insert(id, cost);
    }

    let today = chrono::Utc::now().date_naive().to_string();
    let (status, daily) = app.get(&format!("/v1/usage?from={today}&to={today}")).await;
    assert_eq!(status, 200, "{daily}");
    let day = &daily["data"][0];
    assert_eq!(day["day"], today);
    assert_eq!(day["runs"], 3);
    assert_eq!(day["input_tokens"], 333 * 5);
    assert_eq!(day["output_tokens"], 50 * 5);
    assert_eq!(day["fee_micros"], 4500);
    assert_eq!(day["token_cost_micros"], 2665 * 2 + 1333);
    assert_eq!(day["cost_micros"], 11_163);
    assert_eq!(daily["totals"]["cost_micros"], 11_163);

    let month = &today[..7];
    let (_, statement) = app.get(&format!("/v1/usage/runs?month={month}")).await;
    let lines = statement["data"].as_array().unwrap();
    assert_eq!(lines.len(), 3);
    for line in lines {
        assert_eq!(
            line["cost_micros"],
            expected[line["run_id"].as_str().unwrap()],
            "{line}"
        );
    }
    assert_eq!(statement["totals"]["cost_micros"], 11_163);

    let csv = app
        .http
        .get(format!(
            "{}/v1/usage/runs?month={month}&format=csv",
            app.url
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert!(csv.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = csv.text().await.unwrap();
    let mut rows = text.lines();
    assert_eq!(
        rows.next().unwrap(),
        "run_id,created_at,agent,version,status,input_tokens,output_tokens,llm_calls,fee_micros,token_cost_micros,cost_micros"
    );
    let mut total = 0;
    for row in rows {
        let cells: Vec<&str> = row.split(',').collect();
        assert_eq!(cells.len(), 11, "{row}");
        let cost: i64 = cells[10].parse().unwrap();
        assert_eq!(cost, expected[cells[0]]);
        total += cost;
    }
    assert_eq!(total, 11_163);

    // In pages: two lines, then the third; the month's totals on each.
    let (_, first) = app
        .get(&format!("/v1/usage/runs?month={month}&limit=2"))
        .await;
    assert_eq!(first["data"].as_array().unwrap().len(), 2);
    assert_eq!(first["totals"]["cost_micros"], 11_163);
    let cursor = first["next_cursor"].as_str().unwrap().to_owned();
    let (_, second) = app
        .get(&format!(
            "/v1/usage/runs?month={month}&limit=2&cursor={cursor}"
        ))
        .await;
    let ids: Vec<&str> = first["data"]
        .as_array()
        .unwrap()
        .iter()
        .chain(second["data"].as_array().unwrap())
        .map(|line| line["run_id"].as_str().unwrap())
        .collect();
    let all: Vec<&str> = lines
        .iter()
        .map(|l| l["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, all, "the pages are the statement, in order");
    assert_eq!(second["next_cursor"], serde_json::Value::Null);
    // CSV pages point at the next one.
    let page = app
        .http
        .get(format!(
            "{}/v1/usage/runs?month={month}&format=csv&limit=2",
            app.url
        ))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let link = page.headers()["link"].to_str().unwrap().to_owned();
    assert_eq!(
        link,
        format!("</v1/usage/runs?month={month}&format=csv&limit=2&cursor={cursor}>; rel=\"next\"")
    );
    assert_eq!(
        page.text().await.unwrap().lines().count(),
        3,
        "header and two lines"
    );
    let (status, body) = app
        .get(&format!("/v1/usage/runs?month={month}&limit=10001"))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );

    let (status, body) = app.get("/v1/usage/runs?month=2026-13").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_query"))
    );
}
