use std::collections::{HashMap, HashSet};

use agentrun::mock_llm::{MockScript, MockTurn};
use agentrun_e2e::spawn_app_with;
use futures_util::future::join_all;
use serde_json::json;

use agentrun_e2e::agent;

async fn app() -> agentrun_e2e::TestApp {
    let script = MockScript::turns(vec![MockTurn::text("ok")]);
    let app = spawn_app_with(HashMap::from([("idem".to_owned(), script)])).await;
    app.put_agent("idem", agent("idem", json!({}))).await;
    app
}

async fn runs_of_team(app: &agentrun_e2e::TestApp) -> i64 {
    app.db()
        .await
        .query_one(
            "SELECT count(*) FROM runs WHERE team_id = $1",
            &[&app.team.0],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_key_same_body_is_the_same_run_and_a_different_body_conflicts() {
    let app = app().await;
    let body = json!({"agent": "idem", "input": {"ticket": 1}, "metadata": {"source": "test"}});
    let (first_status, first_headers, first) = app.post_run(&body, Some("key-1")).await;
    assert_eq!(first_status, 202);
    assert!(first_headers.get("idempotent-replayed").is_none());
    // Same body with keys in another order is the same request.
    let reordered =
        json!({"metadata": {"source": "test"}, "input": {"ticket": 1}, "agent": "idem"});
    let (second_status, second_headers, second) = app.post_run(&reordered, Some("key-1")).await;
    assert_eq!(second_status, 202);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(second_headers["idempotent-replayed"], "true");

    let (status, _, conflict) = app
        .post_run(
            &json!({"agent": "idem", "input": {"ticket": 2}}),
            Some("key-1"),
        )
        .await;
    assert_eq!(status, 409);
    assert_eq!(conflict["error"]["code"], "idempotency_key_conflict");
    assert_eq!(conflict["error"]["details"]["run_id"], first["id"]);
    assert_eq!(runs_of_team(&app).await, 1);

    // Without a key every POST is a new run.
    app.post_run(&body, None).await;
    assert_eq!(runs_of_team(&app).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_posts_with_one_key_create_exactly_one_run() {
    let app = app().await;
    let body = json!({"agent": "idem", "input": "hello"});
    let responses = join_all((0..50).map(|_| app.post_run(&body, Some("burst-key")))).await;
    let ids: HashSet<String> = responses
        .iter()
        .map(|(status, _, run)| {
            assert_eq!(*status, 202, "{run}");
            run["id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(runs_of_team(&app).await, 1);
    let id = ids.into_iter().next().unwrap();
    let run = app
        .wait_finished(&id, std::time::Duration::from_secs(20))
        .await;
    assert_eq!(run["status"], "succeeded");
    assert_eq!(app.mock.state.requests("idem"), 1);
}
