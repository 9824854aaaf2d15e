//! The web console: served from the binary at `/console`, with a content
//! security policy that keeps the page to this server.

use agentrun_e2e::spawn_app;

/// The page and its two assets are served without a key, with their types
/// and the policy, and none of them loads anything from elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_is_served_from_the_binary_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let anonymous = reqwest::Client::new();
    let mut bodies = Vec::new();
    for (path, content_type) in [
        ("/console", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = anonymous
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(header("content-type").starts_with(content_type), "{path}");
        assert!(
            header("content-security-policy").starts_with("default-src 'self'"),
            "{path}"
        );
        bodies.push(response.text().await.unwrap());
    }
    assert!(bodies[0].contains("/console/console.js"), "{}", bodies[0]);
    assert!(bodies[0].contains("/console/console.css"), "{}", bodies[0]);
    // What would make the browser reach another origin.
    let external = [
        "src=\"http",
        "src='http",
        "src=\"//",
        "src='//",
        "href=\"http",
        "href='http",
        "href=\"//",
        "href='//",
        "action=\"http",
        "url(http",
        "url(\"http",
        "url('http",
        "url(//",
        "@import",
        "fetch(\"http",
        "fetch('http",
        "fetch(`http",
        "eventsource(\"http",
        "eventsource('http",
        "eventsource(`http",
    ];
    for body in &bodies {
        let lower = body.to_lowercase().replace(' ', "");
        for pattern in external {
            assert!(!lower.contains(pattern), "an external reference: {pattern}");
        }
    }
}
