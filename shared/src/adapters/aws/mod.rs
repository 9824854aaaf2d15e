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

/// The AWS clients' shared settings, and the adapters built on them; SDK
/// types stay behind it.
#[derive(Clone)]
pub struct Aws(aws_config::SdkConfig);

impl Aws {
    /// Settings from the environment; `endpoint` points every client at an emulator.
    pub async fn connect(endpoint: Option<&str>) -> Self {
        Self(sdk_config(endpoint).await)
    }

    pub fn hot_store(&self, table: &str) -> DynamoHotStore {
        DynamoHotStore::new(&self.0, table)
    }

    pub fn event_feed(&self, table: &str, ledger: crate::ledger::Ledger) -> DynamoEventFeed {
        DynamoEventFeed::new(&self.0, table, ledger)
    }

    pub fn orchestrator(&self, state_machine_arn: &str) -> StepFunctionsOrchestrator {
        StepFunctionsOrchestrator::new(&self.0, state_machine_arn)
    }

    pub fn step_worker(
        &self,
        engine: crate::engine::Engine,
        policy: crate::policy::StepPolicy,
    ) -> StepWorker {
        StepWorker::new(engine, aws_sdk_sfn::Client::new(&self.0), policy)
    }

    /// The string value of a Secrets Manager secret; the error says why not.
    pub async fn secret_string(&self, arn: &str) -> Result<String, String> {
        let secrets = aws_sdk_secretsmanager::Client::new(&self.0);
        secrets
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?
            .secret_string
            .ok_or_else(|| "the secret has no string value".to_owned())
    }
}

/// Shared SDK settings from the environment; `endpoint` points every client
/// at an emulator (`AWS_ENDPOINT_URL` does the same without code).
pub async fn sdk_config(endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(url) = endpoint {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}
