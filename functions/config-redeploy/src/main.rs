//! Lambda entry point of config-redeploy.

use config_redeploy::Clients;

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("config-redeploy");
    let env = shared::Env::from_process();
    let config = shared::aws::sdk_config(&env)
        .await
        .map_err(shared::runtime::init_error)?;
    let clients = Clients {
        ecs: aws_sdk_ecs::Client::new(&config),
        s3: shared::aws::s3_client(&config, &env).map_err(shared::runtime::init_error)?,
    };
    shared::runtime::run(|event| config_redeploy::handler(&clients, event)).await
}
