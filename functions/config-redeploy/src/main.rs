//! Lambda entry point of config-redeploy.
#![recursion_limit = "256"]

use config_redeploy::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("config-redeploy");
    let clients = shared::aws::DeferredClients::new(|env, config| {
        Ok(Clients {
            ecs: aws_sdk_ecs::Client::new(config),
            s3: shared::aws::s3_client(config, env)?,
        })
    });
    shared::runtime::run_with(&clients, handler).await
}
