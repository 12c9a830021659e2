//! Lambda entry point of efs-backup.
#![recursion_limit = "256"]

use efs_backup::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("efs-backup");
    let clients = shared::aws::DeferredClients::new(|env, config| {
        Ok(Clients {
            s3: shared::aws::s3_client(config, env)?,
            rds: shared::aws::LazyClient::new(config, aws_sdk_rds::Client::new),
        })
    });
    shared::runtime::run_with(&clients, handler).await
}
