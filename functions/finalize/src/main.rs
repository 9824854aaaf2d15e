//! Lambda that settles runs: on the finalize queue (the state machine's
//! last state) and on EventBridge execution status changes (timed out,
//! stopped, failed); on the reconciliation schedule it also releases stale
//! hot state and starts accepted runs whose execution never started; at
//! deploy time `{"action": "migrate"}` applies the ledger's migrations.

use agentrun::cloud::{handle_finalize_event, CloudPlatform, CloudSettings};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::Value;

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let platform = CloudPlatform::connect(CloudSettings::from_env().await?).await?;
    let orchestrator = platform.orchestrator()?;
    let (engine, orchestrator) = (&platform.engine, orchestrator.as_ref());
    run(service_fn(move |event: LambdaEvent<Value>| async move {
        handle_finalize_event(engine, orchestrator, event.payload)
            .await
            .map_err(Error::from)
    }))
    .await
}
