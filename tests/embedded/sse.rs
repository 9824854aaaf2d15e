use std::collections::HashMap;
use std::time::Duration;

use agentrun::mock_llm::{Latency, MockScript, MockTurn};
use agentrun_e2e::{seqs, spawn_app_with, TestApp};
use serde_json::{json, Value};

use agentrun_e2e::{agent, echo_tool};

/// Four steps, 150 ms of model latency each: long enough to watch.
async fn app_with_slow_run() -> (TestApp, String) {
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::tool("noop", json!({"n": 2})),
            MockTurn::tool("noop", json!({"n": 3})),
            MockTurn::text("finished"),
        ],
        latency_ms: Latency::Fixed(150),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("streamer".to_owned(), script)])).await;
    app.put_agent(
        "streamer",
        agent("streamer", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let id = app.start_run("streamer", json!("go")).await;
    (app, id)
}

async fn db_seqs(app: &TestApp, id: &str) -> Vec<i64> {
    app.db()
        .await
        .query(
            "SELECT seq FROM run_events WHERE run_id = $1 ORDER BY seq",
            &[&id.parse::<uuid::Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_while_the_run_is_going_and_the_stream_ends_after_the_terminal_event() {
    let (app, id) = app_with_slow_run().await;
    let mut stream = app.open_events(&id, None).await;
    let mut received = Vec::new();
    let mut status_at_first_step_completed = None;
    while let Some(event) = stream.next(Duration::from_secs(20)).await {
        if event.event == "step.completed" && status_at_first_step_completed.is_none() {
            status_at_first_step_completed =
                Some(app.run(&id).await["status"].as_str().unwrap().to_owned());
        }
        received.push(event);
    }
    // The first step's events were delivered while later steps were still to come.
    assert_eq!(status_at_first_step_completed.as_deref(), Some("running"));
    assert_eq!(received.last().unwrap().event, "run.succeeded");
    assert_eq!(seqs(&received), db_seqs(&app, &id).await);
    let frame: Value = serde_json::from_str(&received[0].data).unwrap();
    assert_eq!(frame["seq"], 1);
    assert_eq!(frame["type"], "run.queued");
    assert_eq!(frame["run_id"], id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnecting_with_last_event_id_gives_no_gap_and_no_duplicate() {
    let (app, id) = app_with_slow_run().await;
    let mut first = app.open_events(&id, None).await;
    let mut got = Vec::new();
    for _ in 0..5 {
        got.push(first.next(Duration::from_secs(10)).await.unwrap());
    }
    drop(first); // the client goes away mid-run
    let last: i64 = got.last().unwrap().id.as_deref().unwrap().parse().unwrap();
    let mut second = app.open_events(&id, Some(last)).await;
    while let Some(event) = second.next(Duration::from_secs(20)).await {
        got.push(event);
    }
    let all = seqs(&got);
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    assert_eq!(all, db_seqs(&app, &id).await);
    assert_eq!(got.last().unwrap().event, "run.succeeded");
    // The disconnect did not disturb the run.
    assert_eq!(app.run(&id).await["status"], "succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribing_after_the_run_ended_replays_everything_and_after_skips() {
    let (app, id) = app_with_slow_run().await;
    app.wait_finished(&id, Duration::from_secs(20)).await;
    let replay = app.all_events(&id).await;
    assert_eq!(seqs(&replay), db_seqs(&app, &id).await);
    assert_eq!(replay.last().unwrap().event, "run.succeeded");

    let response = app
        .http
        .get(format!("{}/v1/runs/{id}/events?after=3", app.url))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    let text = response.text().await.unwrap();
    let mut parser = agentrun::sse_client::SseParser::default();
    let tail = parser.push(text.as_bytes());
    assert_eq!(seqs(&tail), (4..=replay.len() as i64).collect::<Vec<_>>());
}

/// Counts reads, so a test can tell how many readers a run's streams cost.
struct CountingSource {
    ledger: agentrun::ledger::Ledger,
    reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl agentrun::ports::EventSource for CountingSource {
    async fn events_after(
        &self,
        run: agentrun::domain::RunId,
        after: i64,
        limit: i64,
    ) -> Result<Vec<agentrun::domain::RunEvent>, agentrun::ports::EventSourceError> {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        agentrun::ports::EventSource::events_after(&self.ledger, run, after, limit).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_subscribers_of_one_run_share_one_follower() {
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::tool("noop", json!({"n": 2})),
            MockTurn::tool("noop", json!({"n": 3})),
            MockTurn::text("finished"),
        ],
        latency_ms: Latency::Fixed(500),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("crowd".to_owned(), script)])).await;
    app.put_agent(
        "crowd",
        agent("crowd", json!({"tools": [echo_tool("noop")]})),
    )
    .await;
    let source = Arc::new(CountingSource {
        ledger: app.platform.engine.ledger.clone(),
        reads: Default::default(),
    });
    let mut state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        app.platform.orchestrator.clone(),
        None,
    )
    .reading_events_from(source.clone());
    state.streams = agentrun::api::StreamGate::new(agentrun::api::StreamLimits {
        per_team: 500,
        total: 500,
        max_lifetime: Duration::from_secs(60),
        max_idle: None,
    });
    let followers = state.followers.clone();
    let streams_url = format!(
        "http://{}",
        agentrun_e2e::serve(agentrun::api::router(state)).await.0
    );

    let id = app.start_run("crowd", json!("go")).await;
    let subscribers: Vec<_> = (0..200)
        .map(|_| {
            let request = app
                .http
                .get(format!("{streams_url}/v1/runs/{id}/events"))
                .bearer_auth(&app.key);
            tokio::spawn(async move {
                let response = request.send().await.unwrap();
                assert_eq!(response.status(), 200);
                let text = tokio::time::timeout(Duration::from_secs(30), response.text())
                    .await
                    .expect("the stream ends after the terminal event")
                    .unwrap();
                agentrun::sse_client::SseParser::default().push(text.as_bytes())
            })
        })
        .collect();
    let mut most_followers = 0;
    while subscribers.iter().any(|s| !s.is_finished()) {
        most_followers = most_followers.max(followers.active());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let expected = db_seqs(&app, &id).await;
    for subscriber in subscribers {
        let events = subscriber.await.unwrap();
        assert_eq!(
            seqs(&events),
            expected,
            "every subscriber saw every event once"
        );
        assert_eq!(events.last().unwrap().event, "run.succeeded");
    }
    assert_eq!(most_followers, 1, "one follower for the run");
    let reads = source.reads.load(Ordering::SeqCst);
    // One follower reads once per commit signal or poll tick (~4 s of run);
    // a reader per stream would read at least 200 times.
    assert!(reads < 60, "{reads} reads for 200 subscribers");
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while followers.active() > 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(followers.active(), 0, "the follower ended with the run");
}

/// A stream that sends nothing for its idle limit ends with a `retry:`
/// hint (nobody may be reading it); the client resumes with Last-Event-ID
/// and misses nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_stream_ends_with_a_retry_hint_and_resumes_without_a_gap() {
    let script = MockScript {
        turns: vec![MockTurn::text("late")],
        latency_ms: Latency::Fixed(2_500),
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("quiet".to_owned(), script)])).await;
    app.put_agent("quiet", agent("quiet", json!({}))).await;
    let mut state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        app.platform.orchestrator.clone(),
        None,
    );
    state.streams = agentrun::api::StreamGate::new(agentrun::api::StreamLimits {
        max_idle: Some(Duration::from_millis(700)),
        ..agentrun::api::StreamLimits::default()
    });
    let url = format!(
        "http://{}",
        agentrun_e2e::serve(agentrun::api::router(state)).await.0
    );
    let id = app.start_run("quiet", json!("go")).await;
    let started = std::time::Instant::now();
    let first = app
        .http
        .get(format!("{url}/v1/runs/{id}/events"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_millis(2_200),
        "ended while the model was still answering"
    );
    assert!(first.contains("retry: 1000"), "{first}");
    let seen = agentrun::sse_client::SseParser::default().push(first.as_bytes());
    assert!(seen.iter().all(|e| e.event != "run.succeeded"));
    let last = seqs(&seen).last().copied().unwrap_or(0);
    // Resumed: the rest, then the stream ends with the run.
    let mut rest = Vec::new();
    loop {
        let text = app
            .http
            .get(format!("{url}/v1/runs/{id}/events"))
            .bearer_auth(&app.key)
            .header(
                "last-event-id",
                rest.last()
                    .map_or(last, |e: &(i64, String)| e.0)
                    .to_string(),
            )
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let frames = agentrun::sse_client::SseParser::default().push(text.as_bytes());
        rest.extend(
            seqs(&frames)
                .into_iter()
                .zip(frames.iter().map(|f| f.event.clone())),
        );
        if rest.last().is_some_and(|(_, kind)| kind == "run.succeeded") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(20));
    }
    let mut all = seqs(&seen);
    all.extend(rest.iter().map(|(seq, _)| *seq));
    assert_eq!(all, db_seqs(&app, &id).await, "no gap, no duplicate");
}

/// Where streams are served elsewhere (the relay's URL, in AWS), the API
/// answers 307 with that URL, for the team's own runs only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buffered_api_points_event_streams_at_the_relay() {
    let (app, id) = app_with_slow_run().await;
    let mut state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        app.platform.orchestrator.clone(),
        None,
    );
    state.stream_url = Some("https://relay.example.test/".into());
    let url = format!(
        "http://{}",
        agentrun_e2e::serve(agentrun::api::router(state)).await.0
    );
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let answer = client
        .get(format!("{url}/v1/runs/{id}/events?after=3"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 307);
    let target = format!("https://relay.example.test/v1/runs/{id}/events?after=3");
    assert_eq!(answer.headers()["location"], target.as_str());
    let body: Value = answer.json().await.unwrap();
    assert_eq!(body["stream_url"], target.as_str());
    let (_, other_key) = app.create_team("other", json!({})).await;
    let foreign = client
        .get(format!("{url}/v1/runs/{id}/events"))
        .bearer_auth(&other_key)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404, "another team's run is not confirmed");
}
