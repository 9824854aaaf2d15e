//! Lambda behind API Gateway (HTTP API): the shared router, with Step
//! Functions as the orchestrator.

use agentrun::cloud::{CloudPlatform, CloudSettings};
use lambda_http::{run, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let platform = CloudPlatform::connect(CloudSettings::from_env().await?).await?;
    run(platform.router()?).await
}
