//! secret-rotation: Secrets Manager rotation of the wiki's MySQL/MariaDB credentials with no
//! downtime, then a redeploy of the ECS services that read them.
//!
//! - [`event`]: the rotation event; [`settings`]: the environment;
//! - [`secret`]: the database secret JSON (values never printed);
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

/// Seeds the TLS library's random generator on a thread of its own, from process start.
///
/// aws-lc seeds its generator once per process, on the first draw, from CPU jitter entropy: tens
/// of milliseconds of CPU (59 ms on the bench, half the cold setSecret), which the first TLS
/// handshake — the SDK's first HTTPS request, or the first database login — would otherwise wait
/// for. Seeded here, it overlaps the init phase and the first invocation's waits on the network.
/// A failure is left to the handshake that needs the generator to report.
pub fn seed_random_in_background() {
    let _ = std::thread::Builder::new()
        .name("seed-random".into())
        .spawn(|| {
            let _ = rustls::crypto::aws_lc_rs::default_provider()
                .secure_random
                .fill(&mut [0u8; 1]);
        });
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
