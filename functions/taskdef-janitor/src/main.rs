//! Lambda entry point of taskdef-janitor.
#![recursion_limit = "256"]

use taskdef_janitor::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("taskdef-janitor");
    let clients = shared::aws::DeferredClients::new(|_, config| Ok(Clients::new(config)));
    shared::runtime::run_with(&clients, handler).await
}
