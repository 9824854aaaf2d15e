//! The ledger over TLS, against a PostgreSQL that accepts only TLS
//! (`scripts/tls-postgres.sh`, started by `make test`).

use agentrun::ledger::Ledger;

/// The TLS server's URL and CA file, when `make test` started one.
fn tls_server() -> Option<(String, String)> {
    let url = std::env::var("AGENTRUN_TEST_TLS_DATABASE_URL").ok()?;
    let ca = std::env::var("AGENTRUN_TEST_TLS_CA").ok()?;
    Some((url, ca))
}

/// Whether this connection is encrypted, as the server sees it.
async fn encrypted(ledger: &Ledger) -> Result<bool, String> {
    let client = ledger.pool().get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_connects_over_tls_and_checks_the_certificate() {
    let Some((url, ca)) = tls_server() else {
        eprintln!(
            "SKIPPED: no TLS PostgreSQL (AGENTRUN_TEST_TLS_DATABASE_URL); `make test` starts one"
        );
        return;
    };
    // verify-full against the test CA: encrypted, and the ledger works on it.
    let verified =
        Ledger::connect(&format!("{url}?sslmode=verify-full&sslrootcert={ca}"), 2).unwrap();
    assert_eq!(encrypted(&verified).await, Ok(true));
    verified.migrate().await.expect("migrations over TLS");
    verified.ping().await.unwrap();

    // require: encrypted without checking the certificate.
    let required = Ledger::connect(&format!("{url}?sslmode=require"), 1).unwrap();
    assert_eq!(encrypted(&required).await, Ok(true));

    // verify-full with the public roots: the test CA is not among them.
    let untrusted = Ledger::connect(&format!("{url}?sslmode=verify-full"), 1).unwrap();
    let refused = encrypted(&untrusted).await.unwrap_err();
    assert!(refused.to_lowercase().contains("certificate"), "{refused}");

    // Plain text: this server accepts only TLS.
    let plain = Ledger::connect(&format!("{url}?sslmode=disable"), 1).unwrap();
    assert!(encrypted(&plain).await.is_err());
}
