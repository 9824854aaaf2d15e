//! A fault-injecting proxy in front of the emulator's DynamoDB. It forwards
//! every request, except that it answers some writes itself the way
//! DynamoDB does under contention — a transaction cancelled for a
//! conflict or for throttling, a single write refused because a transaction
//! holds the item — without passing them on, so nothing of them is applied.
//! (The emulator never produces these answers.)

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};

use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use serde_json::{json, Value};

use crate::serve;

/// What the proxy answered by itself, by kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Injected {
    /// `TransactionCanceledException` with a `TransactionConflict` reason.
    pub transaction_conflicts: u32,
    /// `TransactionCanceledException` with a `ThrottlingError` reason.
    pub transaction_throttles: u32,
    /// `TransactionConflictException` on a single-item write.
    pub write_conflicts: u32,
}

#[derive(Default)]
struct State {
    /// Whether contention is injected (else requests only pass through).
    contention: bool,
    /// While set, every request is answered 503, as by an endpoint that is away.
    down: bool,
    /// Tries seen per distinct request body (a retry sends the same body).
    tries: HashMap<u64, u32>,
    injected: Injected,
}

pub struct DynamoFaults {
    /// Point the DynamoDB client here.
    pub url: String,
    state: Arc<Mutex<State>>,
}

impl DynamoFaults {
    /// Every transaction is cancelled for a conflict on its first try and
    /// every other one also for throttling on its second; every third
    /// distinct put or delete meets a transaction in progress once.
    pub async fn start(upstream: String) -> Self {
        Self::serve(upstream, true).await
    }

    /// Requests only pass through (until `set_down`).
    pub async fn passthrough(upstream: String) -> Self {
        Self::serve(upstream, false).await
    }

    /// While `down`, every request gets 503 (the SDK's retries then give up).
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    async fn serve(upstream: String, contention: bool) -> Self {
        let state: Arc<Mutex<State>> = Arc::new(Mutex::new(State {
            contention,
            ..State::default()
        }));
        let shared = state.clone();
        let http = reqwest::Client::new();
        let app = axum::Router::new().fallback(
            move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
                let (state, http, upstream) = (shared.clone(), http.clone(), upstream.clone());
                async move {
                    if let Some(fault) = fault_for(&state, &headers, &body) {
                        return fault;
                    }
                    forward(&http, &upstream, method, uri, headers, body).await
                }
            },
        );
        let (address, _) = serve(app).await;
        Self {
            url: format!("http://{address}"),
            state,
        }
    }

    pub fn injected(&self) -> Injected {
        self.state.lock().unwrap().injected.clone()
    }
}

fn fault_for(state: &Mutex<State>, headers: &HeaderMap, body: &Bytes) -> Option<Response> {
    {
        let state = state.lock().unwrap();
        if state.down {
            return Some(
                Response::builder()
                    .status(StatusCode::SERVICE_UNAVAILABLE)
                    .header("content-type", "application/x-amz-json-1.0")
                    .body(Body::from(
                        json!({"__type": "com.amazonaws.dynamodb.v20120810#ServiceUnavailable",
                               "message": "away"})
                        .to_string(),
                    ))
                    .unwrap(),
            );
        }
        if !state.contention {
            return None;
        }
    }
    let target = headers.get("x-amz-target")?.to_str().ok()?;
    let operation = target.rsplit('.').next()?;
    // The SDK gives each transaction call a fresh ClientRequestToken; the
    // rest of a retried request is the same.
    let mut request: Value = serde_json::from_slice(body).ok()?;
    if let Some(fields) = request.as_object_mut() {
        fields.remove("ClientRequestToken");
    }
    let mut hasher = DefaultHasher::new();
    request.to_string().hash(&mut hasher);
    let digest = hasher.finish();
    let mut state = state.lock().unwrap();
    let tries = {
        let tries = state.tries.entry(digest).or_insert(0);
        *tries += 1;
        *tries
    };
    match operation {
        "TransactWriteItems" => {
            let items = request["TransactItems"]
                .as_array()
                .map_or(1, Vec::len)
                .max(1);
            let reason = match tries {
                1 => "TransactionConflict",
                2 if digest.is_multiple_of(2) => "ThrottlingError",
                _ => return None,
            };
            if reason == "TransactionConflict" {
                state.injected.transaction_conflicts += 1;
            } else {
                state.injected.transaction_throttles += 1;
            }
            let mut reasons = vec![json!({"Code": "None"}); items];
            reasons[items - 1] = json!({"Code": reason, "Message": "injected"});
            let message = format!(
                "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                reasons
                    .iter()
                    .map(|r| r["Code"].as_str().unwrap_or("None"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Some(error_response(json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                "Message": message,
                "CancellationReasons": reasons,
            })))
        }
        "PutItem" | "DeleteItem" if tries == 1 && digest.is_multiple_of(3) => {
            state.injected.write_conflicts += 1;
            Some(error_response(json!({
                "__type": "com.amazonaws.dynamodb.v20120810#TransactionConflictException",
                "message": "Transaction is ongoing for the item",
            })))
        }
        _ => None,
    }
}

fn error_response(body: Value) -> Response {
    Response::builder()
        .status(StatusCode::BAD_REQUEST)
        .header("content-type", "application/x-amz-json-1.0")
        .body(Body::from(body.to_string()))
        .unwrap()
}

async fn forward(
    http: &reqwest::Client,
    upstream: &str,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let mut request = http.request(method, format!("{upstream}{path}"));
    for (name, value) in &headers {
        if name != "host" && name != "content-length" {
            request = request.header(name, value);
        }
    }
    let answer = match request.body(body).send().await {
        Ok(answer) => answer,
        Err(error) => {
            return Response::builder()
                .status(StatusCode::BAD_GATEWAY)
                .body(Body::from(error.to_string()))
                .unwrap()
        }
    };
    let mut response = Response::builder().status(answer.status().as_u16());
    for (name, value) in answer.headers() {
        if name != "content-length" && name != "transfer-encoding" {
            response = response.header(name, value);
        }
    }
    let bytes = answer.bytes().await.unwrap_or_default();
    response.body(Body::from(bytes)).unwrap()
}
