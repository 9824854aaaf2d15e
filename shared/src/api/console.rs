//! `/console`: the web console, static files built into the binary and
//! served as they are (no build step, no requests beyond this server: the
//! content security policy says so to the browser too). The page calls the
//! API with the key it keeps in the tab's sessionStorage, and streams a
//! run's events with a stream token, so the key never goes in a URL.

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::AppState;

const INDEX: &str = include_str!("../console/index.html");
const SCRIPT: &str = include_str!("../console/console.js");
const STYLE: &str = include_str!("../console/console.css");

/// Only this server, for everything the page loads or calls; and the relay,
/// where event streams are served there (AWS), for the stream alone.
fn policy(stream_url: Option<&str>) -> String {
    let relay = stream_url
        .and_then(|url| url::Url::parse(url).ok())
        .map(|url| url.origin().ascii_serialization())
        .filter(|origin| origin != "null");
    let connect = match relay {
        Some(origin) => format!("connect-src 'self' {origin}; "),
        None => String::new(),
    };
    format!(
        "default-src 'self'; {connect}img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    )
}

fn asset(state: &AppState, content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let policy = HeaderValue::from_str(&policy(state.stream_url.as_deref()))
        .unwrap_or_else(|_| HeaderValue::from_static("default-src 'self'"));
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

pub async fn index(State(state): State<AppState>) -> Response {
    asset(&state, "text/html; charset=utf-8", INDEX)
}

pub async fn script(State(state): State<AppState>) -> Response {
    asset(&state, "text/javascript; charset=utf-8", SCRIPT)
}

pub async fn style(State(state): State<AppState>) -> Response {
    asset(&state, "text/css; charset=utf-8", STYLE)
}

#[cfg(test)]
mod tests {
    use super::policy;

    #[test]
    fn the_policy_lets_the_page_reach_the_relay_and_nothing_else() {
        let here = policy(None);
        assert!(here.starts_with("default-src 'self'; img-src"), "{here}");
        assert!(!here.contains("connect-src"), "{here}");
        let aws = policy(Some("https://abc.lambda-url.us-east-1.on.aws/"));
        assert!(
            aws.contains("connect-src 'self' https://abc.lambda-url.us-east-1.on.aws;"),
            "{aws}"
        );
        assert_eq!(policy(Some("not a url")), here);
    }
}
