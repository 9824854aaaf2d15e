//! AWS adapters: Step Functions as the orchestrator, and the workers that
//! answer its SQS tasks. AWS SDK types stay inside this module.

mod event_feed;
mod hot_store;
mod platform;
mod sfn;
mod worker;

pub use platform::{
    handle_finalize_event, handle_step_batch, CloudError, CloudPlatform, CloudSettings,
    FinalizeError,
};

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
