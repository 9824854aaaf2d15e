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

    // The console's stream: a token whose URL is the relay's own, a page
    // allowed to reach the relay, and a relay that lets the page read it.
    let issued: Value = client
        .post(format!("{url}/v1/runs/{id}/stream-token"))
        .bearer_auth(&app.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = issued["token"].as_str().unwrap();
    assert_eq!(
        issued["events_url"],
        format!("https://relay.example.test/v1/runs/{id}/events?token={token}").as_str()
    );
    let page = client.get(format!("{url}/console")).send().await.unwrap();
    let policy = page.headers()["content-security-policy"].to_str().unwrap();
    assert!(
        policy.contains("connect-src 'self' https://relay.example.test;"),
        "{policy}"
    );
    let relay_state = agentrun::api::AppState::new(
        app.platform.engine.clone(),
        app.platform.orchestrator.clone(),
        None,
    );
    let relay = agentrun_e2e::serve(agentrun::api::relay_router(relay_state))
        .await
        .0;
    let stream = client
        .get(format!("http://{relay}/v1/runs/{id}/events?token={token}"))
        .header("origin", "http://console.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["access-control-allow-origin"], "*");
}

/// What the streaming agent's model writes in its last turn.
fn streamed_answer() -> String {
    "The refund of order 1234 was approved; the customer gets 42 dollars back \
     within five working days, and a confirmation email is on its way. "
        .repeat(3)
}

/// A streaming agent on `provider`: a tool call, then a long text answer
/// that the mock streams in pieces 30 ms apart.
async fn app_with_streaming_run(provider: &str) -> (TestApp, String) {
    let script = MockScript {
        turns: vec![
            MockTurn::tool("noop", json!({"n": 1})),
            MockTurn::text(&streamed_answer()),
        ],
        latency_ms: Latency::Fixed(100),
        chunk_delay_ms: 30,
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("writer".to_owned(), script)])).await;
    app.put_agent(
        "writer",
        agent(
            "writer",
            json!({"tools": [echo_tool("noop")], "stream": true, "provider": provider}),
        ),
    )
    .await;
    let id = app.start_run("writer", json!("go")).await;
    (app, id)
}

fn delta_of(event: &agentrun::sse_client::ParsedEvent) -> (i64, usize, String) {
    assert!(event.id.is_none(), "a delta has no id: {event:?}");
    let data: Value = serde_json::from_str(&event.data).unwrap();
    (
        data["step_no"].as_i64().unwrap(),
        data["offset"].as_u64().unwrap() as usize,
        data["text"].as_str().unwrap().to_owned(),
    )
}

fn durable(events: &[agentrun::sse_client::ParsedEvent]) -> Vec<agentrun::sse_client::ParsedEvent> {
    events
        .iter()
        .filter(|e| e.event != "llm.delta")
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streaming_agents_text_arrives_as_deltas_before_llm_completed() {
    for provider in ["openai", "anthropic"] {
        let (app, id) = app_with_streaming_run(provider).await;
        let events = app.all_events(&id).await;
        let completed_at = events
            .iter()
            .rposition(|e| e.event == "llm.completed")
            .expect("the last turn completed");
        let deltas: Vec<_> = events
            .iter()
            .enumerate()
            .filter(|(_, e)| e.event == "llm.delta")
            .collect();
        assert!(
            deltas.len() >= 2,
            "{provider}: {} deltas in {:?}",
            deltas.len(),
            agentrun_e2e::types(&events)
        );
        assert!(
            deltas.iter().all(|(at, _)| *at < completed_at),
            "{provider}: every delta comes before llm.completed"
        );
        // The pieces, in order and without a gap, are the turn's text.
        let mut text = String::new();
        for (_, event) in &deltas {
            let (step, offset, piece) = delta_of(event);
            assert_eq!(step, 2, "{provider}: only the text turn writes text");
            assert_eq!(
                offset,
                text.chars().count(),
                "{provider}: no gap, no repeat"
            );
            text.push_str(&piece);
        }
        assert_eq!(text, streamed_answer(), "{provider}");
        let run = app.wait_finished(&id, Duration::from_secs(20)).await;
        assert_eq!(run["status"], "succeeded", "{run}");
        assert_eq!(run["output"], json!(streamed_answer()), "{run}");
        // Deltas are not events of the ledger, and every call streamed.
        assert_eq!(seqs(&durable(&events)), db_seqs(&app, &id).await);
        assert_eq!(
            app.count(
                "SELECT count(*) FROM run_events WHERE run_id = $1 AND type = 'llm.delta'",
                &id
            )
            .await,
            0
        );
        let api = if provider == "openai" {
            "chat_completions"
        } else {
            "messages"
        };
        assert_eq!(app.mock.state.requests_in(api), 2, "{provider}");
        assert_eq!(app.mock.state.requests_in("streamed"), 2, "{provider}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_last_event_id_gets_no_delta_and_no_event_twice() {
    let (app, id) = app_with_streaming_run("openai").await;
    let mut first = app.open_events(&id, None).await;
    let mut before = Vec::new();
    while before
        .iter()
        .filter(|e: &&agentrun::sse_client::ParsedEvent| e.event == "llm.delta")
        .count()
        < 2
    {
        before.push(first.next(Duration::from_secs(10)).await.unwrap());
    }
    drop(first); // the client goes away while the model writes
    let last = *seqs(&durable(&before)).last().unwrap();
    let mut second = app.open_events(&id, Some(last)).await;
    let mut after = Vec::new();
    while let Some(event) = second.next(Duration::from_secs(20)).await {
        after.push(event);
    }
    // Durable events: each once, in order, from both streams together.
    let all: Vec<i64> = seqs(&durable(&before))
        .into_iter()
        .chain(seqs(&durable(&after)))
        .collect();
    assert_eq!(all, (1..=all.len() as i64).collect::<Vec<_>>());
    assert_eq!(all, db_seqs(&app, &id).await);
    // Deltas: the second stream goes on from where the text was, never
    // sending again what the first had.
    let first_deltas: Vec<_> = before
        .iter()
        .filter(|e| e.event == "llm.delta")
        .map(delta_of)
        .collect();
    let second_deltas: Vec<_> = after
        .iter()
        .filter(|e| e.event == "llm.delta")
        .map(delta_of)
        .collect();
    let (_, offset, piece) = first_deltas.last().unwrap();
    let seen_to = offset + piece.chars().count();
    assert!(!second_deltas.is_empty(), "the model was still writing");
    assert!(
        second_deltas
            .iter()
            .all(|(_, offset, _)| *offset >= seen_to),
        "{first_deltas:?} then {second_deltas:?}"
    );
    let completed_at = after
        .iter()
        .rposition(|e| e.event == "llm.completed")
        .unwrap();
    assert!(after[completed_at..].iter().all(|e| e.event != "llm.delta"));
    assert_eq!(after.last().unwrap().event, "run.succeeded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_breaks_off_is_tried_again_and_its_text_starts_over() {
    let script = MockScript {
        turns: vec![MockTurn::text(&streamed_answer())],
        latency_ms: Latency::Fixed(100),
        chunk_delay_ms: 20,
        stream_breaks: 1,
        ..MockScript::default()
    };
    let app = spawn_app_with(HashMap::from([("writer".to_owned(), script)])).await;
    app.put_agent("writer", agent("writer", json!({"stream": true})))
        .await;
    let id = app.start_run("writer", json!("go")).await;
    let events = app.all_events(&id).await;
    let deltas: Vec<_> = events
        .iter()
        .filter(|e| e.event == "llm.delta")
        .map(delta_of)
        .collect();
    // The broken attempt's text, then the retried one's from offset 0.
    let restart = deltas
        .iter()
        .rposition(|(_, offset, _)| *offset == 0)
        .unwrap();
    assert!(
        restart > 0,
        "the first attempt wrote before it broke: {deltas:?}"
    );
    let mut text = String::new();
    for (_, offset, piece) in &deltas[restart..] {
        assert_eq!(*offset, text.chars().count());
        text.push_str(piece);
    }
    assert_eq!(text, streamed_answer());
    let run = app.wait_finished(&id, Duration::from_secs(20)).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"], json!(streamed_answer()));
    assert_eq!(
        app.mock.state.requests_in("streamed"),
        2,
        "one broken, one whole"
    );
    // One call as the ledger counts it: the broken attempt had no answer.
    assert_eq!(run["usage"]["llm_calls"], 1, "{run}");
}

/// A stream token (for a browser's EventSource, which sends no
/// Authorization header) streams its one run's events and nothing else: an
/// expired, unknown or another run's token is refused, it opens no other
/// endpoint, and another team gets no token for the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_token_streams_its_run_and_nothing_else() {
    let app = agentrun_e2e::spawn_app_with(std::collections::HashMap::from([(
        "tokened".to_owned(),
        agentrun::mock_llm::MockScript::turns(vec![agentrun::mock_llm::MockTurn::text("done")]),
    )]))
    .await;
    app.put_agent(
        "tokened",
        agentrun_e2e::agent("tokened", serde_json::json!({})),
    )
    .await;
    let first = app.start_run("tokened", serde_json::json!("one")).await;
    let second = app.start_run("tokened", serde_json::json!("two")).await;
    app.wait_finished(&first, std::time::Duration::from_secs(20))
        .await;
    app.wait_finished(&second, std::time::Duration::from_secs(20))
        .await;

    let (status, issued) = app
        .call_as(
            &app.key,
            "POST",
            &format!("/v1/runs/{first}/stream-token"),
            None,
        )
        .await;
    assert_eq!(status, 201, "{issued}");
    let token = issued["token"].as_str().unwrap().to_owned();
    assert_eq!(issued["run_id"], first.as_str());
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(issued["expires_at"].clone()).unwrap();
    let left = expires - chrono::Utc::now();
    assert!(left <= chrono::Duration::seconds(300) && left > chrono::Duration::seconds(290));

    let anonymous = reqwest::Client::new();
    let get = |path: String| {
        let anonymous = anonymous.clone();
        let url = format!("{}{path}", app.url);
        async move {
            let response = anonymous.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (status, body) = get(issued["events_url"].as_str().unwrap().to_owned()).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("event: run.succeeded"), "{body}");
    assert!(body.contains(&first), "{body}");

    for (path, why) in [
        (
            format!("/v1/runs/{second}/events?token={token}"),
            "another run",
        ),
        (
            format!("/v1/runs/{first}/events?token=st_{}", "x".repeat(40)),
            "unknown",
        ),
        (format!("/v1/runs/{first}/events"), "no token"),
        (
            format!("/v1/runs/{first}?token={token}"),
            "another endpoint",
        ),
        (
            format!("/v1/runs/{first}/steps?token={token}"),
            "another endpoint",
        ),
    ] {
        let (status, body) = get(path.clone()).await;
        assert_eq!(status, 401, "{why}: {path}: {body}");
        assert!(body.contains("unauthorized"), "{why}: {body}");
    }
    // Expired.
    app.db()
        .await
        .execute(
            "UPDATE stream_tokens SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let (status, body) = get(format!("/v1/runs/{first}/events?token={token}")).await;
    assert_eq!(status, 401, "expired: {body}");
    assert!(body.contains("expired"), "{body}");

    let (_, other_key) = app
        .create_team("token-strangers", serde_json::json!({}))
        .await;
    let (status, body) = app
        .call_as(
            &other_key,
            "POST",
            &format!("/v1/runs/{first}/stream-token"),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
}
