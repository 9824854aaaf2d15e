//! What the HTTP LLM clients share: their settings, the HTTP client, the
//! reading of streamed answers, and the retry loop inside a step's deadline (429 and 5xx, connect errors and
//! timeouts; a `Retry-After` longer than a step may wait goes back to the
//! orchestrator).

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::policy::{full_jitter, LLM_REQUEST_TIMEOUT};
use crate::ports::{ChatResponse, LlmError, TextDeltas};
use crate::secret::Secret;
use crate::sse_client::{ParsedEvent, SseParser};

/// An attempt is not started with less time than this left in the step.
const MIN_ATTEMPT: Duration = Duration::from_secs(1);

/// One provider's endpoint, key and retry policy.
#[derive(Clone, Debug)]
pub struct ProviderSettings {
    /// e.g. `https://api.openai.com/v1`, `https://api.anthropic.com`
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// One request's limit (less when the step has less time left).
    pub request_timeout: Duration,
    /// Retries on 429, 5xx, connect errors and timeouts, within the step.
    pub max_retries: u32,
    pub retry_base: Duration,
    pub retry_max_delay: Duration,
    /// The longest `Retry-After` a step waits out itself; a provider asking
    /// for longer gets the step back to the orchestrator, which waits
    /// without a worker sleeping (`Retryable.RateLimited`).
    pub max_retry_after: Duration,
}

impl ProviderSettings {
    pub fn new(base_url: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            request_timeout: LLM_REQUEST_TIMEOUT,
            max_retries: 3,
            retry_base: Duration::from_millis(500),
            retry_max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(20),
        }
    }

    /// `{base_url}/{path}`, with one slash between.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base_url.trim_end_matches('/'))
    }
}

pub(crate) fn http_client(settings: &ProviderSettings) -> Result<reqwest::Client, LlmError> {
    reqwest::Client::builder()
        .timeout(settings.request_timeout)
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| LlmError::Rejected(format!("cannot build HTTP client: {e}")))
}

/// A request that got no answer.
pub(crate) fn unsent(error: reqwest::Error) -> LlmError {
    LlmError::Unavailable(if error.is_timeout() {
        "request timed out".to_owned()
    } else {
        format!("request failed: {error}")
    })
}

pub(crate) fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let seconds: f64 = value.trim().parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The answer, if its status says it is one, or the error its status
/// means (`busy` are the statuses that mean "slow down": 429, and 529 for
/// Anthropic).
async fn accepted(
    response: reqwest::Response,
    busy: &[u16],
) -> Result<reqwest::Response, LlmError> {
    let status = response.status();
    if busy.contains(&status.as_u16()) {
        return Err(LlmError::RateLimited {
            retry_after: retry_after(response.headers()),
        });
    }
    if status.is_server_error() {
        return Err(LlmError::Unavailable(format!("provider answered {status}")));
    }
    if !status.is_success() {
        let body = response.text().await.unwrap_or_default();
        return Err(LlmError::Rejected(format!(
            "{status}: {}",
            body.chars().take(500).collect::<String>()
        )));
    }
    Ok(response)
}

/// The body of an answer, or the error its status means.
pub(crate) async fn answer_body(
    response: reqwest::Response,
    busy: &[u16],
) -> Result<String, LlmError> {
    accepted(response, busy)
        .await?
        .text()
        .await
        .map_err(|e| LlmError::Unavailable(format!("reading the response failed: {e}")))
}

/// Reads a streamed answer's Server-Sent Events in order: `apply` takes
/// each one into the answer being put together and returns the text it
/// adds, which goes to `deltas` at once (every event gives `deltas` a
/// chance to publish what waits). An answer that is not a stream (a server
/// that ignores `stream: true`) is handed back whole instead.
pub(crate) async fn read_stream(
    response: reqwest::Response,
    busy: &[u16],
    deltas: &dyn TextDeltas,
    mut apply: impl FnMut(ParsedEvent) -> Result<Option<String>, LlmError>,
) -> Result<Option<String>, LlmError> {
    let mut response = accepted(response, busy).await?;
    let streamed = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/event-stream"));
    if !streamed {
        let body = response
            .text()
            .await
            .map_err(|e| LlmError::Unavailable(format!("reading the response failed: {e}")))?;
        return Ok(Some(body));
    }
    deltas.restart();
    let mut parser = SseParser::default();
    while let Some(chunk) = response.chunk().await.map_err(unsent)? {
        for event in parser.push(&chunk) {
            let text = apply(event)?.unwrap_or_default();
            deltas.write(&text).await;
        }
    }
    Ok(None)
}

/// Runs `attempt` (given its timeout) until it answers, fails for good, or
/// the step's `deadline` leaves no time for another try.
pub(crate) async fn with_retries<F, Fut>(
    settings: &ProviderSettings,
    model: &str,
    deadline: Instant,
    attempt: F,
) -> Result<ChatResponse, LlmError>
where
    F: Fn(Duration) -> Fut,
    Fut: Future<Output = Result<ChatResponse, LlmError>>,
{
    let mut retry = 0;
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining < MIN_ATTEMPT {
            return Err(LlmError::Unavailable(
                "no time left in the step for an LLM call".to_owned(),
            ));
        }
        let timeout = settings.request_timeout.min(remaining);
        let error = match attempt(timeout).await {
            Ok(response) => return Ok(response),
            Err(error) => error,
        };
        let retryable = matches!(
            error,
            LlmError::RateLimited { .. } | LlmError::Unavailable(_)
        );
        if !retryable || retry >= settings.max_retries {
            return Err(error);
        }
        retry += 1;
        let backoff = full_jitter(settings.retry_base, settings.retry_max_delay, retry);
        // Honor the provider's Retry-After when it asks for longer, but
        // not by sleeping past what this step may wait.
        let wait = match &error {
            LlmError::RateLimited {
                retry_after: Some(after),
            } => {
                if *after > settings.max_retry_after {
                    return Err(error);
                }
                (*after).max(backoff)
            }
            _ => backoff,
        };
        if Instant::now() + wait + MIN_ATTEMPT > deadline {
            return Err(error);
        }
        tracing::warn!(%model, retry, ?wait, %error, "LLM call failed; retrying");
        tokio::time::sleep(wait).await;
    }
}
