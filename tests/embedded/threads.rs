//! Conversations: a run that continues an earlier one begins with its
//! messages; the runs of a thread form a chain, per team.

use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Latency, MockScript, MockTurn};
use agentrun_e2e::{agent, echo_tool, spawn_app_with};
use serde_json::{json, Value};

/// The conversation of a run as the ledger holds it.
async fn messages(app: &agentrun_e2e::TestApp, id: &str) -> Vec<Value> {
    app.db()
        .await
        .query(
            "SELECT message FROM run_messages WHERE run_id = $1 ORDER BY seq",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_two_run_thread_begins_the_second_prompt_with_the_first_runs_messages() {
    // The mock picks its answer by the assistant turns in the conversation:
    // the second run answers "second answer" only if its prompt holds the
    // first run's two turns.
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({})),
            MockTurn::text("first answer"),
            MockTurn::text("second answer"),
        ],
        latency_ms: Latency::Fixed(500),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("chat".to_owned(), script)])).await;
    app.put_agent("chat", agent("chat", json!({"tools": [echo_tool("noop")]})))
        .await;
    let first = app.start_run("chat", json!("hello")).await;
    let done = app.wait_finished(&first, Duration::from_secs(20)).await;
    assert_eq!(done["output"], "first answer", "{done}");
    assert_eq!(
        done["thread_id"],
        first.as_str(),
        "a run begins its own thread"
    );

    let continuation = json!({"agent": "chat", "input": "and again", "thread_id": first});
    let (status, _, second) = app.post_run(&continuation, Some("go-on")).await;
    assert_eq!(status, 202, "{second}");
    // The same request again is the same run, though the thread is busy now.
    let (status, _, again) = app.post_run(&continuation, Some("go-on")).await;
    assert_eq!((status, &again["id"]), (202, &second["id"]), "{again}");
    assert_eq!(second["thread_id"], first.as_str());
    assert_eq!(second["previous_run_id"], first.as_str());
    let second_id = second["id"].as_str().unwrap().to_owned();

    // While the thread's newest run goes on, the thread cannot go on too.
    let (status, _, busy) = app
        .post_run(
            &json!({"agent": "chat", "input": "meanwhile", "thread_id": first}),
            None,
        )
        .await;
    assert_eq!(status, 409, "{busy}");
    assert_eq!(busy["error"]["code"], "thread_busy");

    let done = app.wait_finished(&second_id, Duration::from_secs(20)).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["output"], "second answer", "{done}");
    let conversation = messages(&app, &second_id).await;
    let earlier = messages(&app, &first).await;
    assert_eq!(conversation[..earlier.len()], earlier[..]);
    assert_eq!(conversation[0]["content"], "hello");
    assert_eq!(conversation[earlier.len()]["content"], "and again");
    assert_eq!(conversation.last().unwrap()["content"], "second answer");

    // The thread lists its runs, newest first.
    let (status, thread) = app.get(&format!("/v1/threads/{first}")).await;
    assert_eq!(status, 200, "{thread}");
    let ids: Vec<&str> = thread["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|run| run["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [second_id.as_str(), first.as_str()]);

    // A run is continued once: the first run is the second's already.
    let (status, _, taken) = app
        .post_run(
            &json!({"agent": "chat", "input": "fork", "previous_run_id": first}),
            None,
        )
        .await;
    assert_eq!(status, 409, "{taken}");
    assert_eq!(taken["error"]["code"], "thread_busy");
    // The newest run may be named directly.
    let (status, _, third) = app
        .post_run(
            &json!({"agent": "chat", "input": "once more", "previous_run_id": second_id}),
            None,
        )
        .await;
    assert_eq!(status, 202, "{third}");
    assert_eq!(third["thread_id"], first.as_str());
    let third_id = third["id"].as_str().unwrap().to_owned();
    app.wait_finished(&third_id, Duration::from_secs(20)).await;

    // Wrong requests.
    let nobody = uuid::Uuid::now_v7();
    for (body, answer) in [
        (
            json!({"agent": "chat", "input": "x", "thread_id": first, "previous_run_id": first}),
            (400, "invalid_body"),
        ),
        (
            json!({"agent": "chat", "input": "x", "thread_id": nobody}),
            (404, "thread_not_found"),
        ),
        (
            json!({"agent": "chat", "input": "x", "previous_run_id": nobody}),
            (404, "run_not_found"),
        ),
    ] {
        let (status, _, refused) = app.post_run(&body, None).await;
        assert_eq!(
            (status, refused["error"]["code"].as_str()),
            (answer.0, Some(answer.1)),
            "{body}"
        );
    }
    let (status, _) = app.get(&format!("/v1/threads/{nobody}")).await;
    assert_eq!(status, 404);

    // Threads are per team: another team sees none of it.
    let (_, other_key) = app.create_team("other", json!({})).await;
    let (status, _) = app
        .call_as(&other_key, "GET", &format!("/v1/threads/{first}"), None)
        .await;
    assert_eq!(status, 404);
    app.call_as(
        &other_key,
        "PUT",
        "/v1/agents/chat",
        Some(agent("chat", json!({}))),
    )
    .await;
    let (status, refused) = app
        .call_as(
            &other_key,
            "POST",
            "/v1/runs",
            Some(json!({"agent": "chat", "input": "x", "thread_id": first})),
        )
        .await;
    assert_eq!(
        (status, refused["error"]["code"].clone()),
        (404, json!("thread_not_found"))
    );
    assert_eq!(
        app.count("SELECT count(*) FROM runs WHERE thread_id = $1", &first)
            .await,
        3,
        "no run joined the thread from another team or a refused request"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_concurrent_continuations_of_one_run_create_one() {
    let app = spawn_app_with(HashMap::from([(
        "chat".to_owned(),
        MockScript::turns(vec![MockTurn::text("hi")]),
    )]))
    .await;
    app.put_agent("chat", agent("chat", json!({}))).await;
    let first = app.start_run("chat", json!("hello")).await;
    app.wait_finished(&first, Duration::from_secs(20)).await;
    // The first run's slot is given back just after it ends.
    app.assert_slots_released().await;
    let body = json!({"agent": "chat", "input": "next", "previous_run_id": first});
    let answers = futures_util::future::join_all((0..10).map(|_| app.post_run(&body, None))).await;
    let statuses: Vec<u16> = answers.iter().map(|(status, _, _)| *status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 202).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        answers
            .iter()
            .filter(|(status, _, _)| *status != 202)
            .all(|(status, _, body)| *status == 409 && body["error"]["code"] == "thread_busy"),
        "{answers:?}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM runs WHERE thread_id = $1", &first)
            .await,
        2,
        "the first run and its one continuation"
    );
    // The losers gave their slots back, and the winner its own at its end.
    let (_, _, winner) = answers
        .iter()
        .find(|(status, _, _)| *status == 202)
        .unwrap();
    app.wait_finished(winner["id"].as_str().unwrap(), Duration::from_secs(20))
        .await;
    app.assert_slots_released().await;
}
