//! config-redeploy: an S3 configuration change rolls out to ECS, once; a bad one rolls itself back.
//!
//! - [`event`]: the triggers (S3 notifications, EventBridge S3 and ECS events), parsed;
//! - [`settings`]: bucket, routes (longest prefix → ECS service), bounds, dry run;
//! - [`ledger`]: what each deployment this function started rolled out (`.wikiops/…`);
//! - [`lease`]: one invocation at a time deploys a service (S3 conditional writes);
//! - [`plan`] and [`rollback`]: the pure decisions;
//! - [`observe`] and [`apply`]: the thin adapter around S3 (ECS through `shared::ecs`);
//! - [`summary`]: the JSON result and the metrics.

pub mod apply;
pub mod event;
pub mod lease;
pub mod ledger;
pub mod observe;
pub mod plan;
pub mod rollback;
pub mod settings;
pub mod summary;

mod run;

use lambda_runtime::LambdaEvent;
use serde_json::Value;
use shared::{Env, Error};

pub use run::process;
pub use settings::Settings;
pub use summary::Summary;

/// The SDK clients, built once per process.
pub struct Clients {
    pub ecs: aws_sdk_ecs::Client,
    pub s3: aws_sdk_s3::Client,
}

/// Handles one invocation: settings, event, then per service observe → plan → apply.
///
/// Returns the [`Summary`]; when a service failed, an error naming it (the other services
/// are still processed, and the summary is logged).
pub async fn handler(clients: &Clients, event: LambdaEvent<Value>) -> Result<Summary, Error> {
    let settings = Settings::from_env(&Env::from_process())?;
    let trigger = event::parse(&event.payload)?;
    run::process(clients, &settings, trigger).await
}
