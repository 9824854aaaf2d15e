//! One contract for every hot-store adapter: the same checks against the
//! PostgreSQL tables (embedded) and the DynamoDB table (AWS, on the emulator).

use agentrun::adapters::aws::{sdk_config, DynamoHotStore};
use agentrun::adapters::postgres::PgHotStore;
use agentrun::domain::{RunId, TeamId};
use agentrun::ledger::Ledger;
use agentrun::ports::{HotStore, IdempotencyClaim, TokenReservation};
use agentrun_e2e::cloud::aws_endpoint;
use agentrun_e2e::fresh_database;

async fn contract(store: &dyn HotStore) {
    let team = TeamId::new();
    let (r1, r2, r3, r4) = (RunId::new(), RunId::new(), RunId::new(), RunId::new());

    // Idempotency keys: the first claim wins, later ones see it.
    assert_eq!(
        store
            .claim_idempotency_key(team, "k", "h1", r1)
            .await
            .unwrap(),
        IdempotencyClaim::Claimed
    );
    assert_eq!(
        store
            .claim_idempotency_key(team, "k", "h2", r2)
            .await
            .unwrap(),
        IdempotencyClaim::Existing {
            request_hash: "h1".into(),
            run_id: r1
        }
    );

    // Cancel flags keep the first reason.
    assert_eq!(store.cancel_flag(r1).await.unwrap(), None);
    store.set_cancel_flag(r1, "first").await.unwrap();
    store.set_cancel_flag(r1, "second").await.unwrap();
    assert_eq!(
        store.cancel_flag(r1).await.unwrap().as_deref(),
        Some("first")
    );

    // Slots: a limit, idempotent grants, idempotent release.
    assert!(store.acquire_run_slot(team, r1, 2).await.unwrap());
    assert!(
        store.acquire_run_slot(team, r1, 2).await.unwrap(),
        "a holder keeps its slot"
    );
    assert!(store.acquire_run_slot(team, r2, 2).await.unwrap());
    assert!(
        !store.acquire_run_slot(team, r3, 2).await.unwrap(),
        "the limit holds"
    );
    assert_eq!(store.running_runs(team).await.unwrap(), 2);
    let holders: Vec<RunId> = store
        .slot_holders()
        .await
        .unwrap()
        .into_iter()
        .filter(|h| h.team == team)
        .map(|h| h.run)
        .collect();
    assert!(
        holders.contains(&r1) && holders.contains(&r2) && holders.len() == 2,
        "{holders:?}"
    );
    store.release_run(r1).await.unwrap();
    store.release_run(r1).await.unwrap();
    assert_eq!(store.running_runs(team).await.unwrap(), 1);
    assert_eq!(
        store.cancel_flag(r1).await.unwrap(),
        None,
        "release drops the flag"
    );
    assert!(store.acquire_run_slot(team, r3, 2).await.unwrap());
    assert!(
        !store.acquire_run_slot(team, RunId::new(), 2).await.unwrap(),
        "a second release of the same run frees nothing"
    );

    // Token reservations against a day's budget of 1,000.
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 27).unwrap();
    let reserve = |step_no, tokens| TokenReservation {
        team,
        run: r4,
        step_no,
        day,
        tokens,
    };
    assert!(store.reserve_tokens(reserve(1, 400), 1000).await.unwrap());
    assert!(
        store.reserve_tokens(reserve(1, 400), 1000).await.unwrap(),
        "a retried step keeps its reservation"
    );
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (0, 400));
    assert!(
        !store.reserve_tokens(reserve(2, 700), 1000).await.unwrap(),
        "400 + 700 > 1,000"
    );
    store.settle_tokens(r4, 1, 300).await.unwrap();
    store.settle_tokens(r4, 1, 300).await.unwrap();
    assert_eq!(
        store.tokens_of_day(team, day).await.unwrap(),
        (300, 0),
        "settled once"
    );
    assert!(store.reserve_tokens(reserve(2, 700), 1000).await.unwrap());
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (300, 700));
    store.cancel_reservation(r4, 2).await.unwrap();
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (300, 0));
    assert!(store.reserve_tokens(reserve(3, 500), 1000).await.unwrap());
    store.release_run(r4).await.unwrap();
    assert_eq!(
        store.tokens_of_day(team, day).await.unwrap(),
        (300, 0),
        "ending a run drops open reservations"
    );

    // The previous step settles as the next one reserves, in one go.
    let r5 = RunId::new();
    let next = |step_no, tokens| TokenReservation {
        team,
        run: r5,
        step_no,
        day,
        tokens,
    };
    assert!(store
        .settle_and_reserve(None, next(1, 200), 1000)
        .await
        .unwrap());
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (300, 200));
    assert!(store
        .settle_and_reserve(Some((1, 50)), next(2, 600), 1000)
        .await
        .unwrap());
    assert_eq!(
        store.tokens_of_day(team, day).await.unwrap(),
        (350, 600),
        "step 1 settled to 50, step 2 set aside 600"
    );
    assert!(
        store
            .settle_and_reserve(Some((1, 50)), next(2, 600), 1000)
            .await
            .unwrap(),
        "a retried step keeps its reservation, settled once"
    );
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (350, 600));
    assert!(
        !store
            .settle_and_reserve(Some((2, 100)), next(3, 600), 1000)
            .await
            .unwrap(),
        "450 + 600 > 1,000: refused, the settlement stands"
    );
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (450, 0));
    assert!(store
        .settle_and_reserve(None, next(3, 500), 1000)
        .await
        .unwrap());
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (450, 500));
    store.release_run(r5).await.unwrap();
    assert_eq!(store.tokens_of_day(team, day).await.unwrap(), (450, 0));

    // Rate: one a second, bursts of two.
    assert_eq!(store.take_rate_token(team, 1.0, 2).await.unwrap(), None);
    assert_eq!(store.take_rate_token(team, 1.0, 2).await.unwrap(), None);
    let wait = store
        .take_rate_token(team, 1.0, 2)
        .await
        .unwrap()
        .expect("the third is limited");
    assert!(wait <= std::time::Duration::from_secs(1), "{wait:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postgres_hot_store_keeps_the_contract() {
    let url = fresh_database().await;
    Ledger::connect(&url, 2).unwrap().migrate().await.unwrap();
    contract(&PgHotStore::connect(&url, 4).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dynamodb_hot_store_keeps_the_contract() {
    let config = sdk_config(Some(&aws_endpoint())).await;
    let table = agentrun_e2e::cloud::create_hot_table(&config).await;
    contract(&DynamoHotStore::new(&config, table)).await;
}
