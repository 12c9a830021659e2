//! Lambda entry point of efs-backup.
#![recursion_limit = "256"]

use efs_backup::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("efs-backup");
    let env = shared::Env::from_process();
    let config = shared::aws::sdk_config(&env)
        .await
        .map_err(shared::runtime::init_error)?;
    let s3 = shared::aws::s3_client(&config, &env).map_err(shared::runtime::init_error)?;
    let clients = Clients { s3 };
    shared::runtime::run(|event| handler(&clients, event)).await
}
