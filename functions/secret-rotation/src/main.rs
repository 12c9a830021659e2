//! Lambda entry point of secret-rotation.

use secret_rotation::{Clients, handler};

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("secret-rotation");
    let env = shared::Env::from_process();
    let config = shared::aws::sdk_config(&env)
        .await
        .map_err(shared::runtime::init_error)?;
    let clients = Clients::new(&config);
    shared::runtime::run(|event| handler(&clients, event)).await
}
