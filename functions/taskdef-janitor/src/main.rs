//! Lambda entry point of taskdef-janitor.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("taskdef-janitor");
    let env = shared::Env::from_process();
    let config = shared::aws::sdk_config(&env)
        .await
        .map_err(shared::runtime::init_error)?;
    let clients = taskdef_janitor::Clients::new(&config);
    shared::runtime::run(|event| taskdef_janitor::handler(&clients, event)).await
}
