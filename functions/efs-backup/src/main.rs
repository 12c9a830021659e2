//! Lambda entry point of efs-backup.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    shared::logging::init();
    shared::metrics::init("efs-backup");
    let _config = shared::aws::sdk_config().await;
    shared::runtime::run(|_event| async {
        Ok::<_, shared::Error>(serde_json::json!({"status": "not implemented"}))
    })
    .await
}
