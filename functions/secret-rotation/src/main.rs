//! Lambda entry point of secret-rotation.
#![recursion_limit = "256"]

use secret_rotation::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("secret-rotation");
    let clients = shared::aws::DeferredClients::new(|_, config| Ok(Clients::new(config)));
    shared::runtime::run_with(&clients, handler).await
}
