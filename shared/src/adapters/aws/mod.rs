//! AWS adapters: Step Functions as the orchestrator, the workers that
//! answer its SQS tasks, the DynamoDB hot store and event feed. AWS SDK
//! types stay inside this module (and the wiring in `cloud.rs`).

mod event_feed;
mod hot_store;
mod sfn;
mod worker;

pub use event_feed::DynamoEventFeed;
pub use hot_store::DynamoHotStore;
pub use sfn::StepFunctionsOrchestrator;
pub use worker::{finalize_message, finalize_status_change, StepWorker, WorkerError};

/// Shared SDK settings from the environment; `endpoint` points every client
/// at an emulator (`AWS_ENDPOINT_URL` does the same without code).
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
