//! Lambda on the step queue: each SQS message is one agent step answered to
//! Step Functions; failed messages come back as partial batch failures.

use agentrun::cloud::{handle_step_batch, CloudPlatform, CloudSettings};
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::tracing::init_default_subscriber();
    let platform = CloudPlatform::connect(CloudSettings::from_env().await?).await?;
    let worker = platform.step_worker();
    let worker = &worker;
    run(service_fn(move |event: LambdaEvent<_>| async move {
        Ok::<_, Error>(handle_step_batch(worker, event.payload).await)
    }))
    .await
}
