//! Lambda with response streaming (function URL or API Gateway): Server-Sent
//! Events of a run, read from the DynamoDB events table, with the same
//! frames and `Last-Event-ID` replay as the embedded server.

use agentrun::cloud::{CloudPlatform, CloudSettings};
use lambda_http::{run_with_streaming_response, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::tracing::init_default_subscriber();
    let platform = CloudPlatform::connect(CloudSettings::from_env().await?).await?;
    run_with_streaming_response(platform.relay_router()).await
}
