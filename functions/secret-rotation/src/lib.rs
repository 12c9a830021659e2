//! secret-rotation: Secrets Manager rotation of the wiki's MySQL/MariaDB credentials with no
//! downtime, then a redeploy of the ECS services that read them.
//!
//! - [`event`]: the rotation event; [`settings`]: the environment;
//! - [`secret`]: the database secret JSON (values never printed); [`password`]: new passwords;
//! - [`failure`]: every failure cause, with its `errorType`, next step and metric;
//! - [`plan`]: the pure rules (contract checks, user names, the SQL that copies an account);
//! - [`sql`]: literals, statements that hide their secret, `SHOW GRANTS` rows;
//! - [`in_use`]: whether running ECS tasks still use the user setSecret would change;
//! - [`db`], [`secrets`]: the adapters; [`steps`]: the four steps;
//! - [`tls_probe`]: which CA an untrusted database certificate needs (for the message).

pub mod db;
pub mod event;
pub mod failure;
pub mod in_use;
pub mod password;
pub mod plan;
pub mod secret;
pub mod secrets;
pub mod settings;
pub mod sql;
pub mod steps;
pub mod tls_probe;

use lambda_runtime::LambdaEvent;
use serde_json::Value;

/// The AWS clients, built once per process.
pub struct Clients {
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    /// Used by `finishSecret` (the redeploy) and the alternating `setSecret` (tasks still using
    /// the user it changes): built on first use.
    pub ecs: shared::aws::LazyClient<aws_sdk_ecs::Client>,
}

impl Clients {
    /// Clients from the process's SDK configuration.
    pub fn new(config: &aws_config::SdkConfig) -> Self {
        Clients {
            secretsmanager: aws_sdk_secretsmanager::Client::new(config),
            ecs: shared::aws::LazyClient::new(config, aws_sdk_ecs::Client::new),
        }
    }
}

/// Handles one rotation event; a failure also counts `RotationFailed` with its cause (the
/// `errorType`) as the metric's `Cause` dimension.
pub async fn handler(clients: &Clients, event: LambdaEvent<Value>) -> Result<Value, shared::Error> {
    let result = rotate(clients, event).await;
    if let Err(e) = &result {
        metrics::counter!("RotationFailed", "Cause" => e.error_type()).increment(1);
    }
    result
}

async fn rotate(clients: &Clients, event: LambdaEvent<Value>) -> Result<Value, shared::Error> {
    let event = event::RotationEvent::parse(event.payload)?;
    let settings = settings::Settings::from_env(&shared::Env::from_process())?;
    tracing::info!(
        step = event.step.name(),
        secret_id = %event.secret_id,
        token = %event.token,
        dry_run = event.dry_run,
        "rotation step"
    );
    steps::run(clients, &settings, &event).await
}
